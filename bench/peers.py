"""Side by side with the peers: ``bench/run.py --peers [--quick]`` (or ``bench/peers.py``).

Installs the peers on first use into bench/.peers/ (git-ignored, reused afterwards):
LiteLLM proxy from PyPI into its own venv, Portkey's gateway from npm into its own
node dir. Then starts ONE mock provider (``python -m aigw_dev.mock``, key check off) and, all
calling that mock with an OpenAI-compatible chat route:

- ``direct``  the mock itself (the reference for "added");
- ``plain``   the Kong stand-in, route with jwt + acl only, straight to the mock;
- ``aigw``    the stand-in, reference route with all five AI plugins (as bench/run.py);
- ``litellm`` LiteLLM proxy, one worker, model list pointing at the mock;
- ``portkey`` Portkey's gateway (Node), provider ``openai`` with custom host = the mock.

Every measure runs the systems in interleaved rounds (the order rotates each round),
one system at a time, so drift on the shared machine spreads over all of them. CPU time
is read from /proc/<pid>/stat (utime + stime) of every process of the system (process
tree) around each round. Prints a Markdown table, writes bench/results/peers.json.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# the gateway's test harness through bench/run.py's imports (one place to change if it moves)
from run import (
    MockProvider,
    StandIn,
    bench_config,
    chat_body,
    demo_token,
    free_port,
    gateway_env,
    machine,
    pct,
    proc_cpu_s,
)

PEERS_DIR = ROOT / "bench" / ".peers"
LITELLM_VERSION = "1.106.12"  # the issue measured 1.106; NEVER 1.107.0 (known compromised)
LITELLM_FORBIDDEN = {"1.107.0"}
PORTKEY_VERSION = "1.15.2"  # @portkey-ai/gateway; the issue measured 1.15
# Portkey's package declares ^ ranges; resolve its dependencies as of its release day so a
# later release of one of them cannot change what is measured (npm install --before)
PORTKEY_BEFORE = "2026-08-24T00:00:00Z"
PORTKEY_HONO_NODE_SERVER = "1.13.8"  # see install_portkey
LOAD = ROOT / "bench" / "load.py"
STREAMS = ROOT / "bench" / "streams.py"
STREAM_DELAY_MS = 20
STREAM_CHUNKS = 50  # data events per stream: role + 47 content + finish + usage
SHORT_CHUNKS = 10   # the second chunk count of the CPU-per-chunk regression
MOCK_MODEL = "gpt-4o"
MOCK_STREAM_MODEL = f"gpt-4o-stream-delay-{STREAM_DELAY_MS}"  # aigw_dev.mock: 20 ms between events
SYSTEMS = ("direct", "plain", "aigw", "litellm", "portkey")


# ------------------------------------------------------------------ install
def _run(cmd: list[str], log: Path, **kw: Any) -> None:
    with open(log, "ab") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, **kw)


def install_litellm() -> Path:
    if LITELLM_VERSION in LITELLM_FORBIDDEN:
        raise SystemExit(f"refusing LiteLLM {LITELLM_VERSION}: known compromised")
    venv = PEERS_DIR / f"litellm-{LITELLM_VERSION}"
    ok = venv / ".bench-installed"
    if not ok.exists():
        print(f"- installing litellm[proxy]=={LITELLM_VERSION} into {venv.relative_to(ROOT)} ...",
              file=sys.stderr, flush=True)
        PEERS_DIR.mkdir(parents=True, exist_ok=True)
        log = PEERS_DIR / "litellm-install.log"
        _run([sys.executable, "-m", "venv", str(venv)], log)
        _run([str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"], log)
        ok.write_text(LITELLM_VERSION + "\n")
    return venv


def install_portkey() -> Path:
    """@portkey-ai/gateway into its own node dir. Its dependencies are resolved as of its
    release day (npm --before), and @hono/node-server is held at PORTKEY_HONO_NODE_SERVER:
    from 1.14 on, hono's global Response override keeps the (immutable) headers of a
    fetched response, and Portkey 1.15.2's stream path then fails every stream with 500
    ``TypeError: immutable`` when it adds its own headers (found on node 20)."""
    node_dir = PEERS_DIR / f"portkey-{PORTKEY_VERSION}"
    ok = node_dir / ".bench-installed"
    stamp = f"{PORTKEY_VERSION} @hono/node-server {PORTKEY_HONO_NODE_SERVER} before {PORTKEY_BEFORE}\n"
    if not ok.exists() or ok.read_text() != stamp:
        if not shutil.which("npm") or not shutil.which("node"):
            raise SystemExit("Portkey needs node and npm (apt-get install nodejs npm)")
        print(f"- installing @portkey-ai/gateway@{PORTKEY_VERSION} into {node_dir.relative_to(ROOT)} ...",
              file=sys.stderr, flush=True)
        shutil.rmtree(node_dir, ignore_errors=True)
        node_dir.mkdir(parents=True)
        (node_dir / "package.json").write_bytes(orjson.dumps({
            "name": "aigw-bench-portkey", "private": True,
            "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
            "overrides": {"@hono/node-server": PORTKEY_HONO_NODE_SERVER}}, option=orjson.OPT_INDENT_2))
        _run(["npm", "install", "--no-audit", "--no-fund", f"--before={PORTKEY_BEFORE}", "--prefix", str(node_dir)],
             PEERS_DIR / "portkey-install.log")
        ok.write_text(stamp)
    return node_dir


# ------------------------------------------------------------------ processes
def tree(pid: int) -> list[int]:
    """pid and all its live descendants (from /proc/*/stat ppid)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    out = {}
    for name, ps in pids.items():
        total = 0.0
        for p in ps:
            try:
                total += proc_cpu_s(p)
            except OSError:
                pass
        out[name] = total
    return out


def wait_http(url: str, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{what} did not answer {url} in {timeout:.0f}s; see {log}")


class Peer:
    """A peer gateway process started in its own process group."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], health: str, log: Path):
        self.name, self.log = name, log
        self.logf = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        wait_http(health, self.proc, 120, name, log)

    def pids(self) -> list[int]:
        return tree(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.logf.close()


def start_litellm(venv: Path, mock_url: str, workdir: Path, workers: int) -> tuple[Peer, str]:
    port = free_port()
    base = mock_url.rstrip("/") + "/v1"
    cfg = {"model_list": [
        {"model_name": "chat", "litellm_params": {"model": f"openai/{MOCK_MODEL}", "api_base": base,
                                                 "api_key": "mock-key"}},
        {"model_name": "chat-stream", "litellm_params": {"model": f"openai/{MOCK_STREAM_MODEL}",
                                                        "api_base": base, "api_key": "mock-key"}}],
        "litellm_settings": {"telemetry": False}}
    (workdir / "litellm.yaml").write_text(yaml.safe_dump(cfg))
    key = "sk-bench-" + secrets.token_hex(16)
    env = {**os.environ, "LITELLM_MASTER_KEY": key, "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"}
    env.pop("PYTHONPATH", None)
    peer = Peer("litellm", [str(venv / "bin" / "litellm"), "--config", str(workdir / "litellm.yaml"),
                            "--host", "127.0.0.1", "--port", str(port), "--num_workers", str(workers)],
                env, f"http://127.0.0.1:{port}/health/liveliness", workdir / "litellm.log")
    peer.url, peer.key = f"http://127.0.0.1:{port}", key  # type: ignore[attr-defined]
    return peer, key


def start_portkey(node_dir: Path, workdir: Path) -> Peer:
    port = free_port()
    script = node_dir / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    peer = Peer("portkey", ["node", str(script), f"--port={port}", "--headless"], dict(os.environ),
                f"http://127.0.0.1:{port}/", workdir / "portkey.log")
    peer.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return peer


def peers_config(relay_port: int, mock_url: str) -> dict[str, Any]:
    """bench/run.py's config plus a model whose target streams 20 ms apart."""
    doc = bench_config(relay_port, mock_url)
    ai = next(s for s in doc["services"] if s["name"] == "ai")
    plugins = {p["name"]: p for p in ai["plugins"]}
    models = plugins["ai-router"]["config"]["models"]
    chat = next(m for m in models if m["name"] == "chat")
    stream = copy.deepcopy(chat)
    stream.pop("aliases", None)
    stream.update({"name": "chat-stream", "strategy": "weighted",
                   "targets": [{"provider": "openai", "model": MOCK_STREAM_MODEL, "tags": ["zdr"]}]})
    models.append(stream)
    # price overrides live in ai-router's one price table (docs/pricing.md)
    plugins["ai-router"]["config"].setdefault("prices", {})[MOCK_STREAM_MODEL] = {"input": 2.5, "output": 10}
    return doc


# ------------------------------------------------------------------ bodies
def stream_body(model: str, chunks: int) -> bytes:
    """A stream whose answer is ``chunks`` data events: role + content + finish + usage
    (the mock sends 4 characters per content event)."""
    text = ("abc " * 64)[: 4 * (chunks - 3)]
    return orjson.dumps({"model": model, "stream": True, "stream_options": {"include_usage": True},
                         "max_tokens": 256, "temperature": 0.7,
                         "messages": [{"role": "user", "content": "Please answer. REPLY:" + text}]})


def nonstream_body(model: str) -> bytes:
    b = orjson.loads(chat_body())
    b["model"] = model
    return orjson.dumps(b)


# ------------------------------------------------------------------ the bench
class PeerBench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.quick = args.quick
        self.r: dict[str, Any] = {"notes": []}
        self.systems: dict[str, dict[str, Any]] = {}

    def note(self, text: str) -> None:
        print(f"  note: {text}", file=sys.stderr, flush=True)
        self.r["notes"].append(text)

    # -------------------------------------------------------- helpers
    def add(self, name: str, url: str, headers: dict[str, str], model: str, stream_model: str,
            pids: Callable[[], list[int]], procs: Callable[[], dict[str, list[int]]]) -> None:
        self.systems[name] = {"url": url, "headers": headers, "model": model, "stream_model": stream_model,
                              "pids": pids, "procs": procs}

    def order(self, rnd: int) -> list[str]:
        names = [n for n in SYSTEMS if n in self.systems]
        k = rnd % len(names)
        return names[k:] + names[:k]

    def load(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._sub(LOAD, spec)

    def _sub(self, script: Path, spec: dict[str, Any]) -> Any:
        with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
            f.write(orjson.dumps(spec))
        try:
            out = subprocess.run([sys.executable, str(script), f.name], check=True, capture_output=True,
                                 cwd=str(ROOT), timeout=900)
        finally:
            os.unlink(f.name)
        return orjson.loads(out.stdout)

    def target(self, name: str, body: bytes, stream: bool = False) -> dict[str, Any]:
        s = self.systems[name]
        return {"name": name, "url": s["url"], "headers": s["headers"], "body": body.decode(), "stream": stream}

    def measured(self, name: str, fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
        """Run fn; CPU seconds of each process of the system during it."""
        procs = self.systems[name]["procs"]()
        before = cpu_of(procs)
        res = fn()
        after = cpu_of(procs)
        return res, {k: after[k] - before[k] for k in procs}

    # -------------------------------------------------------- phases
    def one_client(self) -> None:
        rounds, n = (2, 100) if self.quick else (4, 250)
        lat: dict[str, list[float]] = {n_: [] for n_ in self.systems}
        cpu: dict[str, dict[str, float]] = {n_: {} for n_ in self.systems}
        reqs: dict[str, int] = {n_: 0 for n_ in self.systems}
        errors: dict[str, dict[str, int]] = {n_: {} for n_ in self.systems}
        for rnd in range(rounds):
            for name in self.order(rnd):
                spec = {"mode": "closed", "duration": 300, "rounds": 1, "concurrency": 1, "warmup": 5,
                        "max_requests": n,
                        "targets": [self.target(name, nonstream_body(self.systems[name]["model"]))]}
                res, c = self.measured(name, lambda spec=spec: self.load(spec))
                r = res[name]
                lat[name] += r["latency_s"]
                reqs[name] += r["ok"] + sum(r["errors"].values())
                merge(errors[name], r["errors"])
                for k, v in c.items():
                    cpu[name][k] = cpu[name].get(k, 0.0) + v
        out = {}
        for name in self.systems:
            out[name] = {**percentiles(lat[name]), "errors": errors[name], "requests": reqs[name],
                         "cpu_ms_per_request": {k: round(v / max(1, reqs[name]) * 1e3, 3)
                                                for k, v in cpu[name].items()}}
            out[name]["cpu_ms_per_request_total"] = round(sum(out[name]["cpu_ms_per_request"].values()), 3)
        add_relative(out, "direct", ("p50_ms", "p99_ms"))
        self.r["one_client"] = {"rounds": rounds, "requests_per_round": n, "systems": out}

    def fixed_rate(self, rate: int) -> None:
        rounds = 2 if self.quick else 3
        n = int(rate * (2 if self.quick else 5))
        lat: dict[str, list[float]] = {n_: [] for n_ in self.systems}
        cpu: dict[str, dict[str, float]] = {n_: {} for n_ in self.systems}
        reqs = {n_: 0 for n_ in self.systems}
        errors: dict[str, dict[str, int]] = {n_: {} for n_ in self.systems}
        for rnd in range(rounds):
            for name in self.order(rnd):
                spec = {"mode": "open", "rate": rate, "requests": n, "rounds": 1, "concurrency": 32,
                        "warmup": 5, "targets": [self.target(name, nonstream_body(self.systems[name]["model"]))]}
                res, c = self.measured(name, lambda spec=spec: self.load(spec))
                r = res[name]
                lat[name] += r["latency_s"]
                reqs[name] += r["ok"] + sum(r["errors"].values())
                merge(errors[name], r["errors"])
                for k, v in c.items():
                    cpu[name][k] = cpu[name].get(k, 0.0) + v
        out = {}
        for name in self.systems:
            out[name] = {**percentiles(lat[name]), "errors": errors[name], "requests": reqs[name],
                         "cpu_ms_per_request": {k: round(v / max(1, reqs[name]) * 1e3, 3)
                                                for k, v in cpu[name].items()}}
        add_relative(out, "direct", ("p50_ms", "p99_ms"))
        self.r.setdefault("fixed_rate", {})[str(rate)] = {"rate": rate, "rounds": rounds,
                                                          "requests_per_round": n, "systems": out}

    def syscalls(self) -> None:
        strace = shutil.which("strace")
        if not strace:
            self.note("syscalls per request skipped: strace is not installed (apt-get install strace)")
            return
        n = 100 if self.quick else 300
        out = {}
        for name in self.systems:
            pids = self.systems[name]["pids"]()
            if not pids:
                continue
            self.load({"mode": "closed", "duration": 60, "rounds": 1, "concurrency": 1, "warmup": 5,
                       "max_requests": 5, "targets": [self.target(name, nonstream_body(self.systems[name]["model"]))]})
            fd, path = tempfile.mkstemp(prefix=f"aigw-strace-{name}-", suffix=".txt")
            os.close(fd)
            cmd = [strace, "-c", "-f", "-o", path]
            for p in pids:
                cmd += ["-p", str(p)]
            st = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.5)  # attach to every thread
            res = self.load({"mode": "closed", "duration": 300, "rounds": 1, "concurrency": 1, "warmup": 0,
                             "max_requests": n,
                             "targets": [self.target(name, nonstream_body(self.systems[name]["model"]))]})
            time.sleep(0.5)
            st.send_signal(signal.SIGINT)
            try:
                st.wait(30)
            except subprocess.TimeoutExpired:
                st.kill()
            calls, top = parse_strace(Path(path).read_text())
            os.unlink(path)
            done = res[name]["ok"] or 1
            out[name] = {"requests": res[name]["ok"], "syscalls_per_request": round(calls / done, 1),
                         "top": {k: round(v / done, 1) for k, v in top[:6]}}
        self.r["syscalls"] = {"requests": n, "note": "strace -c -f on every process of the system, "
                              "one client, non-stream; strace slows the processes, the counts stay",
                              "systems": out}

    def streams(self, key: str, concurrency: int, per_worker: int, chunks: int = STREAM_CHUNKS,
                rounds: int = 1) -> None:
        out: dict[str, Any] = {}
        acc: dict[str, dict[str, Any]] = {n_: {"ttfb_s": [], "gaps_s": [], "events": [], "errors": {},
                                               "cpu": {}, "streams": 0, "seconds": 0.0} for n_ in self.systems}
        for rnd in range(rounds):
            for name in self.order(rnd):
                body = stream_body(self.systems[name]["stream_model"], chunks)
                spec = {"url": self.systems[name]["url"], "headers": self.systems[name]["headers"],
                        "body": body.decode(), "concurrency": concurrency, "per_worker": per_worker,
                        "timeout": 60, "ramp_s": 0.5}
                res, c = self.measured(name, lambda spec=spec: self._sub(STREAMS, spec))
                a = acc[name]
                a["ttfb_s"] += res["ttfb_s"]
                a["gaps_s"] += res["gaps_s"]
                a["events"] += res["events"]
                a["seconds"] += res["seconds"]
                merge(a["errors"], res["errors"])
                a["streams"] += concurrency * per_worker
                for k, v in c.items():
                    a["cpu"][k] = a["cpu"].get(k, 0.0) + v
                time.sleep(1.0)  # let connections close before the next system
        for name, a in acc.items():
            ok = len(a["ttfb_s"])
            out[name] = {
                "streams": a["streams"], "ok": ok, "errors": a["errors"],
                "ttfb_p50_ms": ms(pct(a["ttfb_s"], 0.5)), "ttfb_p99_ms": ms(pct(a["ttfb_s"], 0.99)),
                "gap_p50_ms": ms(pct(a["gaps_s"], 0.5)), "gap_p90_ms": ms(pct(a["gaps_s"], 0.9)),
                "gap_p99_ms": ms(pct(a["gaps_s"], 0.99)),
                "events_per_stream": round(sum(a["events"]) / ok, 1) if ok else None,
                "cpu_ms_per_stream": {k: round(v / max(1, a["streams"]) * 1e3, 3) for k, v in a["cpu"].items()},
            }
        for s in out.values():
            if "plain" in out:
                s["ttfb_p50_vs_plain_ms"] = diff(s["ttfb_p50_ms"], out["plain"]["ttfb_p50_ms"])
                s["ttfb_p99_vs_plain_ms"] = diff(s["ttfb_p99_ms"], out["plain"]["ttfb_p99_ms"])
            s["gap_p90_vs_direct_ms"] = diff(s["gap_p90_ms"], out["direct"]["gap_p90_ms"])
            s["gap_p99_vs_direct_ms"] = diff(s["gap_p99_ms"], out["direct"]["gap_p99_ms"])
        self.r.setdefault("streams", {})[key] = {"concurrency": concurrency, "per_worker": per_worker,
                                                 "chunks": chunks, "delay_ms": STREAM_DELAY_MS,
                                                 "rounds": rounds, "systems": out}

    def cpu_per_chunk(self) -> None:
        """Regression over two chunk counts: (CPU/stream at 50 − at 10) / 40, per process."""
        long_, short = self.r["streams"]["200"], self.r["streams"]["200-short"]
        out = {}
        for name, s in long_["systems"].items():
            sh = short["systems"].get(name)
            if not sh or not s["ok"] or not sh["ok"]:
                continue
            out[name] = {k: round((v - sh["cpu_ms_per_stream"].get(k, 0.0)) / (STREAM_CHUNKS - SHORT_CHUNKS) * 1e3, 1)
                         for k, v in s["cpu_ms_per_stream"].items()}
            out[name]["per_stream_fixed_ms"] = {
                k: round(sh["cpu_ms_per_stream"].get(k, 0.0) - SHORT_CHUNKS * out[name][k] / 1e3, 3)
                for k in s["cpu_ms_per_stream"]}
        self.r["cpu_us_per_chunk"] = {"method": f"(CPU per stream with {STREAM_CHUNKS} chunks - with "
                                                f"{SHORT_CHUNKS}) / {STREAM_CHUNKS - SHORT_CHUNKS}, 200 "
                                                "concurrent streams, per process, µs",
                                      "systems": out}

    # -------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        self.r["machine"] = machine()
        self.r["load_before"] = uptime()
        self.r["versions"] = {"litellm": LITELLM_VERSION, "portkey": PORTKEY_VERSION,
                              "portkey_dependencies_before": PORTKEY_BEFORE,
                              "portkey_hono_node_server": PORTKEY_HONO_NODE_SERVER,
                              "node": node_version(), "litellm_workers": self.args.litellm_workers}
        venv = install_litellm()
        node_dir = install_portkey()
        work = Path(tempfile.mkdtemp(prefix="aigw-peers-"))
        started: list[Peer] = []
        try:
            with MockProvider(process=True, api_key=None) as mock:
                relay_port = free_port()
                env = gateway_env(mock.url)
                env.update({"AIGW_RELAY_PORT": str(relay_port), "AIGW_METRICS_PORT": str(free_port()),
                            "AIGW_REDIS_PREFIX": f"aigw-bench-peers:{uuid.uuid4().hex[:8]}:"})
                with StandIn(peers_config(relay_port, mock.url), env=env, plugins_dir=ROOT / "plugins") as kong:
                    litellm, key = start_litellm(venv, mock.url, work, self.args.litellm_workers)
                    started.append(litellm)
                    portkey = start_portkey(node_dir, work)
                    started.append(portkey)
                    jwt = {"Authorization": f"Bearer {demo_token()}", "Content-Type": "application/json"}
                    mk = {"Authorization": "Bearer mock-key", "Content-Type": "application/json"}
                    ps = kong.pluginserver_pid()
                    standin = kong.proc.pid
                    self.add("direct", mock.url.rstrip("/") + "/v1/chat/completions", mk, MOCK_MODEL,
                             MOCK_STREAM_MODEL, list, dict)
                    self.add("plain", kong.url + "/direct/v1/chat/completions", jwt, MOCK_MODEL, MOCK_STREAM_MODEL,
                             lambda: [standin], lambda: {"standin": [standin]})
                    self.add("aigw", kong.url + "/v1/chat/completions", jwt, "chat", "chat-stream",
                             lambda: [standin, ps], lambda: {"standin": [standin], "plugin_server": [ps]})
                    self.add("litellm", litellm.url + "/v1/chat/completions",  # type: ignore[attr-defined]
                             {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                             "chat", "chat-stream", litellm.pids, lambda: {"litellm": litellm.pids()})
                    self.add("portkey", portkey.url + "/v1/chat/completions",  # type: ignore[attr-defined]
                             {**mk, "x-portkey-provider": "openai",
                              "x-portkey-custom-host": mock.url.rstrip("/") + "/v1"},
                             MOCK_MODEL, MOCK_STREAM_MODEL, portkey.pids, lambda: {"node": portkey.pids()})
                    self.r["mock_pid_excluded"] = True
                    self.check()
                    q = self.quick
                    steps: list[tuple[str, Callable[[], None]]] = [
                        ("one client", self.one_client),
                        ("fixed rate 50/s", lambda: self.fixed_rate(50)),
                        ("fixed rate 150/s", lambda: self.fixed_rate(150)),
                        ("syscalls", self.syscalls),
                        ("200 streams", lambda: self.streams("200", 200, 1 if q else 2, rounds=1 if q else 2)),
                        ("200 short streams", lambda: self.streams("200-short", 200, 1, SHORT_CHUNKS,
                                                                   rounds=1 if q else 2)),
                        ("cpu per chunk", self.cpu_per_chunk),
                        ("1000 streams", lambda: self.streams("1000", 1000, 1)),
                    ]
                    for label, fn in steps:
                        t0 = time.time()
                        print(f"- {label} ...", file=sys.stderr, flush=True)
                        try:
                            fn()
                        except Exception as exc:  # noqa: BLE001 - one failed measure must not lose the others
                            self.note(f"{label} failed: {type(exc).__name__}: {exc}")
                        print(f"  {time.time() - t0:.1f}s", file=sys.stderr, flush=True)
        finally:
            for p in started:
                p.stop()
            shutil.rmtree(work, ignore_errors=True)
        self.r["load_after"] = uptime()
        return self.r

    def check(self) -> None:
        """Every system answers a chat and a stream through the mock before measuring."""
        for name in self.systems:
            r = self.load({"mode": "closed", "duration": 30, "rounds": 1, "concurrency": 1, "warmup": 0,
                           "max_requests": 3, "targets": [self.target(name, nonstream_body(self.systems[name]["model"]))]})
            if r[name]["ok"] != 3:
                raise SystemExit(f"{name} does not answer a chat request: {r[name]['errors']}")
            s = self._sub(STREAMS, {"url": self.systems[name]["url"], "headers": self.systems[name]["headers"],
                                    "body": stream_body(self.systems[name]["stream_model"], SHORT_CHUNKS).decode(),
                                    "concurrency": 1, "per_worker": 1})
            if not s["ttfb_s"]:
                self.note(f"{name}: a single stream request fails ({s['errors']}); its stream figures are errors")


# ------------------------------------------------------------------ numbers
def ms(v: float) -> float | None:
    return None if math.isnan(v) else round(v * 1e3, 2)


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 2)


def merge(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def percentiles(lat: list[float]) -> dict[str, Any]:
    return {"n": len(lat), "p50_ms": ms(pct(lat, 0.5)), "p90_ms": ms(pct(lat, 0.9)), "p99_ms": ms(pct(lat, 0.99))}


def add_relative(out: dict[str, dict[str, Any]], ref: str, keys: tuple[str, ...]) -> None:
    for s in out.values():
        for k in keys:
            s["added_" + k] = diff(s[k], out[ref][k])
    if "plain" in out and "aigw" in out:
        for s in out.values():
            a = s.get("added_p50_ms")
            s["added_p50_vs_aigw"] = round(a / out["aigw"]["added_p50_ms"], 2) \
                if a is not None and out["aigw"].get("added_p50_ms") else None


def parse_strace(text: str) -> tuple[int, list[tuple[str, int]]]:
    """The ``total`` calls and the top syscalls of an ``strace -c`` summary."""
    total, rows = 0, []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or not parts[3].isdigit():
            continue  # header, separator lines
        if parts[-1] == "total":
            total = int(parts[3])
        else:
            rows.append((parts[-1], int(parts[3])))
    rows.sort(key=lambda x: -x[1])
    return total or sum(c for _, c in rows), rows


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return Path("/proc/loadavg").read_text().strip()


def node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "?"


LABEL = {"direct": "mock, direct", "plain": "stand-in, plain route (jwt + acl)",
         "aigw": "stand-in + all five AI plugins", "litellm": f"LiteLLM proxy {LITELLM_VERSION}",
         "portkey": f"Portkey gateway {PORTKEY_VERSION}"}


def f2(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def errs(e: dict[str, int]) -> str:
    return str(sum(e.values())) + (" (" + ", ".join(f"{k}: {v}" for k, v in e.items()) + ")" if e else "")


def table(r: dict[str, Any]) -> str:
    out: list[str] = []
    oc = r.get("one_client", {}).get("systems", {})
    fr = r.get("fixed_rate", {})
    sc = r.get("syscalls", {}).get("systems", {})
    names = [n for n in SYSTEMS if n in oc]
    out.append("Latency and CPU (non-stream 2 KiB chat). *Added* = system − direct to mock, per percentile.")
    out.append("")
    head = "| System | one client: added p50 / p99 ms | " + " | ".join(
        f"{k} req/s: added p50 / p99 ms" for k in fr) + " | CPU ms/request (one client), per process | syscalls/request |"
    out.append(head)
    out.append("|" + "---|" * (4 + len(fr)))
    for n in names:
        o = oc[n]
        cells = [f"{LABEL[n]}", f"{f2(o['added_p50_ms'])} / {f2(o['added_p99_ms'])}"
                 if n != "direct" else f"({f2(o['p50_ms'])} / {f2(o['p99_ms'])} raw)"]
        for v in fr.values():
            s = v["systems"].get(n, {})
            e = sum(s.get("errors", {}).values())
            cells.append((f"{f2(s.get('added_p50_ms'))} / {f2(s.get('added_p99_ms'))}" if n != "direct"
                          else f"({f2(s.get('p50_ms'))} / {f2(s.get('p99_ms'))} raw)") + (f", {e} errors" if e else ""))
        cpu = o["cpu_ms_per_request"]
        cells.append("-" if not cpu else f"{o['cpu_ms_per_request_total']:.2f} ("
                     + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()) + ")")
        cells.append(f2(sc.get(n, {}).get("syscalls_per_request")))
        out.append("| " + " | ".join(cells) + " |")
    if "aigw" in oc and oc["aigw"].get("added_p50_ms"):
        ratios = ", ".join(f"{n} {oc[n]['added_p50_vs_aigw']:.2f}×" for n in names
                           if n not in ("direct", "aigw") and oc[n].get("added_p50_vs_aigw") is not None)
        out.append("")
        out.append(f"One-client added p50 relative to ours: {ratios}.")
    for key, st in r.get("streams", {}).items():
        out.append("")
        out.append(f"Streams `{key}`: {st['concurrency']} concurrent × {st['per_worker']} per client × "
                   f"{st['rounds']} round(s), {st['chunks']} events {st['delay_ms']} ms apart.")
        out.append("")
        out.append("| System | ok / streams | errors | TTFB p50 / p99 ms | TTFB vs plain p50 / p99 ms | "
                   "event gap p90 / p99 ms | gap vs direct p90 / p99 ms | CPU ms per stream |")
        out.append("|---|---|---|---|---|---|---|---|")
        for n in SYSTEMS:
            s = st["systems"].get(n)
            if not s:
                continue
            cpu = s["cpu_ms_per_stream"]
            out.append(f"| {LABEL[n]} | {s['ok']} / {s['streams']} | {errs(s['errors'])} | "
                       f"{f2(s['ttfb_p50_ms'])} / {f2(s['ttfb_p99_ms'])} | "
                       f"{f2(s.get('ttfb_p50_vs_plain_ms'))} / {f2(s.get('ttfb_p99_vs_plain_ms'))} | "
                       f"{f2(s['gap_p90_ms'])} / {f2(s['gap_p99_ms'])} | "
                       f"{f2(s['gap_p90_vs_direct_ms'])} / {f2(s['gap_p99_vs_direct_ms'])} | "
                       + (", ".join(f"{k} {v:.2f}" for k, v in cpu.items()) or "-") + " |")
    cpc = r.get("cpu_us_per_chunk")
    if cpc:
        out.append("")
        out.append("CPU per chunk (µs; " + cpc["method"] + "): " + "; ".join(
            f"{n}: " + ", ".join(f"{k} {v}" for k, v in s.items() if k != "per_stream_fixed_ms")
            for n, s in cpc["systems"].items() if n != "direct") + ".")
    out.append("")
    m = r["machine"]
    out.append(f"Machine: {m['nproc']} CPU ({m['cpu']}), Python {m['python']}, node {r['versions']['node']}, "
               f"{m['date']}. Load before: `{r['load_before']}`; after: `{r.get('load_after', '?')}`.")
    for n in r["notes"]:
        out.append(f"Note: {n}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="aigw side by side with LiteLLM and Portkey")
    ap.add_argument("--quick", action="store_true", help="a few minutes instead of ~15")
    ap.add_argument("--litellm-workers", type=int, default=1)
    ap.add_argument("--install-only", action="store_true", help="install the peers into bench/.peers and stop")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "peers.json"))
    args = ap.parse_args(argv)
    # SIGTERM (or SIGINT, ignored in a background job) must still stop the peers, the
    # stand-in and the mock: turn it into SystemExit so the finally blocks run
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.install_only:
        install_litellm(), install_portkey()
        return
    t0 = time.time()
    r = PeerBench(args).run()
    r["seconds"] = round(time.time() - t0, 1)
    r["quick"] = args.quick
    md = table(r)
    r["table_markdown"] = md
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2) + b"\n")
    print(md)
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} ({r['seconds']}s)")


if __name__ == "__main__":
    main()
