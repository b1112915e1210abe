"""Cache benchmark (local only, bounded loops): the core, then hit vs miss through the gateway.

    .venv/bin/python -m bench.bench_cache [--redis URL] [--no-gateway]
    (or PYTHONPATH=. python bench/bench_cache.py)

The gateway part starts the mock provider (child process) and a Kong stand-in with the
reference kong.yml (ai-cache policy redis), then times misses (a new prompt each time)
against hits (one prompt repeated), non-stream and stream, with the mock answering at
once and with a simulated provider latency. Prints a table and writes
bench/results/cache.json.
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "devtools"))  # aigw_dev

from aigw.cache import (CacheUnavailable, Entry, MemoryStore, Partition, RedisStore,  # noqa: E402
                        assemble_stream, cache_key, replay_stream)

ROOT = Path(__file__).resolve().parent.parent

BODY = {
    "model": "fast", "temperature": 0, "max_tokens": 512,
    "messages": [{"role": "system", "content": "You are helpful. " * 40}]
    + [{"role": "user" if i % 2 else "assistant", "content": "word " * 200} for i in range(8)],
    "tools": [{"type": "function", "function": {"name": f"t{i}", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}}}}} for i in range(5)],
}
ANSWER = {"id": "chatcmpl-b", "object": "chat.completion", "created": 1, "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "lorem ipsum " * 350},
                       "logprobs": None, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 2000, "completion_tokens": 900, "total_tokens": 2900}}


CORE: list[dict[str, Any]] = []


def run(name: str, fn: Callable[[], object], n: int) -> None:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    dt = time.perf_counter() - t0
    print(f"{name:<34} {n / dt:>10.0f} ops/s  {dt / n * 1e6:>8.1f} µs/op")
    CORE.append({"op": name, "ops_per_s": round(n / dt), "us_per_op": round(dt / n * 1e6, 1)})


# ------------------------------------------------------------ through the gateway
def _gateway_config(relay_port: int, slow_ms: int) -> dict[str, Any]:
    import yaml
    doc = yaml.safe_load((ROOT / "kong" / "kong.yml").read_text())
    svc = next(s for s in doc["services"] if s["name"] == "ai")
    svc["url"] = f"http://127.0.0.1:{relay_port}"
    plugins = {p["name"]: p["config"] for p in svc["plugins"]}
    # the mock reads "slow-<ms>" in the provider model id: a first byte after slow_ms
    target = {"provider": "openai", "model": f"gpt-4o-slow-{slow_ms}"}
    plugins["ai-router"]["models"].append({"name": "slow", "targets": [target]})
    plugins["ai-router"].setdefault("prices", {})[f"openai/{target['model']}"] = {"input": 2.5, "output": 10}
    return doc


def _timed(session, url: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[float, str]:
    t0 = time.perf_counter()
    with session.post(url, headers=headers, json=body, stream=bool(body.get("stream"))) as r:
        for _ in r.iter_content(65536):
            pass
        if r.status_code != 200:
            raise RuntimeError(f"gateway answered {r.status_code}")
        status = r.headers.get("X-Cache-Status", "-")
    return time.perf_counter() - t0, status


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def bench_gateway(n_fast: int, n_slow: int, slow_ms: int) -> list[dict[str, Any]]:
    import requests

    from aigw_dev.dev import demo_token, gateway_env
    from aigw_dev.mock.testing import MockProvider
    from aigw_dev.standin.testing import StandIn, free_port

    rows: list[dict[str, Any]] = []
    with MockProvider(process=True) as mock:
        relay_port = free_port()
        env = gateway_env(mock.url)
        env.update({"AIGW_RELAY_PORT": str(relay_port), "AIGW_METRICS_PORT": str(free_port()),
                    "AIGW_REDIS_PREFIX": f"aigw-bench:{uuid.uuid4().hex[:8]}:"})
        with StandIn(_gateway_config(relay_port, slow_ms), env=env, plugins_dir=ROOT / "plugins") as kong:
            url = kong.url + "/v1/chat/completions"
            headers = {"Authorization": f"Bearer {demo_token()}", "Content-Type": "application/json"}
            s = requests.Session()
            run_id = uuid.uuid4().hex[:6]
            for model, label, n in (("gpt-4o-mini", "mock instant", n_fast),
                                    ("slow", f"mock +{slow_ms} ms", n_slow)):
                for stream in (False, True):
                    base: dict[str, Any] = {"model": model, "temperature": 0, "max_tokens": 16,
                                            "stream": stream}
                    if stream:
                        base["stream_options"] = {"include_usage": True}

                    def body(prompt: str) -> dict[str, Any]:
                        b = copy.deepcopy(base)
                        b["messages"] = [{"role": "system", "content": "You are a concise assistant."},
                                         {"role": "user", "content": prompt}]
                        return b

                    tag = f"{run_id}-{model}-{stream}"
                    for i in range(5):  # warm connections, instances, encoders
                        _timed(s, url, headers, body(f"warm {tag} {i}"))
                    miss, statuses = [], set()
                    for i in range(n):
                        dt, st = _timed(s, url, headers, body(f"question {i} of {tag}: what is a gateway?"))
                        miss.append(dt)
                        statuses.add(st)
                    if statuses != {"Miss"}:
                        raise RuntimeError(f"expected misses, got {statuses}")
                    hot = body(f"the one repeated question of {tag}")
                    _timed(s, url, headers, hot)
                    time.sleep(0.2)  # the relay stores after the answer went out
                    hit, statuses = [], set()
                    for _ in range(n):
                        dt, st = _timed(s, url, headers, hot)
                        hit.append(dt)
                        statuses.add(st)
                    if statuses != {"Hit"}:
                        raise RuntimeError(f"expected hits, got {statuses}")
                    row = {"upstream": label, "form": "stream" if stream else "non-stream", "n": n,
                           "miss_p50_ms": round(statistics.median(miss) * 1e3, 2),
                           "miss_p95_ms": round(_pct(miss, 0.95) * 1e3, 2),
                           "hit_p50_ms": round(statistics.median(hit) * 1e3, 2),
                           "hit_p95_ms": round(_pct(hit, 0.95) * 1e3, 2)}
                    row["speedup_p50"] = round(row["miss_p50_ms"] / row["hit_p50_ms"], 1)
                    rows.append(row)
    return rows


def print_gateway(rows: list[dict[str, Any]]) -> None:
    print("\nthrough the gateway (client -> stand-in -> plugin server + relay -> mock), latency to last byte")
    print(f"{'upstream':<16} {'form':<11} {'n':>4} {'miss p50':>9} {'miss p95':>9} "
          f"{'hit p50':>8} {'hit p95':>8} {'speed-up':>9}")
    for r in rows:
        print(f"{r['upstream']:<16} {r['form']:<11} {r['n']:>4} {r['miss_p50_ms']:>7.2f}ms "
              f"{r['miss_p95_ms']:>7.2f}ms {r['hit_p50_ms']:>6.2f}ms {r['hit_p95_ms']:>6.2f}ms "
              f"{r['speedup_p50']:>8.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--no-gateway", action="store_true", help="core micro-benchmarks only")
    ap.add_argument("--gateway-n", type=int, default=200, help="requests per row, instant mock")
    ap.add_argument("--slow-n", type=int, default=30, help="requests per row, slow mock")
    ap.add_argument("--slow-ms", type=int, default=300, help="simulated provider latency")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cache.json"))
    args = ap.parse_args()
    part = Partition("alice", "chat", "openai/gpt-4o-mini")
    entry = Entry(ANSWER, time.time(), "m", "openai", ANSWER["usage"])
    key = cache_key(part, "openai", BODY)
    print(f"request ~{len(str(BODY)) // 1024} KiB, answer ~{len(entry.dumps()) // 1024} KiB")
    run("cache_key", lambda: cache_key(part, "openai", BODY), args.n)
    mem = MemoryStore(1024)
    mem.set(key, entry, 60)
    run("MemoryStore.get (hit)", lambda: mem.get(key), args.n)
    run("MemoryStore.set", lambda: mem.set(key, entry, 60), args.n)
    run("replay_stream", lambda: replay_stream(entry), args.n // 5)
    chunks = replay_stream(entry)
    run("assemble_stream", lambda: assemble_stream(chunks), args.n // 5)
    store = RedisStore(args.redis, prefix=f"aigw:bench:{uuid.uuid4().hex}:")
    try:
        store.set(key, entry, 60)
        run("RedisStore.get (hit)", lambda: store.get(key), min(args.n, 2000))
        run("RedisStore.set", lambda: store.set(key, entry, 60), min(args.n, 2000))
        store.delete(key)
    except CacheUnavailable as exc:
        print(f"redis skipped: {exc}")
    finally:
        store.close()
    result: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                              "core": CORE}
    if not args.no_gateway:
        rows = bench_gateway(args.gateway_n, args.slow_n, args.slow_ms)
        print_gateway(rows)
        result["gateway"] = rows
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
