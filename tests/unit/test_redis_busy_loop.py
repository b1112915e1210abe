"""A busy event loop is not an unavailable store (issue 18).

Right after a restart, 200 concurrent streams got 21 × 503 ``limits_unavailable``. Reproduced
here in the plugin server's setting (gevent, monkey-patched, the limiter's own client from
``aigw.redis_conn.connect``): the store kept answering; what failed was redis-py's default
pool, which refuses the 101st command in flight with ``MaxConnectionsError``, and on a busy
loop every connection stays in flight until its greenlet gets to read the reply.

A pending reply that the loop reads late is not a timeout either: with the loop blocked for
0.6 s (more than the 0.5 s timeout) while the replies are pending, every call still succeeds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
import redis

REDIS_URL = "redis://127.0.0.1:6379/0"

_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import json, sys
import gevent
from gevent.monkey import get_original
from aigw.limits import BackendUnavailable, RedisLimiter, Rule
from aigw.redis_conn import RedisSettings

block = get_original("time", "sleep")   # blocks the whole loop, as CPU-bound work does
prefix, n, blocks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lim = RedisLimiter(prefix=prefix, settings=RedisSettings.from_config({"redis_url": sys.argv[4]}, 500))
rule = Rule("tok:c:alice:minute", 10**9, 60)
out = {"ok": 0, "unavailable": []}

def request(i):
    try:
        lim.reserve([rule], 1, f"r{i}")
        out["ok"] += 1
    except BackendUnavailable as exc:
        out["unavailable"].append(str(exc))

def busy():
    for _ in range(blocks):
        block(0.6)        # longer than the store's 0.5 s timeout, replies pending meanwhile
        gevent.sleep(0)

# the requests send first (spawn order), then the loop is blocked while their replies wait
gevent.joinall([gevent.spawn(request, i) for i in range(n)] + [gevent.spawn(busy)])
out["used"] = lim.used(rule)
print(json.dumps(out))
"""


def _run(n: int, blocks: int) -> dict:
    prefix = f"aigw-test-busy-{uuid.uuid4().hex[:8]}:"
    try:
        p = subprocess.run([sys.executable, "-c", _SCRIPT, prefix, str(n), str(blocks), REDIS_URL],
                           check=False, capture_output=True, text=True, timeout=120,
                           env=os.environ.copy())
        assert p.returncode == 0, p.stderr[-2000:]
        return json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        c = redis.Redis.from_url(REDIS_URL)
        keys = list(c.scan_iter(match=f"{prefix}*"))
        if keys:
            c.delete(*keys)


@pytest.mark.redis
def test_a_reply_pending_while_the_loop_is_blocked_is_no_timeout():
    out = _run(n=20, blocks=1)
    assert out["unavailable"] == [] and out["ok"] == 20 and out["used"] == 20


@pytest.mark.redis
def test_200_concurrent_reservations_on_a_blocked_loop_are_never_refused():
    out = _run(n=200, blocks=3)
    assert out["unavailable"] == [], out["unavailable"][:3]
    assert out["ok"] == 200 and out["used"] == 200
