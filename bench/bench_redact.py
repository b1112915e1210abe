"""Redaction throughput and latency.

- MB/s of ``Detector.find`` and of ``scan_request`` on 1 MiB of mixed text (~1 % PII by bytes)
- p50/p99 latency of ``scan_request`` on a 2 KiB chat prompt (1,000 runs)
- the same MB/s in CPU time of this process (``*_cpu_mb_s``): on a shared machine the
  wall-clock figures also count time the process spent waiting for a core

Prints a table and writes bench/results/redact.json.  Run:
    .venv/bin/python bench/bench_redact.py
"""
from __future__ import annotations

import copy
import importlib.util
import os
import platform
import random
import statistics
import time
from pathlib import Path

import orjson

from aigw.redact import RedactConfig, scan_request

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("redact_corpus", ROOT / "tests" / "corpus" / "generate.py")
corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)

MIB = 1024 * 1024


def mixed_text(size: int, pii_ratio: float = 0.01, seed: int = 5) -> tuple[str, int, int]:
    """Clean prose with corpus sentences mixed in until PII values are ~pii_ratio of the bytes."""
    rng = random.Random(seed)
    items = corpus.generate(seed=seed)
    rng.shuffle(items)
    clean = corpus.clean_text(seed=seed, min_bytes=size).split("\n\n")
    parts, total, pii, n_items, it = [], 0, 0, 0, iter(items)
    for para in clean:
        parts.append(para)
        total += len(para) + 2
        while pii < pii_ratio * total:
            text, _, value = next(it)
            parts.append(text)
            total += len(text) + 2
            pii += len(value)
            n_items += 1
        if total >= size:
            break
    text = "\n\n".join(parts)[:size]
    return text, n_items, pii


def best_of(fn, runs: int = 5, clock=time.perf_counter) -> float:
    times = []
    for _ in range(runs):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def main() -> None:
    cfg = RedactConfig.from_dict({"restore": True})
    det = cfg.detector
    text, n_items, pii = mixed_text(MIB)
    size = len(text.encode())
    det.find(text)  # warm up
    t_find = best_of(lambda: det.find(text))
    body = {"messages": [{"role": "user", "content": text}]}
    t_scan = best_of(lambda: scan_request(cfg, "chat", copy.deepcopy(body)))
    t_copy = best_of(lambda: copy.deepcopy(body))
    c_find = best_of(lambda: det.find(text), clock=time.process_time)
    c_scan = best_of(lambda: scan_request(cfg, "chat", copy.deepcopy(body)), clock=time.process_time)
    c_copy = best_of(lambda: copy.deepcopy(body), clock=time.process_time)
    found = len(det.find(text))

    prompt_text, _, _ = mixed_text(2048, seed=11)
    prompt = {"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are a helpful support assistant."},
        {"role": "user", "content": prompt_text}]}
    raw = orjson.dumps(prompt)
    lat = []
    for _ in range(1000):
        b = orjson.loads(raw)
        t0 = time.perf_counter()
        scan_request(cfg, "chat", b)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]

    results = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "mixed_text_bytes": size,
        "mixed_text_pii_items": n_items,
        "mixed_text_pii_bytes": pii,
        "findings": found,
        "detect_mb_s": round(size / t_find / 1e6, 2),
        "scan_request_mb_s": round(size / (t_scan - t_copy) / 1e6, 2),
        "detect_cpu_mb_s": round(size / c_find / 1e6, 2),
        "scan_request_cpu_mb_s": round(size / max(c_scan - c_copy, 1e-9) / 1e6, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "prompt_bytes": len(prompt_text.encode()),
        "scan_request_p50_ms": round(p50 * 1e3, 3),
        "scan_request_p99_ms": round(p99 * 1e3, 3),
        "scan_request_mean_ms": round(statistics.fmean(lat) * 1e3, 3),
    }
    rows = [
        ("mixed text", f"{size / MIB:.2f} MiB, {n_items} PII items ({pii / size:.2%} of bytes)"),
        ("Detector.find", f"{results['detect_mb_s']} MB/s"),
        ("scan_request (1 MiB chat)", f"{results['scan_request_mb_s']} MB/s"),
        ("  in CPU time (find / scan)", f"{results['detect_cpu_mb_s']} / {results['scan_request_cpu_mb_s']} MB/s"),
        ("load average (1 min)", f"{results['load_average_1m']}"),
        ("scan_request 2 KiB p50", f"{results['scan_request_p50_ms']} ms"),
        ("scan_request 2 KiB p99", f"{results['scan_request_p99_ms']} ms"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    out = ROOT / "bench" / "results" / "redact.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
