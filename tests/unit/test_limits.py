"""Reserve/reconcile/release limits: one test set for the memory and the Redis backend."""
from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest
import redis

from aigw.limits import (
    BackendUnavailable,
    LimitExceeded,
    MemoryLimiter,
    RedisLimiter,
    Rule,
    make_limiter,
)

REDIS_URL = "redis://127.0.0.1:6379/0"


needs_redis = pytest.mark.redis  # tests/conftest.py: fails, never skips, without Redis


def _cleanup(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


class Nodes:
    """Two limiter instances sharing one store (two gateway nodes)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.prefix = f"aigw-test-{uuid.uuid4().hex}:"
        if kind == "memory":
            a = MemoryLimiter()
            self.a, self.b = a, a
            self.client = None
        else:
            self.a = RedisLimiter(REDIS_URL, prefix=self.prefix)
            self.b = RedisLimiter(REDIS_URL, prefix=self.prefix)
            self.client = redis.Redis.from_url(REDIS_URL)


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
def nodes(request):
    n = Nodes(request.param)
    yield n
    if n.client is not None:
        _cleanup(n.client, n.prefix)


def rid() -> str:
    return uuid.uuid4().hex


def test_exact_admission_under_concurrency(nodes):
    rule = Rule("tokens:consumer:alice:minute", limit=100, window=60)
    admitted: list[int] = []
    denied: list[int] = []
    barrier = threading.Barrier(50)

    def worker(i: int):
        limiter = nodes.a if i % 2 else nodes.b
        barrier.wait()
        try:
            limiter.reserve([rule], 7, f"req-{i}")
            admitted.append(i)
        except LimitExceeded as exc:
            assert exc.decision.rule == rule and exc.decision.remaining == 2
            denied.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 100 // 7 and len(denied) == 50 - 100 // 7
    assert nodes.a.used(rule) == nodes.b.used(rule) == 7 * (100 // 7)


def test_allowed_decision_reports_tightest_rule(nodes):
    minute = Rule("t:a:minute", 1000, 60)
    hour = Rule("t:a:hour", 300, 3600)
    _, d = nodes.a.reserve([minute, hour], 100, rid())
    assert d.allowed and d.rule == hour and (d.limit, d.remaining) == (300, 200)
    assert 0 < d.reset_after <= 3600 and d.retry_after == 0


def test_reconcile_lowers_and_raises_usage(nodes):
    rule = Rule("t:rec", 100, 60)
    res, d = nodes.a.reserve([rule], 60, rid())
    assert d.remaining == 40
    with pytest.raises(LimitExceeded):
        nodes.b.reserve([rule], 50, rid())
    nodes.b.reconcile(res, 20)
    assert nodes.a.used(rule) == 20
    _, d = nodes.b.reserve([rule], 50, rid())  # fits now: 20 + 50
    assert d.remaining == 30
    nodes.a.reconcile(res, 90)  # actual above the estimate: usage may pass the limit
    assert nodes.a.used(rule) == 140
    with pytest.raises(LimitExceeded) as exc:
        nodes.a.reserve([rule], 0, rid())
    assert exc.value.decision.remaining == 0


def test_release_frees_and_is_idempotent(nodes):
    rule = Rule("t:rel", 10, 60)
    res, _ = nodes.a.reserve([rule], 10, rid())
    with pytest.raises(LimitExceeded):
        nodes.a.reserve([rule], 1, rid())
    nodes.b.release(res)
    nodes.b.release(res)
    assert nodes.a.used(rule) == 0
    _other, _ = nodes.a.reserve([rule], 4, rid())
    nodes.a.release(res)  # releasing a stale reservation must not touch others
    assert nodes.a.used(rule) == 4
    nodes.a.reconcile(res, 5)  # reconciling a released reservation does nothing
    assert nodes.a.used(rule) == 4


def test_retried_reserve_counts_once(nodes):
    rule = Rule("t:retry", 100, 60)
    same = rid()
    nodes.a.reserve([rule], 30, same)
    nodes.b.reserve([rule], 30, same)
    assert nodes.a.used(rule) == 30


def test_any_rule_may_deny_and_nothing_is_recorded(nodes):
    consumer = Rule("t:consumer:bob", 100, 60)
    model = Rule("t:model:gpt-4o", 25, 60)
    nodes.a.reserve([consumer, model], 20, rid())
    with pytest.raises(LimitExceeded) as exc:
        nodes.b.reserve([consumer, model], 10, rid())
    d = exc.value.decision
    assert not d.allowed and d.rule == model and (d.limit, d.remaining) == (25, 5)
    assert nodes.a.used(consumer) == 20 and nodes.a.used(model) == 20

    # now the other rule denies
    other_model = Rule("t:model:o3", 1000, 60)
    nodes.a.reserve([consumer, other_model], 75, rid())
    with pytest.raises(LimitExceeded) as exc:
        nodes.b.reserve([consumer, other_model], 10, rid())
    assert exc.value.decision.rule == consumer and exc.value.decision.remaining == 5
    assert nodes.a.used(other_model) == 75


def test_request_larger_than_limit_waits_a_window(nodes):
    rule = Rule("t:huge", 50, 30)
    with pytest.raises(LimitExceeded) as exc:
        nodes.a.reserve([rule], 51, rid())
    assert exc.value.decision.retry_after == 30
    assert nodes.a.used(rule) == 0


def test_retry_after_is_within_window(nodes):
    rule = Rule("t:retry-after", 10, 20)
    nodes.a.reserve([rule], 10, rid())
    with pytest.raises(LimitExceeded) as exc:
        nodes.b.reserve([rule], 1, rid())
    d = exc.value.decision
    assert 0 < d.retry_after <= 20 and 0 < d.reset_after <= 20


def test_window_expiry(nodes):
    rule = Rule("t:expiry", 10, 1)
    res, _ = nodes.a.reserve([rule], 10, rid())
    with pytest.raises(LimitExceeded):
        nodes.b.reserve([rule], 1, rid())
    time.sleep(1.1)
    assert nodes.a.used(rule) == 0
    nodes.a.reconcile(res, 7)  # after expiry: nothing to reconcile
    assert nodes.a.used(rule) == 0
    _, d = nodes.b.reserve([rule], 10, rid())
    assert d.allowed and d.remaining == 0


def test_sliding_not_fixed_window(nodes):
    rule = Rule("t:slide", 10, 2)
    nodes.a.reserve([rule], 6, rid())
    time.sleep(1.0)
    nodes.a.reserve([rule], 4, rid())
    time.sleep(1.2)  # first entry gone, second still inside the window
    assert nodes.a.used(rule) == 4
    with pytest.raises(LimitExceeded):
        nodes.a.reserve([rule], 7, rid())


def test_invalid_rules(nodes):
    with pytest.raises(ValueError):
        nodes.a.reserve([Rule("dup", 1, 1), Rule("dup", 2, 2)], 1, rid())
    with pytest.raises(ValueError):
        nodes.a.reserve([Rule("neg", 1, 1)], -1, rid())


def test_no_rules_is_allowed(nodes):
    res, d = nodes.a.reserve([], 5, rid())
    assert d.allowed and d.rule is None and res.rules == ()


# --- memory only: deterministic clock ------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_retry_after_is_exact():
    clock = FakeClock()
    lim = MemoryLimiter(clock=clock)
    rule = Rule("m", 100, 60)
    for step in range(3):
        lim.reserve([rule], 30, f"r{step}")
        clock.now += 10
    clock.now -= 5  # 25 s after the first entry
    with pytest.raises(LimitExceeded) as exc:
        lim.reserve([rule], 50, "big")  # needs 40 freed: the two oldest (t=0, t=10)
    d = exc.value.decision
    assert d.retry_after == pytest.approx(45) and d.reset_after == pytest.approx(55)
    assert d.remaining == 10
    clock.now += 45
    _, d = lim.reserve([rule], 50, "big")
    assert d.remaining == 20


def test_memory_idle_keys_are_swept():
    clock = FakeClock()
    lim = MemoryLimiter(clock=clock)
    for i in range(10):
        lim.reserve([Rule(f"k{i}", 5, 1)], 1, rid())
    clock.now += 2
    for _ in range(lim.SWEEP_EVERY):
        lim.reserve([Rule("hot", 10**9, 60)], 1, rid())
    assert set(lim._logs) == {"hot"}


# --- Redis only ----------------------------------------------------------------------------

@needs_redis
def test_redis_keys_expire_and_layout():
    n = Nodes("redis")
    try:
        rule = Rule("t:ttl", 100, 5)
        res, _ = n.a.reserve([rule], 9, "abc")
        base = f"{n.prefix}t:ttl"
        for suffix in ("log", "amt", "total"):
            assert 0 < n.client.pttl(f"{base}:{suffix}") <= 5000
        assert n.client.hget(f"{base}:amt", "abc") == b"9"
        assert n.client.get(f"{base}:total") == b"9"
        assert n.client.zscore(f"{base}:log", "abc") is not None
        n.a.release(res)
        assert n.client.exists(f"{base}:log", f"{base}:amt", f"{base}:total") == 0
    finally:
        _cleanup(n.client, n.prefix)


@needs_redis
def test_redis_reconcile_keeps_timestamp():
    n = Nodes("redis")
    try:
        rule = Rule("t:ts", 100, 60)
        res, _ = n.a.reserve([rule], 10, "keep")
        key = f"{n.prefix}t:ts:log"
        before = n.client.zscore(key, "keep")
        time.sleep(0.05)
        n.b.reconcile(res, 50)
        assert n.client.zscore(key, "keep") == before
        assert n.a.used(rule) == 50
    finally:
        _cleanup(n.client, n.prefix)


@needs_redis
def test_redis_survives_script_flush():
    n = Nodes("redis")
    try:
        rule = Rule("t:flush", 100, 60)
        n.a.reserve([rule], 1, rid())
        n.client.script_flush()
        _, d = n.a.reserve([rule], 1, rid())
        assert d.remaining == 98
    finally:
        _cleanup(n.client, n.prefix)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_backend_unavailable_on_closed_port():
    lim = RedisLimiter(f"redis://127.0.0.1:{_closed_port()}/0", timeout=0.2)
    rule = Rule("t:down", 10, 60)
    with pytest.raises(BackendUnavailable):
        lim.reserve([rule], 1, rid())
    with pytest.raises(BackendUnavailable):
        lim.used(rule)


@needs_redis
def test_accepts_a_client():
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"aigw-test-{uuid.uuid4().hex}:"
    try:
        lim = RedisLimiter(prefix=prefix, client=client)
        lim.reserve([Rule("c", 5, 60)], 2, rid())
        assert client.get(f"{prefix}c:total") == b"2"
    finally:
        _cleanup(client, prefix)


def test_make_limiter_caches_instances():
    assert make_limiter("local") is make_limiter("local")
    assert isinstance(make_limiter("local"), MemoryLimiter)
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    r1 = make_limiter("redis", url)
    assert r1 is make_limiter("redis", url) and isinstance(r1, RedisLimiter)
    assert r1 is not make_limiter("redis", url, prefix="other:")
    with pytest.raises(ValueError):
        make_limiter("cluster")


# --- batches: a request's reservations in one call ------------------------------------

def test_batch_is_all_or_nothing(nodes):
    from aigw.limits import Item
    tokens = Rule(f"tok:c:{rid()}:minute", limit=100, window=60)
    usd = Rule(f"usd:c:{rid()}:day", limit=50, window=60)
    nodes.a.reserve([usd], 40, rid())
    with pytest.raises(LimitExceeded) as exc:
        nodes.b.reserve_many([Item((tokens,), 30, rid()), Item((usd,), 20, rid())])
    assert exc.value.index == 1 and exc.value.decision.rule == usd
    assert exc.value.decision.remaining == 10
    assert nodes.a.used(tokens) == 0  # the first item was not reserved either
    out = nodes.b.reserve_many([Item((tokens,), 30, rid()), Item((usd,), 10, rid())])
    assert [d.remaining for _, d in out] == [70, 0]
    assert nodes.a.used(tokens) == 30 and nodes.a.used(usd) == 50


def test_batch_settles_every_item_at_once(nodes):
    from aigw.limits import Item
    a, b = Rule(f"tok:{rid()}", 100, 60), Rule(f"usd:{rid()}", 100, 60)
    (ra, _), (rb, _) = nodes.a.reserve_many([Item((a,), 60, rid()), Item((b,), 70, rid())])
    nodes.b.settle_many([(ra, 15), (rb, None)])  # reconcile one, release the other
    assert nodes.a.used(a) == 15 and nodes.a.used(b) == 0
    nodes.b.settle_many([(ra, 15), (rb, None)])  # a retried settle changes nothing
    assert nodes.a.used(a) == 15 and nodes.a.used(b) == 0


def test_items_of_one_batch_on_one_counter_add_up(nodes):
    from aigw.limits import Item
    shared = Rule(f"tok:{rid()}", 100, 60)
    with pytest.raises(LimitExceeded) as exc:
        nodes.a.reserve_many([Item((shared,), 60, rid()), Item((shared,), 50, rid())])
    assert exc.value.index == 1 and nodes.a.used(shared) == 0
    nodes.a.reserve_many([Item((shared,), 60, rid()), Item((shared,), 40, rid())])
    assert nodes.a.used(shared) == 100


def test_a_retried_batch_counts_once(nodes):
    from aigw.limits import Item
    r = Rule(f"tok:{rid()}", 100, 60)
    items = [Item((r,), 30, rid()), Item((r,), 20, rid())]
    nodes.a.reserve_many(items)
    nodes.b.reserve_many(items)  # e.g. redis-py retrying after a dropped connection
    assert nodes.a.used(r) == 50


@needs_redis
def test_a_batch_is_one_script_call():
    from aigw.limits import Item
    prefix = f"aigw-test-{uuid.uuid4().hex}:"
    lim = RedisLimiter(REDIS_URL, prefix=prefix)
    calls = []
    script = lim._script
    lim._script = lambda **kw: calls.append(kw) or script(**kw)
    try:
        res = lim.reserve_many([Item((Rule("tok:a", 10, 60), Rule("tok:b", 10, 60)), 1, "x:tok"),
                                Item((Rule("usd:a", 10, 60),), 2, "x:usd")])
        lim.settle_many([(res[0][0], 1), (res[1][0], None)])
        assert len(calls) == 2
        assert len(calls[0]["keys"]) == 9  # 3 keys per rule, both items
    finally:
        _cleanup(redis.Redis.from_url(REDIS_URL), prefix)
