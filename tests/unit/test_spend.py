"""aigw-spend against the real Redis, on counters written by the real limiter."""
from __future__ import annotations

import socket
import uuid

import orjson
import pytest
import redis

from aigw.gateway.limits import WINDOWS
from aigw.limits import RedisLimiter, Rule
from aigw.spend import PERIODS, main, read_spend

REDIS_URL = "redis://127.0.0.1:6379/0"


pytestmark = pytest.mark.redis  # tests/conftest.py: fails, never skips, without Redis


@pytest.fixture
def client():
    return redis.Redis.from_url(REDIS_URL)


@pytest.fixture
def prefix(client):
    p = f"aigw-test-spend:{uuid.uuid4().hex[:8]}:"
    yield p
    keys = list(client.scan_iter(match=p + "*", count=1000))
    if keys:
        client.delete(*keys)


COUNTER = "i.plugin-1"  # the counter part ai-cost puts in its keys (aigw/gateway/limits.py counter_id)


def rule(key: str, period: str = "day", limit: int = 10**12, counter: str = COUNTER) -> Rule:
    return Rule(f"usd:{counter}:{key}:{period}", limit, WINDOWS[period])


def spend(limiter: RedisLimiter, key: str, period: str, reserved: int, actual: int | None,
          counter: str = COUNTER) -> None:
    res, _ = limiter.reserve([rule(key, period, counter=counter)], reserved, uuid.uuid4().hex)
    if actual is None:
        limiter.release(res)
    else:
        limiter.reconcile(res, actual)


def test_periods_match_the_budget_windows():
    assert {p: WINDOWS[p] for p in ("day", "month")} == PERIODS


def test_reads_reconciled_spend_per_counter(client, prefix):
    lim = RedisLimiter(REDIS_URL, prefix=prefix)
    spend(lim, "consumer:alice", "day", 5000, 1200)
    spend(lim, "consumer:alice", "day", 5000, 300)
    spend(lim, "consumer:alice", "day", 5000, None)   # failed call: released, not spend
    spend(lim, "consumer:alice", "month", 5000, 1500)
    spend(lim, "consumer:bob:with:colons", "day", 10, 7)
    spend(lim, "group:research", "month", 100, 40)
    spend(lim, "global:*", "day", 10, 10)
    spend(lim, "consumer:alice", "day", 50, 20, counter="n.shared")  # another counter, same consumer
    rows = {(s.counter, s.scope, s.subject, s.period): (s.micro_usd, s.requests)
            for s in read_spend(client, prefix)}
    assert rows == {
        (COUNTER, "consumer", "alice", "day"): (1500, 2),
        (COUNTER, "consumer", "alice", "month"): (1500, 1),
        (COUNTER, "consumer", "bob:with:colons", "day"): (7, 1),
        (COUNTER, "group", "research", "month"): (40, 1),
        (COUNTER, "global", "*", "day"): (10, 1),
        ("n.shared", "consumer", "alice", "day"): (20, 1),
    }
    assert [s.usd for s in read_spend(client, prefix, consumer="alice")] == [0.0015, 0.0015, 0.00002]


def test_entries_outside_the_window_are_not_counted_although_total_still_has_them(client, prefix):
    lim = RedisLimiter(REDIS_URL, prefix=prefix)
    spend(lim, "consumer:carol", "day", 900, 900)
    base = f"{prefix}usd:{COUNTER}:consumer:carol:day"
    sec, _ = client.time()
    old_ms = (int(sec) - 86400 - 5) * 1000  # reserved a day and 5 s ago: out of the window
    client.zadd(base + ":log", {"old-request": old_ms})
    client.hset(base + ":amt", "old-request", 5_000_000)
    client.incrby(base + ":total", 5_000_000)  # the running total is stale until the next purge
    assert int(client.get(base + ":total")) == 5_000_900
    [row] = read_spend(client, prefix)
    assert (row.micro_usd, row.requests) == (900, 1)
    # read-only: nothing was purged
    assert client.zscore(base + ":log", "old-request") is not None
    # and it agrees with the limiter's own purge-and-count
    assert lim.used(rule("consumer:carol")) == 900


def test_prefix_is_matched_literally(client, prefix):
    glob_prefix = prefix + "[x]*:"
    other = prefix + "xy:"
    spend(RedisLimiter(REDIS_URL, prefix=glob_prefix), "consumer:a", "day", 5, 5)
    spend(RedisLimiter(REDIS_URL, prefix=other), "consumer:b", "day", 6, 6)
    spend(RedisLimiter(REDIS_URL, prefix=prefix), "tok:consumer:c", "day", 6, 6)  # not a usd counter
    assert [(s.subject, s.micro_usd) for s in read_spend(client, glob_prefix)] == [("a", 5)]
    assert [(s.subject, s.micro_usd) for s in read_spend(client, other)] == [("b", 6)]


def test_cli_text_and_json(client, prefix, capsys):
    lim = RedisLimiter(REDIS_URL, prefix=prefix)
    spend(lim, "consumer:dave", "day", 100_000, 12_345)
    spend(lim, "consumer:erin", "month", 100_000, 2_000_000)
    assert main(["--redis-url", REDIS_URL, "--prefix", prefix]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["counter", "scope", "subject", "period", "spend_usd", "requests"]
    assert out[1].split() == [COUNTER, "consumer", "dave", "day", "0.012345", "1"]
    assert out[2].split() == [COUNTER, "consumer", "erin", "month", "2.000000", "1"]
    assert main(["--redis-url", REDIS_URL, "--prefix", prefix, "--consumer", "erin", "--json"]) == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data == {"prefix": prefix, "spend": [{"counter": COUNTER, "scope": "consumer", "subject": "erin", "period": "month",
                                                 "micro_usd": 2_000_000, "requests": 1, "usd": 2.0}]}
    assert main(["--redis-url", REDIS_URL, "--prefix", prefix, "--consumer", "nobody"]) == 0
    assert "no spend recorded" in capsys.readouterr().out


def test_cli_unreachable_redis(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://:sekret-pass@127.0.0.1:{port}/0"
    assert main(["--redis-url", url]) == 2
    err = capsys.readouterr().err
    assert "cannot read Redis" in err and "sekret-pass" not in err
