"""Issue 17 item 4 end to end: ai-tokens, ai-cost and ai-cache on a real Redis Sentinel and
a real Redis Cluster (started by the test from the local redis-server), and a Sentinel
failover while requests flow through the gateway."""
from __future__ import annotations

import threading
import time
import uuid

import redis
import requests

from aigw.limits import RedisLimiter, Rule
from aigw.redis_conn import RedisSettings
from tests.redis_topology import ClusterSet, SentinelSet

from .conftest import plugin_config, plugin_id, remove_plugin

CONSUMER = "demo-app"


def _limiter(record: dict, prefix: str) -> RedisLimiter:
    return RedisLimiter(prefix=prefix, settings=RedisSettings.from_config({"redis": record}))


def _post(gw, session, body):
    return session.post(gw.url + "/v1/chat/completions", headers=gw.headers(), json=body,
                        timeout=30)


def test_tokens_limit_survives_a_sentinel_failover_during_traffic(make_gateway):
    limit = 2500
    body = {"model": "gpt-4o-mini", "max_tokens": 20,
            "messages": [{"role": "user", "content": "REPLY:ok fine"}]}
    prefix = f"aigw-test:{uuid.uuid4().hex[:8]}:"
    with SentinelSet() as s:
        def edit(doc):
            cfg = plugin_config(doc, "ai-tokens")
            cfg.update({"policy": "redis", "redis": s.config(), "redis_timeout_ms": 300,
                        "limits": [{"scope": "consumer", "tokens": limit, "window": "minute"}]})
            remove_plugin(doc, "ai-cache")
            plugin_config(doc, "ai-cost")["budgets"] = []
            ids["tok"] = plugin_id(doc, "ai-tokens")  # counters are named after the instance
        ids: dict[str, str] = {}
        gw = make_gateway(edit, env={"AIGW_REDIS_PREFIX": prefix})
        rule = Rule(f"tok:i.{ids['tok']}:consumer:{CONSUMER}:minute", limit, 60)
        limiter = _limiter(s.config(), prefix)

        results: list[tuple[float, int, int]] = []  # (time, status, total tokens)
        lock = threading.Lock()
        stop = threading.Event()
        pause = [0.05]

        def client():
            with requests.Session() as session:
                while not stop.is_set():
                    r = _post(gw, session, body)
                    used = r.json().get("usage", {}).get("total_tokens", 0) \
                        if r.status_code == 200 else 0
                    with lock:
                        results.append((time.monotonic(), r.status_code, used))
                    time.sleep(pause[0])

        threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 30
            while sum(1 for _, st, _ in results if st == 200) < 20:
                assert time.monotonic() < deadline, results[-5:]
                time.sleep(0.05)
            old = s.master_port()
            assert s.kill_master() != old
            failed_over = time.monotonic()
            pause[0] = 0.0  # drive it to the limit
            while not any(st == 429 for _, st, _ in results):
                assert time.monotonic() < deadline + 30, "the limit was never reached"
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)

        statuses = {st for _, st, _ in results}
        assert statuses <= {200, 429, 503}, statuses  # fail closed (503), never a 500
        assert any(st == 200 and t > failed_over for t, st, _ in results), \
            "requests did not flow again after the failover"
        unavailable = [t for t, st, _ in results if st == 503]
        if unavailable:
            assert max(unavailable) - min(unavailable) < 15
        admitted = sum(n for _, st, n in results if st == 200)
        # reconcile runs after the answer: let the last ones settle
        time.sleep(1.0)
        used = limiter.used(rule)
        # every admitted answer is counted (no lost write), and nothing beyond the limit
        assert admitted <= used <= limit, (admitted, used, limit)


def test_budget_and_cache_on_a_cluster(make_gateway, mock):
    prefix = f"aigw-test:{uuid.uuid4().hex[:8]}:"
    with ClusterSet() as c:
        def edit(doc):
            for name in ("ai-tokens", "ai-cost", "ai-cache"):
                cfg = plugin_config(doc, name)
                cfg["policy"] = "redis"
                cfg["redis"] = c.config()
        gw = make_gateway(edit, env={"AIGW_REDIS_PREFIX": prefix})
        body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [
            {"role": "user", "content": f"cluster cache {uuid.uuid4().hex}"}]}
        with requests.Session() as session:
            first = _post(gw, session, body)
            assert first.status_code == 200, first.text
            assert first.headers.get("x-cache-status") == "Miss"
            deadline = time.monotonic() + 5
            while True:  # the answer is stored after it was sent
                second = _post(gw, session, body)
                if second.headers.get("x-cache-status") == "Hit" or \
                        time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert second.status_code == 200 and second.headers["x-cache-status"] == "Hit"
            assert second.json()["choices"] == first.json()["choices"]
        # the token and spend counters are in the cluster, under one hash-tagged prefix
        keys = set()
        for port in c.ports:
            r = redis.Redis(port=port)
            if r.info("replication")["role"] == "master":
                keys |= {k.decode() for k in r.keys("{" + prefix + "}*")}
        assert any(k.startswith("{" + prefix + "}tok:i.") and ":consumer:" in k for k in keys), keys
        assert any(k.startswith("{" + prefix + "}usd:i.") and ":consumer:" in k for k in keys), keys
