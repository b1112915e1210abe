"""How far the token estimates are from exact counts, on text we can count exactly offline.

    PYTHONPATH=. .venv/bin/python bench/bench_token_estimates.py

For the families with an exact offline vocabulary (Llama 3 and Qwen via quicktok-v1),
compares the estimators the gateway falls back to for models it has no vocabulary for
(``estimate:o200k_base``, ``estimate:bytes/4``, ``estimate:bytes/3.5``) with the exact
count, per paragraph of tests/corpus/clean.txt and of bench_tokens' generated prose.
Prints ratio estimate/exact (median, 5th and 95th percentile) and writes
bench/results/token_estimates.json. Not a timed test: figures for docs/providers.md.
"""
from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aigw.tokens.encodings import get_encoding, get_quicktok  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from bench_tokens import make_text  # noqa: E402


def paragraphs() -> list[str]:
    corpus = (ROOT / "tests" / "corpus" / "clean.txt").read_text(encoding="utf-8")
    prose = make_text(200_000)
    out = [p.strip() for p in (corpus + "\n\n" + prose).split("\n\n") if len(p.strip()) >= 40]
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))]


def main() -> None:
    o200k = get_encoding("o200k_base")
    estimators = {
        "estimate:o200k_base": lambda t: len(o200k.encode_ordinary(t)),
        "estimate:bytes/4": lambda t: math.ceil(len(t.encode()) / 4),
        "estimate:bytes/3.5": lambda t: math.ceil(len(t.encode()) / 3.5),
    }
    paras = paragraphs()
    results = {"paragraphs": len(paras), "ratios": {}}
    for vocab in ("llama3", "qwen3"):
        qt = get_quicktok(vocab)
        if qt is None:
            print(f"{vocab}: quicktok not installed")
            continue
        exact = [qt.count(p) for p in paras]
        for name, est in estimators.items():
            r = [est(p) / e for p, e in zip(paras, exact) if e]
            row = {"median": statistics.median(r), "p05": pct(r, 0.05), "p95": pct(r, 0.95),
                   "total": sum(est(p) for p in paras) / sum(exact)}
            results["ratios"][f"{name} vs {vocab}"] = row
            print(f"{name:22s} vs {vocab:7s} median {row['median']:.3f}  p05 {row['p05']:.3f}  "
                  f"p95 {row['p95']:.3f}  whole text {row['total']:.3f}")
    out = ROOT / "bench" / "results" / "token_estimates.json"
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
