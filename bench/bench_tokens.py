"""Token counting throughput on 1 MiB of generated English text (best of 5).

    PYTHONPATH=. .venv/bin/python bench/bench_tokens.py [--limits]

Prints a table and writes bench/results/tokens.json. With --limits it also measures
reserve+reconcile round trips of the memory and Redis limiters.
"""
from __future__ import annotations

import argparse
import platform
import random
import sys
import time
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aigw.tokens import count_text  # noqa: E402
from aigw.tokens.encodings import get_quicktok  # noqa: E402

WORDS = (
    "the of and to in is was for on that with as by at from it an be this are which or "
    "gateway request response model token limit budget latency stream upstream provider "
    "Kubernetes configuration reliability observability throughput consistency "
    "however, therefore; meanwhile: (approximately) \"quoted\" don't it's we'll they've "
    "2024 3.14 42 1,000 99% $12.50 e-mail self-hosted state-of-the-art"
).split()


def make_text(size: int = 1 << 20, seed: int = 20241124) -> str:
    """Deterministic English-like prose: sentences, paragraphs, numbers, punctuation."""
    rng = random.Random(seed)
    parts: list[str] = []
    n = 0
    while n < size:
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 24))]
        sentence = " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])
        sentence += "\n\n" if rng.random() < 0.15 else " "
        parts.append(sentence)
        n += len(sentence)
    return "".join(parts)[:size]


def best_of(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_counting(text: str) -> list[dict]:
    mb = len(text.encode()) / 1e6
    cases = [("o200k_base (tiktoken)", "gpt-4o"), ("cl100k_base (tiktoken)", "gpt-4")]
    if get_quicktok("llama3") is not None:
        cases.append(("llama3 (quicktok)", "llama-3.1-8b"))
    cases.append(("estimate bytes/3.5 (claude)", "claude-sonnet-4"))
    rows = []
    for label, model in cases:
        count_text("warm up", model)
        tokens = count_text(text, model).tokens
        secs = best_of(lambda: count_text(text, model))
        rows.append({"tokenizer": label, "model": model, "tokens": tokens,
                     "mb_per_s": round(mb / secs, 1), "tokens_per_s": round(tokens / secs)})
    return rows


def bench_limits(n: int = 2000) -> list[dict]:
    from aigw.limits import BackendUnavailable, MemoryLimiter, RedisLimiter, Rule

    rows = []
    prefix = f"aigw-bench-{uuid.uuid4().hex}:"
    limiters = [("memory", MemoryLimiter()), ("redis", RedisLimiter(prefix=prefix))]
    rules = [Rule("tokens:consumer:bench:minute", 10**12, 60), Rule("tokens:route:bench:hour", 10**12, 3600)]
    for name, lim in limiters:
        try:
            t0 = time.perf_counter()
            for i in range(n):
                res, _ = lim.reserve(rules, 100, f"r{i}")
                lim.reconcile(res, 90)
            dt = time.perf_counter() - t0
        except BackendUnavailable:
            print(f"{name}: unavailable, skipped")
            continue
        rows.append({"limiter": name, "rules": len(rules), "ops": n,
                     "reserve_reconcile_per_s": round(n / dt), "us_per_pair": round(dt / n * 1e6, 1)})
        if name == "redis":
            client = lim._redis
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limits", action="store_true", help="also measure the limiters")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tokens.json"))
    args = ap.parse_args()

    text = make_text()
    rows = bench_counting(text)
    print(f"count_text on {len(text.encode()) / 2**20:.2f} MiB English, best of 5")
    print(f"{'tokenizer':<30} {'tokens':>9} {'MB/s':>8} {'tokens/s':>12}")
    for r in rows:
        print(f"{r['tokenizer']:<30} {r['tokens']:>9} {r['mb_per_s']:>8} {r['tokens_per_s']:>12}")
    result: dict = {"text_bytes": len(text.encode()), "python": platform.python_version(),
                    "machine": platform.machine(), "counting": rows}
    if args.limits:
        limit_rows = bench_limits()
        for r in limit_rows:
            print(f"{r['limiter']:<8} reserve+reconcile ({r['rules']} rules): "
                  f"{r['reserve_reconcile_per_s']}/s, {r['us_per_pair']} µs")
        result["limits"] = limit_rows
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
