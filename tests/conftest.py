"""Shared by every test directory.

Tests of shared state run against the real Redis (``make test`` starts it with
``.ci/ensure-redis``). A test marked ``redis`` fails when that Redis is not
reachable: it is never skipped, so a missing Redis cannot hide a feature.
"""
from __future__ import annotations

import functools
import os

import pytest
import redis

REDIS_URL = os.environ.get("AIGW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "redis: needs the Redis at AIGW_TEST_REDIS_URL (default 127.0.0.1:6379)")


@functools.lru_cache(maxsize=1)
def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def pytest_runtest_setup(item) -> None:
    if item.get_closest_marker("redis") is not None and not _redis_up():
        pytest.fail(f"this test needs Redis at {REDIS_URL}; run `make test` or .ci/ensure-redis")
