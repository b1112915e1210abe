"""Soak the whole gateway: a fixed request rate for N minutes, mixed stream and non-stream.

    .venv/bin/python bench/soak.py                      # 50 req/s for 10 minutes
    .venv/bin/python bench/soak.py --minutes 2 --rate 50 --json bench/results/soak.json

Starts the mock (a child process) and the stand-in on the reference kong.yml with all
five AI plugins (limits raised so every request is admitted, as in bench/run.py). The
load is an open loop: request i is due at t0 + i/rate whatever happened before, and its
latency counts from that due time (a slow gateway cannot hide its queue). Requests
rotate over: non-stream and stream chat on the failover model ``chat`` (two targets),
a single-target model, an Anthropic-format stream and an embeddings call; half the
chat prompts repeat (ai-cache hits), half are unique (misses, stored).

Every ``--interval`` seconds it prints a row: requests, errors, latency p50/p99 (ms),
plugin-server RSS (MiB) and open fds. At the end: the totals, latency percentiles per
kind, and RSS growth after warm-up (``--warmup`` seconds). ``--json`` writes everything.
An error is any answer that is not a 200 carrying the expected content (a stream must
end with its terminator), or a client-side failure or timeout.
"""
from __future__ import annotations

import argparse
import http.client
import os
import queue
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "devtools"))  # aigw_dev: the stand-in and the mock
sys.path.insert(0, str(ROOT / "bench"))

from aigw_dev.dev import demo_token, gateway_env  # noqa: E402
from aigw_dev.mock.testing import MockProvider  # noqa: E402
from aigw_dev.standin.testing import StandIn, free_port  # noqa: E402
from run import bench_config  # noqa: E402

KINDS = ["chat", "chat-stream", "single", "anthropic-stream", "chat-stream", "chat", "embeddings",
         "single-stream"]


def request_for(kind: str, i: int) -> tuple[str, bytes, bytes]:
    """(path, body, what a good answer must contain)."""
    unique = i % 2 == 0
    word = f"soak{i}" if unique else f"rep{i % 20}"
    text = f"REPLY:answer {word} " + "and more words " * 8
    if kind == "embeddings":
        return "/v1/embeddings", orjson.dumps({"model": "text-embedding-3-small", "input": [text]}), b'"embedding"'
    if kind == "anthropic-stream":
        return "/v1/messages", orjson.dumps({"model": "claude-sonnet", "max_tokens": 200, "stream": True,
                                             "messages": [{"role": "user", "content": text}]}), b"message_stop"
    model = "chat" if kind.startswith("chat") else "gpt-4o-mini"
    body: dict[str, Any] = {"model": model, "max_tokens": 200, "temperature": 0 if not unique else 0.7,
                            "messages": [{"role": "user", "content": text}]}
    if kind.endswith("stream"):
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        return "/v1/chat/completions", orjson.dumps(body), b"data: [DONE]"
    return "/v1/chat/completions", orjson.dumps(body), word.encode()


class Result:
    __slots__ = ("kind", "due", "latency", "ok", "why")

    def __init__(self, kind: str, due: float, latency: float, ok: bool, why: str = ""):
        self.kind, self.due, self.latency, self.ok, self.why = kind, due, latency, ok, why


def worker(host: str, port: int, jobs: queue.Queue, out: list[Result], lock: threading.Lock,
           headers: dict[str, str], timeout: float) -> None:
    conn: http.client.HTTPConnection | None = None
    while True:
        job = jobs.get()
        if job is None:
            return
        i, due, kind = job
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        path, body, expect = request_for(kind, i)
        ok, why = False, ""
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            conn.request("POST", path, body=body, headers={**headers, "Content-Length": str(len(body))})
            resp = conn.getresponse()
            data = resp.read()
            ok = resp.status == 200 and expect in data
            why = "" if ok else f"{resp.status}:{data[:160].decode('utf-8', 'replace')}"
            if resp.will_close:
                conn.close()
                conn = None
        except Exception as exc:  # noqa: BLE001 - every client failure is an error to report
            why = f"client:{type(exc).__name__}"
            if conn is not None:
                conn.close()
            conn = None
        r = Result(kind, due, time.perf_counter() - due, ok, why)
        with lock:
            out.append(r)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second")
    ap.add_argument("--interval", type=float, default=30.0, help="seconds per report row")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline")
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    total = int(args.minutes * 60 * args.rate)

    with MockProvider(process=True, api_key=None) as mock:
        relay_port = free_port()
        env = gateway_env(mock.url)
        env.update({"AIGW_RELAY_PORT": str(relay_port), "AIGW_METRICS_PORT": str(free_port()),
                    "AIGW_REDIS_PREFIX": f"aigw-soak:{uuid.uuid4().hex[:8]}:"})
        with StandIn(bench_config(relay_port, mock.url), env=env, plugins_dir=ROOT / "plugins") as kong:
            pid = kong.pluginserver_pid()
            host, port = "127.0.0.1", int(kong.url.rsplit(":", 1)[1])
            headers = {"Authorization": f"Bearer {demo_token()}", "Content-Type": "application/json",
                       "anthropic-version": "2023-06-01"}
            jobs: queue.Queue = queue.Queue()
            results: list[Result] = []
            lock = threading.Lock()
            threads = [threading.Thread(target=worker, daemon=True,
                                        args=(host, port, jobs, results, lock, headers, args.timeout))
                       for _ in range(args.workers)]
            for t in threads:
                t.start()
            t0 = time.perf_counter() + 0.5
            samples: list[dict[str, Any]] = [{"t": 0.0, "rss_mib": round(rss_mib(pid), 1), "fds": fds(pid)}]
            rows: list[dict[str, Any]] = []
            print(f"soak: {args.rate:g} req/s for {args.minutes:g} min ({total} requests), "
                  f"plugin server pid {pid}", file=sys.stderr)
            print(f"{'t (s)':>6} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} "
                  f"{'RSS MiB':>8} {'fds':>5}")
            # schedule ahead of time, one interval at a time, so the queue stays short
            i = 0
            seen = 0
            next_report = args.interval
            while i < total or seen < total:
                horizon = time.perf_counter() - t0 + 1.0
                while i < total and i / args.rate < horizon:
                    jobs.put((i, t0 + i / args.rate, KINDS[i % len(KINDS)]))
                    i += 1
                time.sleep(0.2)
                now = time.perf_counter() - t0
                if now >= next_report or (i >= total and len(results) >= total):
                    with lock:
                        window = results[seen:]
                        seen = len(results)
                    lat = [r.latency * 1000 for r in window]
                    s = {"t": round(now, 1), "rss_mib": round(rss_mib(pid), 1), "fds": fds(pid)}
                    samples.append(s)
                    row = {**s, "requests": len(window), "errors": sum(not r.ok for r in window),
                           "p50_ms": round(pct(lat, 0.5), 1), "p99_ms": round(pct(lat, 0.99), 1)}
                    rows.append(row)
                    print(f"{row['t']:6.0f} {row['requests']:8d} {row['errors']:6d} {row['p50_ms']:8.1f} "
                          f"{row['p99_ms']:8.1f} {row['rss_mib']:8.1f} {row['fds']:5d}", flush=True)
                    next_report += args.interval
                if now > total / args.rate + args.timeout + 10:
                    break  # whatever has not answered by now counts as lost
            for _ in threads:
                jobs.put(None)
    lost = total - len(results)
    errors = [r for r in results if not r.ok]
    lat = [r.latency * 1000 for r in results]
    per_kind = {}
    for kind in sorted(set(KINDS)):
        ks = [r.latency * 1000 for r in results if r.kind == kind]
        per_kind[kind] = {"requests": len(ks), "p50_ms": round(pct(ks, 0.5), 1),
                          "p99_ms": round(pct(ks, 0.99), 1)}
    warm = next((s for s in samples if s["t"] >= args.warmup), samples[-1])
    last = samples[-1]
    why: dict[str, int] = {}
    for r in errors:
        why[r.why[:80]] = why.get(r.why[:80], 0) + 1
    report = {
        "rate": args.rate, "minutes": args.minutes, "requests": total, "answered": len(results),
        "lost": lost, "errors": len(errors) + lost, "error_kinds": why,
        "latency_ms": {"p50": round(pct(lat, 0.5), 1), "p90": round(pct(lat, 0.9), 1),
                       "p99": round(pct(lat, 0.99), 1), "max": round(max(lat, default=0.0), 1)},
        "per_kind": per_kind,
        "rss_mib": {"start": samples[0]["rss_mib"], "after_warmup": warm["rss_mib"], "warmup_t": warm["t"],
                    "end": last["rss_mib"], "growth_after_warmup": round(last["rss_mib"] - warm["rss_mib"], 1)},
        "fds": {"start": samples[0]["fds"], "after_warmup": warm["fds"], "end": last["fds"],
                "max": max(s["fds"] for s in samples)},
        "rows": rows,
    }
    print(f"\n{len(results)}/{total} answered, errors {report['errors']} (lost {lost}); latency ms "
          f"p50 {report['latency_ms']['p50']} p90 {report['latency_ms']['p90']} "
          f"p99 {report['latency_ms']['p99']} max {report['latency_ms']['max']}")
    for kind, k in per_kind.items():
        print(f"  {kind:17s} {k['requests']:6d} requests  p50 {k['p50_ms']:7.1f}  p99 {k['p99_ms']:7.1f}")
    r = report["rss_mib"]
    print(f"RSS MiB: start {r['start']}, after warm-up ({r['warmup_t']:.0f}s) {r['after_warmup']}, "
          f"end {r['end']}: growth after warm-up {r['growth_after_warmup']}")
    f = report["fds"]
    print(f"fds: start {f['start']}, after warm-up {f['after_warmup']}, end {f['end']}, max {f['max']}")
    for w, n in sorted(why.items(), key=lambda x: -x[1])[:10]:
        print(f"  error x{n}: {w}")
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
