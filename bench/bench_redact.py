"""Redaction throughput and latency, optionally side by side with an older revision.

- MB/s of ``Detector.find`` and of ``scan_request`` on 1 MiB of mixed text (~1 % PII by bytes),
  as one message and as 256 text parts of one message (values split across parts are looked
  for at each of the 255 boundaries)
- p50/p99 latency of ``scan_request`` on a 2 KiB chat prompt
- the same MB/s in CPU time of this process (``*_cpu_mb_s``): on a shared machine the
  wall-clock figures also count time the process spent waiting for a core

``--baseline REV`` extracts ``aigw/redact`` of git revision REV (``git archive``) into a
temporary directory, imports it as a second package and times both in the same process,
interleaved (the order alternates every round), on the same inputs.  The figures are the
median over the rounds (the best round is reported too); the ratio is new / baseline.

Prints a table and writes bench/results/redact.json.  Run:
    .venv/bin/python bench/bench_redact.py [--baseline 33801cf] [--rounds 15]
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import io
import os
import platform
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType

import orjson

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


def load_revision(rev: str, tmp: Path) -> ModuleType:
    """``aigw/redact`` as of git revision ``rev``, imported as the package ``redact_<rev>``.

    The old modules import each other relatively and ``aigw.errors`` absolutely (that one
    comes from the current tree: it only defines the error class)."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True,
                            capture_output=True, text=True).stdout.strip()
    raw = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "aigw/redact"], check=True,
                         capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        tar.extractall(tmp, filter="data")
    name = f"redact_{commit}"
    pkg_dir = tmp / "aigw" / "redact"
    spec = importlib.util.spec_from_file_location(name, pkg_dir / "__init__.py",
                                                  submodule_search_locations=[str(pkg_dir)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    mod.REVISION = commit
    return mod


class Subject:
    """One implementation under test and its timings."""

    def __init__(self, label: str, mod: ModuleType):
        self.label = label
        self.mod = mod
        self.cfg = mod.RedactConfig.from_dict({"restore": True})
        self.times: dict[str, list[float]] = {k: [] for k in (
            "find", "scan", "split", "find_cpu", "scan_cpu", "split_cpu")}
        self.lat: list[float] = []

    def time_round(self, text: str, body: dict, split: dict) -> None:
        det = self.cfg.detector
        for kind, clock in (("", time.perf_counter), ("_cpu", time.process_time)):
            t0 = clock()
            det.find(text)
            self.times["find" + kind].append(clock() - t0)
            for name, bod in (("scan", body), ("split", split)):
                b = copy.deepcopy(bod)  # outside the timed part
                t0 = clock()
                self.mod.scan_request(self.cfg, "chat", b)
                self.times[name + kind].append(clock() - t0)

    def time_prompts(self, raw: bytes, n: int) -> None:
        for _ in range(n):
            b = orjson.loads(raw)
            t0 = time.perf_counter()
            self.mod.scan_request(self.cfg, "chat", b)
            self.lat.append(time.perf_counter() - t0)

    def results(self, size: int, text: str, prompt_bytes: int) -> dict:
        def mbs(key: str, pick) -> float:
            return round(size / pick(self.times[key]) / 1e6, 2)
        lat = sorted(self.lat)
        return {
            "findings": len(self.cfg.detector.find(text)),
            "detect_mb_s": mbs("find", statistics.median),
            "scan_request_mb_s": mbs("scan", statistics.median),
            "detect_cpu_mb_s": mbs("find_cpu", statistics.median),
            "scan_request_cpu_mb_s": mbs("scan_cpu", statistics.median),
            "scan_request_best_mb_s": mbs("scan", min),
            "scan_request_256_parts_mb_s": mbs("split", statistics.median),
            "scan_request_256_parts_cpu_mb_s": mbs("split_cpu", statistics.median),
            "scan_request_cpu_ms_per_mib": round(statistics.median(self.times["scan_cpu"]) * 1e3
                                                 * MIB / size, 1),
            "prompt_bytes": prompt_bytes,
            "scan_request_p50_ms": round(lat[len(lat) // 2] * 1e3, 3),
            "scan_request_p99_ms": round(lat[int(len(lat) * 0.99)] * 1e3, 3),
            "scan_request_mean_ms": round(statistics.fmean(lat) * 1e3, 3),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", metavar="REV", help="also time aigw/redact of this git revision")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--prompts", type=int, default=1000, help="2 KiB prompts per subject")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/redact.json")
    args = ap.parse_args()

    import aigw.redact as current
    subjects = [Subject("new", current)]
    tmp = tempfile.TemporaryDirectory(prefix="bench_redact_")
    if args.baseline:
        base = load_revision(args.baseline, Path(tmp.name))
        subjects.append(Subject(f"baseline {base.REVISION}", base))

    text, n_items, pii = mixed_text(MIB)
    size = len(text.encode())
    body = {"messages": [{"role": "user", "content": text}]}
    step = len(text) // 256 + 1  # the same text in 256 text parts: 255 boundaries to look across
    split = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": text[i:i + step]} for i in range(0, len(text), step)]}]}
    prompt_text, _, _ = mixed_text(2048, seed=11)
    raw = orjson.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are a helpful support assistant."},
        {"role": "user", "content": prompt_text}]})

    load_before = os.getloadavg()
    for s in subjects:  # warm up (compiles, caches)
        s.cfg.detector.find(text)
        s.mod.scan_request(s.cfg, "chat", copy.deepcopy(body))
    for r in range(args.rounds):
        for s in (subjects if r % 2 == 0 else subjects[::-1]):
            s.time_round(text, body, split)
    chunk = max(1, args.prompts // 10)
    for r in range(10):
        for s in (subjects if r % 2 == 0 else subjects[::-1]):
            s.time_prompts(raw, chunk)
    load_after = os.getloadavg()

    res = [s.results(size, text, len(prompt_text.encode())) for s in subjects]
    results = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "nproc": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rounds": args.rounds,
        "mixed_text_bytes": size,
        "mixed_text_pii_items": n_items,
        "mixed_text_pii_bytes": pii,
        **res[0],
        "load_average_1m": round(load_before[0], 2),
        "load_average_1m_after": round(load_after[0], 2),
    }
    if len(subjects) > 1:
        results["baseline"] = {"revision": subjects[1].mod.REVISION, **res[1]}
        results["ratio_scan_request"] = round(res[0]["scan_request_mb_s"] / res[1]["scan_request_mb_s"], 3)
        results["ratio_scan_request_cpu"] = round(res[0]["scan_request_cpu_mb_s"]
                                                  / res[1]["scan_request_cpu_mb_s"], 3)
        results["ratio_detect"] = round(res[0]["detect_mb_s"] / res[1]["detect_mb_s"], 3)
        results["ratio_scan_request_256_parts_cpu"] = round(
            res[0]["scan_request_256_parts_cpu_mb_s"] / res[1]["scan_request_256_parts_cpu_mb_s"], 3)

    print(f"mixed text: {size / MIB:.2f} MiB, {n_items} PII items ({pii / size:.2%} of bytes); "
          f"{args.rounds} interleaved rounds, medians (best round in brackets)")
    rows = [("", [s.label for s in subjects])]
    rows.append(("findings", [str(r["findings"]) for r in res]))
    rows.append(("Detector.find MB/s", [str(r["detect_mb_s"]) for r in res]))
    rows.append(("scan_request MB/s (1 MiB chat)",
                 [f"{r['scan_request_mb_s']} [{r['scan_request_best_mb_s']}]" for r in res]))
    rows.append(("  in CPU time (find / scan)",
                 [f"{r['detect_cpu_mb_s']} / {r['scan_request_cpu_mb_s']}" for r in res]))
    rows.append(("  CPU ms per MiB (scan)", [str(r["scan_request_cpu_ms_per_mib"]) for r in res]))
    rows.append(("scan_request MB/s, in 256 parts (CPU)",
                 [f"{r['scan_request_256_parts_mb_s']} ({r['scan_request_256_parts_cpu_mb_s']})" for r in res]))
    rows.append(("scan_request 2 KiB p50 / p99 ms",
                 [f"{r['scan_request_p50_ms']} / {r['scan_request_p99_ms']}" for r in res]))
    width = max(len(r[0]) for r in rows)
    cols = [max(len(r[1][i]) for r in rows) for i in range(len(subjects))]
    for name, values in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{v:>{c}}" for v, c in zip(values, cols)))
    if len(subjects) > 1:
        print(f"ratio new / baseline: scan_request {results['ratio_scan_request']} "
              f"(CPU {results['ratio_scan_request_cpu']}), find {results['ratio_detect']}")
    print(f"load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    tmp.cleanup()
    if not args.no_write:
        out = ROOT / "bench" / "results" / "redact.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
