"""Cache core micro-benchmark (local only, bounded loops).

    .venv/bin/python -m bench.bench_cache [--redis URL]   (or PYTHONPATH=. python bench/bench_cache.py)
"""
from __future__ import annotations

import argparse
import time
import uuid
from typing import Callable

from aigw.cache import (CacheUnavailable, Entry, MemoryStore, Partition, RedisStore,
                        assemble_stream, cache_key, replay_stream)

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


def run(name: str, fn: Callable[[], object], n: int) -> None:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    dt = time.perf_counter() - t0
    print(f"{name:<34} {n / dt:>10.0f} ops/s  {dt / n * 1e6:>8.1f} µs/op")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("-n", type=int, default=5000)
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


if __name__ == "__main__":
    main()
