"""Request-path cost of pricing (genai-prices catalogue) and tracing hooks, in process.

    PYTHONPATH=. .venv/bin/python bench/bench_observability.py

Measures (best of 5, each over N iterations):
* catalogue: first ``PriceTable.default()`` (import + date scan, a fresh process),
  first lookup of a model (conversion), cached lookup by target, cost of one usage;
* tracing hooks of one request (begin, one provider attempt, finish): off, off with a
  client traceparent (pass-through), and on (opentelemetry-sdk, BatchSpanProcessor,
  OTLP/HTTP exporter to a local receiver that accepts everything).

Prints a table and writes bench/results/observability.json.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

N = 20000


def best_us(fn, n: int = N, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def cold_default_s() -> float:
    code = ("import time; t = time.perf_counter(); from aigw.cost.pricing import PriceTable; "
            "PriceTable.default(); print(time.perf_counter() - t)")
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout)
            for _ in range(3)]
    return min(runs)


def pricing() -> dict[str, float]:
    from aigw.cost.pricing import PriceTable
    from aigw.routing import Target
    from aigw.types import ProviderConfig, Usage

    table = PriceTable.default().with_overrides({"meta-llama/Llama-3.1-8B-Instruct": {"input": 0.05, "output": 0.08}})
    t = Target(ProviderConfig("openai", "openai", "https://api.openai.com/v1"), "gpt-4o-mini")
    usage = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1000)
    models = [f"gpt-4o-{i}" for i in range(200)]  # unknown: a miss goes through the catalogue once

    def first() -> None:
        table.catalogue._cache.clear()
        table.lookup(t)

    return {
        "default_table_cold_s": cold_default_s(),
        "first_lookup_us": best_us(first, n=500),
        "cached_lookup_us": best_us(lambda: table.lookup(t)),
        "cost_us": best_us(lambda: table.cost(t, usage)),
        "worst_case_us": best_us(lambda: table.worst_case(t, 1200, 1024)),
        "unknown_model_cached_us": best_us(lambda: [table.lookup(Target(t.provider, m)) for m in models],
                                           n=100) / len(models),
    }


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def tracing_hooks() -> dict[str, float]:
    from aigw import tracing
    from aigw.routing import Target
    from aigw.types import ProviderConfig, Usage

    ctx = SimpleNamespace(api="chat", stream=False, id="r", model=SimpleNamespace(name="gpt-4o-mini"))
    target = Target(ProviderConfig("openai", "openai", "https://api.openai.com/v1"), "gpt-4o-mini")
    outcome = SimpleNamespace(target=target, usage=Usage(input_tokens=100, output_tokens=20), status=200,
                              attempts=[{"provider": "openai", "model": "gpt-4o-mini", "result": "ok"}],
                              cache_status=None, cost_usd=0.0001, ttft=None, error=None)
    tp = {"HTTP_TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}

    def one(environ):
        def run():
            t = tracing.begin(ctx, environ)
            t.provider_call(target, SimpleNamespace(headers={}, url="https://api.openai.com/v1/chat/completions"))
            t.finish(ctx, outcome)
        return run

    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        del os.environ[k]
    tracing.reset()
    out = {"off_us": best_us(one({})), "off_passthrough_us": best_us(one(tp))}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{server.server_address[1]}"
    tracing.reset()
    out["on_us"] = best_us(one(tp), n=5000)
    server.shutdown()
    return out


def main() -> None:
    res = {"machine": f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
           "pricing": pricing(), "tracing": tracing_hooks()}
    print("| measure | value |\n|---|---|")
    for group in ("pricing", "tracing"):
        for k, v in res[group].items():
            print(f"| {group}.{k} | {v:.3f} |" if k.endswith("_s") else f"| {group}.{k} | {v:.2f} |")
    out = ROOT / "bench" / "results" / "observability.json"
    out.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
