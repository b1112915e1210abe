"""The gateway benchmark: ``make bench`` (full, a few minutes) or ``bench/run.py --quick``.

Starts the mock provider (child process), the Kong stand-in on the reference
kong.yml with every AI plugin (ai-redact, ai-router, ai-cache, ai-tokens,
ai-cost) and the relay, plus a baseline route on the SAME stand-in that
proxies straight to the mock (jwt + acl only). Load comes from a separate
process (bench/load.py; wrk for throughput when installed). Added cost =
plugin path - baseline, measured interleaved in the same run.

Prints a Markdown table and writes bench/results/latest.json. ``--profile``
instead runs the plugin server under cProfile (bench/profiled_pluginserver.py)
and writes bench/results/profile.txt.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import io
import os
import pstats
import signal
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "devtools"))  # aigw_dev: the stand-in and the mock
sys.path.insert(0, str(ROOT / "bench"))

from aigw_dev.dev import demo_token, gateway_env  # noqa: E402
from aigw_dev.mock.testing import MockProvider  # noqa: E402
from aigw_dev.standin.testing import StandIn, free_port  # noqa: E402

LOAD = ROOT / "bench" / "load.py"
PROF = Path(tempfile.gettempdir()) / "aigw-bench-pluginserver.prof"
TARGETS = {"latency_p50_ms": 1.5, "latency_p99_ms": 5.0, "pdk_per_request": 12, "ttft_ms": 5.0,
           "rss_mb": 150, "tokens_mb_s": 20, "redact_mb_s": 10}


# ------------------------------------------------------------------ bodies
def chat_prompt(size: int = 2048) -> str:
    """~2 KiB of support-ticket prose with an e-mail and a phone number in it."""
    head = ("Hello, I am writing about my order. You can reach me at jane.doe@example.com "
            "or +1 415 555 0132. ")
    filler = ("The gateway should summarise this ticket and propose the next step for the "
              "support team, keeping the answer short and polite. ")
    text = head
    while len(text) < size - 40:
        text += filler
    return text[: size - 40] + " Please answer briefly."


STREAM_REPLY = " REPLY: " + " ".join(["The", "ticket", "is", "noted", "and", "we", "will", "follow", "up",
                                       "shortly", "with", "next", "steps."] * 3)


def chat_body(stream: bool = False, temperature: float = 0.7, prompt: str | None = None) -> bytes:
    """The non-stream answer echoes the prompt (~2 KiB back); a stream answers ~40 words
    (the mock sends one event per word, and a long echo would load the mock, not us)."""
    body: dict[str, Any] = {
        "model": "chat", "temperature": temperature, "max_tokens": 256,
        "messages": [{"role": "system", "content": "You are a concise support assistant."},
                     {"role": "user", "content": prompt or chat_prompt()}]}
    if stream:
        body["messages"][-1]["content"] = (prompt or chat_prompt())[:-len(STREAM_REPLY)] + STREAM_REPLY
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


# ------------------------------------------------------------------ gateway
def bench_config(relay_port: int, mock_url: str) -> dict[str, Any]:
    """The reference kong.yml, relay on our port, limits raised so 10^4+ requests are
    admitted (still reserved and reconciled in Redis), plus the baseline route."""
    doc = yaml.safe_load((ROOT / "kong" / "kong.yml").read_text())
    ai = next(s for s in doc["services"] if s["name"] == "ai")
    ai["url"] = f"http://127.0.0.1:{relay_port}"
    plugins = {p["name"]: p for p in ai["plugins"]}
    for lim in plugins["ai-tokens"]["config"]["limits"]:
        lim["tokens"] = 10 ** 12
    for b in plugins["ai-cost"]["config"]["budgets"]:
        b["usd"] = 10 ** 9
    auth = [copy.deepcopy(plugins["jwt"]), copy.deepcopy(plugins["acl"])]
    doc["services"].append({
        "name": "direct", "url": f"{mock_url.rstrip('/')}/v1/chat/completions",
        "routes": [{"name": "direct-chat", "paths": ["/direct/v1/chat/completions"],
                    "methods": ["POST"], "strip_path": True}],
        "plugins": auth})
    return doc


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.quick = args.quick
        self.results: dict[str, Any] = {}
        self.plugin_requests = 0

    # ------------------------------------------------------------ helpers
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {demo_token()}", "Content-Type": "application/json"}

    def load(self, spec: dict[str, Any]) -> dict[str, Any]:
        with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
            f.write(orjson.dumps(spec))
        try:
            out = subprocess.run([sys.executable, str(LOAD), f.name], check=True, capture_output=True,
                                 cwd=str(ROOT), timeout=900)
        finally:
            os.unlink(f.name)
        res = orjson.loads(out.stdout)
        for name, r in res.items():
            if r["errors"]:
                print(f"  warning: {name}: errors {r['errors']}", file=sys.stderr)
            if name.startswith("plugin"):
                self.plugin_requests += r["ok"] + sum(r["errors"].values())
        return res

    def target(self, name: str, path: str, body: bytes, stream: bool = False) -> dict[str, Any]:
        return {"name": name, "url": self.url + path, "headers": self.headers(), "body": body.decode(),
                "stream": stream}

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    # ------------------------------------------------------------ phases
    def latency(self) -> None:
        """Open loop at a fixed rate, non-stream 2 KiB chat, plugin path vs baseline."""
        self._latency("latency", self.args.rate, *((4, 250) if self.quick else (10, 500)))

    def latency_light(self) -> None:
        """The same at a light load: the cost of the work itself, without queueing."""
        self._latency("latency_light", self.args.light_rate, *((2, 100) if self.quick else (4, 250)))

    def _latency(self, key: str, rate: int, rounds: int, n: int) -> None:
        spec = {"mode": "open", "rate": rate, "requests": n, "rounds": rounds, "concurrency": 16,
                "targets": [self.target("plugins", "/v1/chat/completions", chat_body()),
                            self.target("baseline", "/direct/v1/chat/completions", chat_body())]}
        cpu0, before = self.cpu_s(), self.plugin_requests
        res = self.load(spec)
        cpu = self.cpu_s() - cpu0
        self.results[key] = compare(res["plugins"]["latency_s"], res["baseline"]["latency_s"])
        self.results[key]["rate"] = rate
        if key == "latency":
            self.results["cpu_ms_per_request"] = round(cpu / max(1, self.plugin_requests - before) * 1e3, 3)

    def ttft(self) -> None:
        rounds, n = (4, 100) if self.quick else (6, 250)
        spec = {"mode": "open", "rate": self.args.light_rate, "requests": n, "rounds": rounds, "concurrency": 16,
                "targets": [self.target("plugins-stream", "/v1/chat/completions", chat_body(stream=True), True),
                            self.target("baseline-stream", "/direct/v1/chat/completions",
                                        chat_body(stream=True), True)]}
        res = self.load(spec)
        self.plugin_requests += res["plugins-stream"]["ok"]
        self.results["ttft"] = compare(res["plugins-stream"]["ttft_s"], res["baseline-stream"]["ttft_s"])
        self.results["ttft"]["rate"] = self.args.light_rate
        self.results["stream_total"] = compare(res["plugins-stream"]["latency_s"],
                                               res["baseline-stream"]["latency_s"])

    def cache_hit(self) -> None:
        rounds, n = (2, 200) if self.quick else (4, 500)
        body = chat_body(temperature=0, prompt=chat_prompt() + f" [{uuid.uuid4().hex[:8]}]")
        hit = self.target("plugins-hit", "/v1/chat/completions", body)
        spec = {"mode": "open", "rate": self.args.rate, "requests": n, "rounds": rounds, "concurrency": 16,
                "warmup": 5, "targets": [hit, self.target("baseline", "/direct/v1/chat/completions", body)]}
        res = self.load(spec)
        self.plugin_requests += res["plugins-hit"]["ok"]
        self.results["cache_hit"] = compare(res["plugins-hit"]["latency_s"], res["baseline"]["latency_s"])

    def pdk_calls(self) -> None:
        """PDK calls and plugin-server RPCs per request, counted by the stand-in."""
        n = 100
        self.admin("POST", "/_standin/stats/reset")
        self.load({"mode": "open", "rate": 50, "requests": n, "rounds": 1, "warmup": 0, "concurrency": 4,
                   "targets": [self.target("plugins-count", "/v1/chat/completions", chat_body())]})
        time.sleep(0.5)  # the log phase runs after the response
        st = self.admin("GET", "/_standin/stats")
        reqs = st["requests"] or 1
        per_plugin = {p: round(sum(v.values()) / reqs, 2) for p, v in st["pdk_calls"].items()}
        events = sum(sum(v.values()) for v in st["events"].values())
        self.results["pdk"] = {"requests": st["requests"], "per_plugin": per_plugin,
                               "calls_per_request": round(st["pdk_calls_total"] / reqs, 2),
                               "events_per_request": round(events / reqs, 2),
                               "round_trips_per_request": round((st["pdk_calls_total"] + events) / reqs, 2),
                               "by_phase": st["pdk_calls"]}

    def cpu_split(self) -> None:
        """CPU per request of each process, one path at a time (sequential requests)."""
        n = 200 if self.quick else 1000
        out: dict[str, dict[str, float]] = {}
        for name, path in (("plugins", "/v1/chat/completions"), ("baseline", "/direct/v1/chat/completions")):
            before = {k: proc_cpu_s(pid) for k, pid in self.pids.items()}
            self.load({"mode": "closed", "duration": 120, "rounds": 1, "concurrency": 1, "warmup": 0,
                       "max_requests": n, "targets": [self.target(name + "-cpu", path, chat_body())]})
            out[name] = {k: round((proc_cpu_s(pid) - before[k]) / n * 1e3, 3) for k, pid in self.pids.items()}
        self.results["cpu_split_ms_per_request"] = out

    def throughput(self) -> None:
        conc, dur, rounds = 16, (3 if self.quick else 8), (1 if self.quick else 2)
        wrk = shutil.which("wrk") if not self.args.no_wrk else None
        out: dict[str, list[float]] = {"plugins": [], "baseline": []}
        if wrk:
            for r in range(rounds):
                for name, path in (("plugins", "/v1/chat/completions"), ("baseline", "/direct/v1/chat/completions"))[
                        :: 1 if r % 2 == 0 else -1]:
                    out[name].append(self.wrk(wrk, path, conc, dur))
            tool = "wrk"
        else:
            res = self.load({"mode": "closed", "duration": dur, "rounds": rounds * 2, "concurrency": conc,
                             "targets": [self.target("plugins", "/v1/chat/completions", chat_body()),
                                         self.target("baseline", "/direct/v1/chat/completions", chat_body())]})
            out = {k: v["rps"] for k, v in res.items()}
            tool = "bench/load.py"
        p, b = max(out["plugins"]), max(out["baseline"])
        self.results["throughput"] = {"tool": tool, "concurrency": conc, "seconds": dur,
                                      "plugins_rps": round(p, 1), "baseline_rps": round(b, 1),
                                      "ratio": round(p / b, 3), "runs": out}

    def wrk(self, wrk: str, path: str, conc: int, dur: int) -> float:
        script = ROOT / "bench" / ".wrk-post.lua"
        body = chat_body().decode()
        script.write_text("wrk.method = 'POST'\n"
                          f"wrk.body = [==[{body}]==]\n"
                          f"wrk.headers['Content-Type'] = 'application/json'\n"
                          f"wrk.headers['Authorization'] = 'Bearer {demo_token()}'\n"
                          "done = function(summary, latency, requests)\n"
                          "  io.write(string.format('RESULT %d %d %f\\n', summary.requests,"
                          " summary.errors.status + summary.errors.connect + summary.errors.read"
                          " + summary.errors.write + summary.errors.timeout, summary.duration / 1e6))\n"
                          "end\n")
        try:
            out = subprocess.run([wrk, "-t2", f"-c{conc}", f"-d{dur}s", "-s", str(script), self.url + path],
                                 capture_output=True, text=True, check=True).stdout
        finally:
            script.unlink(missing_ok=True)
        line = next(l for l in out.splitlines() if l.startswith("RESULT"))
        _, n, errors, secs = line.split()
        if int(errors):
            print(f"  warning: wrk {path}: {errors} errors", file=sys.stderr)
        if path.startswith("/v1"):
            self.plugin_requests += int(n)
        return (int(n) - int(errors)) / float(secs)

    def memory(self) -> None:
        """RSS of the plugin server once at least 10,000 requests went through it."""
        missing = 10_000 - self.plugin_requests
        if missing > 0:
            self.load({"mode": "closed", "duration": 600, "rounds": 1, "concurrency": 8, "warmup": 0,
                       "targets": [self.target("plugins-fill", "/v1/chat/completions", chat_body())],
                       "max_requests": missing})
        time.sleep(1.0)
        self.results["memory"] = {"requests": self.plugin_requests, "rss_mb": round(self.rss_mb(), 1),
                                  "rss_mb_after_warmup": self.rss_warm}

    def profile(self) -> None:
        """cProfile of the plugin server (started through bench/profiled_pluginserver.py)."""
        prof = PROF
        os.kill(self.pid, signal.SIGUSR1)  # drop start-up and warm-up
        time.sleep(0.5)
        n = 1000 if self.quick else 4000
        self.load({"mode": "open", "rate": min(self.args.rate, 100), "requests": n, "rounds": 1,
                   "concurrency": 8, "warmup": 0,
                   "targets": [self.target("plugins-profile", "/v1/chat/completions", chat_body())]})
        os.kill(self.pid, signal.SIGUSR1)
        time.sleep(1.0)
        text = io.StringIO()
        st = pstats.Stats(str(prof), stream=text)
        st.sort_stats("tottime").print_stats(45)
        st.sort_stats("cumulative").print_stats(r"aigw|kong_pdk|relay|plugins", 60)
        out = ROOT / "bench" / "results" / "profile.txt"
        out.write_text(f"cProfile of the plugin server, {n} plugin-path requests\n" + text.getvalue())
        total = sum(v[2] for v in st.stats.values())  # tottime summed = profiled CPU
        self.results["profile"] = {"requests": n, "file": str(out.relative_to(ROOT)),
                                   "profiled_ms_per_request": round(total / n * 1e3, 3)}
        print(text.getvalue()[:6000])

    def admin(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self.admin_url + path, method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            return orjson.loads(r.read())

    # ------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        self.results["machine"] = machine()
        if not self.args.profile:
            self.results["micro"] = micro(self.quick)
        with MockProvider(process=True, api_key=None) as mock:
            relay_port = free_port()
            env = gateway_env(mock.url)
            env.update({"AIGW_RELAY_PORT": str(relay_port), "AIGW_METRICS_PORT": str(free_port()),
                        "AIGW_REDIS_PREFIX": f"aigw-bench:{uuid.uuid4().hex[:8]}:"})
            if self.args.profile:
                env.update(profiled_env(tempfile.mkdtemp(prefix="aigw-bench-")))
            with StandIn(bench_config(relay_port, mock.url), env=env, plugins_dir=ROOT / "plugins") as kong:
                self.url, self.admin_url = kong.url, kong.admin_url
                self.load({"mode": "open", "rate": 100, "requests": 1, "rounds": 1, "warmup": 30,
                           "targets": [self.target("plugins-warm", "/v1/chat/completions", chat_body())]})
                self.pid = kong.pluginserver_pid()
                self.rss_warm = round(self.rss_mb(), 1)
                self.pids = {"plugin_server": self.pid, "standin": kong.proc.pid, "mock": mock._proc.pid}
                steps = [("latency", self.latency), ("latency, light load", self.latency_light),
                         ("ttft", self.ttft), ("cache hit", self.cache_hit), ("pdk calls", self.pdk_calls),
                         ("cpu split", self.cpu_split), ("throughput", self.throughput), ("memory", self.memory)]
                if self.args.profile:  # a profiled server is slower: profile only
                    steps = [("profile", self.profile)]
                for label, fn in steps:
                    t0 = time.time()
                    print(f"- {label} ...", file=sys.stderr, flush=True)
                    fn()
                    print(f"  {time.time() - t0:.1f}s", file=sys.stderr, flush=True)
        return self.results


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profiled_env(sock_dir: str) -> dict[str, str]:
    """Kong's pluginserver settings that start the plugin server under cProfile."""
    names = sorted(p.stem for p in (ROOT / "plugins").glob("*.py") if not p.name.startswith("_"))
    sock = os.path.join(sock_dir, "ai.sock")
    cmd = [sys.executable, str(ROOT / "bench" / "profiled_pluginserver.py"),
           str(PROF), "-d", str(ROOT / "plugins"),
           "-p", sock_dir, "--socket-name", "ai.sock", "-g", "--no-lua-style"]
    env = {}
    for i, n in enumerate(names):
        key = "KONG_PLUGINSERVER_" + n.replace("-", "_").upper()
        env[key + "_SOCKET"] = sock
        if i == 0:
            env[key + "_START_CMD"] = " ".join(cmd)
    return env


# ------------------------------------------------------------------ numbers
def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def compare(plugins: list[float], baseline: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(plugins), "n_baseline": len(baseline)}
    for q, label in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
        p, b = pct(plugins, q) * 1e3, pct(baseline, q) * 1e3
        out[f"plugins_{label}_ms"], out[f"baseline_{label}_ms"] = round(p, 3), round(b, 3)
        out[f"added_{label}_ms"] = round(p - b, 3)
    return out


def micro(quick: bool) -> dict[str, Any]:
    """Token counting and redaction MB/s (bench/bench_tokens.py, bench/bench_redact.py)."""
    import bench_redact
    import bench_tokens

    from aigw.redact import RedactConfig, scan_request

    text = bench_tokens.make_text(1 << 20)
    tokens = {r["tokenizer"]: r["mb_per_s"] for r in bench_tokens.bench_counting(text)}
    cfg = RedactConfig.from_dict({"restore": True})
    mixed, _, _ = bench_redact.mixed_text(1 << 20)
    size = len(mixed.encode())
    cfg.detector.find(mixed)
    t_find = bench_redact.best_of(lambda: cfg.detector.find(mixed), 3 if quick else 5)
    body = {"messages": [{"role": "user", "content": mixed}]}
    t_scan = bench_redact.best_of(lambda: scan_request(cfg, "chat", copy.deepcopy(body)), 3 if quick else 5)
    t_copy = bench_redact.best_of(lambda: copy.deepcopy(body))
    return {"tokens_mb_s": tokens, "redact_detect_mb_s": round(size / t_find / 1e6, 1),
            "redact_scan_mb_s": round(size / (t_scan - t_copy) / 1e6, 1)}


def machine() -> dict[str, Any]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release()}


def status(value: float, target: float, higher_is_better: bool = False) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "yes" if ok else "**no**"


def table(r: dict[str, Any]) -> str:
    lat, light, ttft, hit = r["latency"], r["latency_light"], r["ttft"], r["cache_hit"]
    tok = r["micro"]["tokens_mb_s"]
    o200k = next((v for k, v in tok.items() if k.startswith("o200k")), float("nan"))
    cl100k = next((v for k, v in tok.items() if k.startswith("cl100k")), float("nan"))
    rows = [
        ("Added latency p50, non-stream 2 KiB chat, %d req/s" % lat["rate"],
         f"{lat['added_p50_ms']:.2f} ms", "≤ 1.5 ms", status(lat["added_p50_ms"], 1.5)),
        ("Added latency p99", f"{lat['added_p99_ms']:.2f} ms", "≤ 5 ms", status(lat["added_p99_ms"], 5)),
        ("Added latency p50 / p99 at %d req/s (no queueing)" % light["rate"],
         f"{light['added_p50_ms']:.2f} / {light['added_p99_ms']:.2f} ms", "-", "-"),
        ("Added time to first token p50 (stream, %d req/s)" % ttft["rate"], f"{ttft['added_p50_ms']:.2f} ms", "≤ 5 ms",
         status(ttft["added_p50_ms"], 5)),
        ("Added time to first token p99 (stream)", f"{ttft['added_p99_ms']:.2f} ms", "-", "-"),
        ("Cache hit vs direct to mock, p50 / p99", f"{hit['added_p50_ms']:.2f} / {hit['added_p99_ms']:.2f} ms",
         "-", "-"),
        ("Throughput, %d connections (plugins / baseline)" % r["throughput"]["concurrency"],
         f"{r['throughput']['plugins_rps']:.0f} / {r['throughput']['baseline_rps']:.0f} req/s", "-", "-"),
        ("PDK calls per request (all plugins, access + log)", f"{r['pdk']['calls_per_request']:.1f}",
         "≤ 12", status(r["pdk"]["calls_per_request"], 12)),
        ("Plugin-server RPCs per request (events + PDK calls)", f"{r['pdk']['round_trips_per_request']:.1f}",
         "-", "-"),
        ("Plugin-server CPU per request", f"{r['cpu_ms_per_request']:.2f} ms", "-", "-"),
        ("Plugin-server RSS after %d requests (after warm-up: %.0f MB)"
         % (r["memory"]["requests"], r["memory"]["rss_mb_after_warmup"]), f"{r['memory']['rss_mb']:.0f} MB",
         "≤ 150 MB", status(r["memory"]["rss_mb"], 150)),
        ("Token counting, o200k_base (gpt-4o)", f"{o200k:.1f} MB/s", "≥ 20 MB/s", status(o200k, 20, True)),
        ("Token counting, cl100k_base (gpt-4)", f"{cl100k:.1f} MB/s", "≥ 20 MB/s", status(cl100k, 20, True)),
        ("Redaction, scan_request (1 MiB, ~1 % PII)", f"{r['micro']['redact_scan_mb_s']:.1f} MB/s",
         "≥ 10 MB/s", status(r["micro"]["redact_scan_mb_s"], 10, True)),
    ]
    out = ["| Measure | Result | Target | Met |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    pp = ", ".join(f"{k} {v}" for k, v in sorted(r["pdk"]["per_plugin"].items()))
    out.append("")
    out.append(f"PDK calls per request by plugin: {pp}.")
    cs = r.get("cpu_split_ms_per_request")
    if cs:
        out.append("CPU ms per request (sequential), plugins / baseline: " + ", ".join(
            f"{k} {cs['plugins'][k]:.2f} / {cs['baseline'][k]:.2f}" for k in cs["plugins"]) + ".")
    out.append(f"Raw latencies (ms), plugins / baseline: p50 {lat['plugins_p50_ms']:.2f} / "
               f"{lat['baseline_p50_ms']:.2f}, p99 {lat['plugins_p99_ms']:.2f} / {lat['baseline_p99_ms']:.2f}; "
               f"TTFT p50 {ttft['plugins_p50_ms']:.2f} / {ttft['baseline_p50_ms']:.2f}.")
    m = r["machine"]
    out.append(f"Machine: {m['nproc']} CPU ({m['cpu']}), Python {m['python']}, {m['date']}.")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (about a minute)")
    ap.add_argument("--profile", action="store_true",
                    help="only profile the plugin server (cProfile) under load: bench/results/profile.txt")
    ap.add_argument("--rate", type=int, default=200, help="requests/s of the latency test")
    ap.add_argument("--light-rate", type=int, default=50, help="requests/s of the light-load and stream tests")
    ap.add_argument("--no-wrk", action="store_true", help="throughput with bench/load.py even if wrk exists")
    ap.add_argument("--peers", action="store_true",
                    help="instead: side by side with LiteLLM and Portkey (bench/peers.py; installs them "
                         "into bench/.peers/ on first use) -> bench/results/peers.json")
    ap.add_argument("--litellm-workers", type=int, default=1, help="with --peers")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.peers:
        import peers
        peers.main((["--quick"] if args.quick else []) + ["--litellm-workers", str(args.litellm_workers)]
                   + (["--out", args.out] if args.out else []))
        return
    args.out = args.out or str(ROOT / "bench" / "results" / "latest.json")
    t0 = time.time()
    results = Bench(args).run()
    results["seconds"] = round(time.time() - t0, 1)
    results["quick"] = args.quick
    if args.profile:
        print(f"wrote bench/results/profile.txt ({results['seconds']}s)")
        return
    md = table(results)
    results["table_markdown"] = md
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    print(md)
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} ({results['seconds']}s)")


if __name__ == "__main__":
    main()
