"""What one plugin-server event costs: a fake Kong speaking the MessagePack-RPC protocol over the
Unix socket to real plugin-server processes, side by side, interleaved rounds (issue 18).

    .venv/bin/python bench/bench_rpc.py                     # kong-pdk vs main's launcher vs this one
    .venv/bin/python bench/bench_rpc.py --before HEAD~3 --rounds 9 --events 4000 --json bench/results/rpc.json

Servers (each its own process, started once, all on the same plugin directory):
  kong-pdk  kong-pdk 0.36's own ``kong-python-pluginserver -g``
  before    ``aigw-pluginserver`` from the git ref ``--before`` (its ``aigw/`` extracted to a temp dir)
  after     ``aigw-pluginserver`` from this checkout

Scenarios (an access event of a test plugin written here):
  noop      the handler returns at once: StartInstance'd once, then HandleEvent -> "ret"
  pdk2      two PDK calls (get_header, set_header): HandleEvent, Step, Step -> "ret"
  exit      one terminal call: HandleEvent -> kong.response.exit (Kong sends nothing more)

The client sends what Kong 3.9.1 sends (kong/runloop/plugin_servers/rpc/mp_rpc.lua ``Rpc:call``
172-221: one request at a time per connection, notifications skipped; ``bridge_loop`` 264-298)
on a pool of ``--conns`` keep-alive connections used in turn. Measured per event: the server
process's CPU time (``/proc/<pid>/task/*/schedstat``, ns) and the client's wall time. Each round
runs every server once per scenario, servers in a rotated order; the figures are medians over
rounds. The ratios compare servers within each round.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

PLUGINS = {
    "noop": '''
version = "0.1.0"
priority = 10
Schema = ()
class Plugin:
    def __init__(self, config):
        self.config = config
    def access(self, kong):
        return
''',
    "pdk2": '''
version = "0.1.0"
priority = 20
Schema = ()
class Plugin:
    def __init__(self, config):
        self.config = config
    def access(self, kong):
        v = kong.request.get_header("x-test")
        kong.service.request.set_header("x-seen", str(v))
''',
    "exiter": '''
version = "0.1.0"
priority = 30
Schema = ()
class Plugin:
    def __init__(self, config):
        self.config = config
    def access(self, kong):
        kong.response.exit(200, "ok", {"X-A": "b"})
        raise __import__("gevent").GreenletExit  # as aigw/plugin_base.py after an exit
''',
}
SCENARIOS = {"noop": "noop", "pdk2": "pdk2", "exit": "exiter"}
TERMINAL = ("kong.response.exit", "kong.response.error")


class FakeKong:
    """The Kong side of the RPC: a pool of keep-alive connections, one call at a time each."""

    def __init__(self, path: str, conns: int):
        self.socks = []
        for _ in range(conns):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            self.socks.append((s, msgpack.Unpacker(strict_map_key=False)))
        self.msgid = 0
        self.turn = 0

    def call(self, method: str, arg: Any) -> Any:
        self.msgid += 1
        s, unpacker = self.socks[self.turn % len(self.socks)]
        self.turn += 1
        s.sendall(msgpack.packb([0, self.msgid, method, [arg]]))
        while True:
            for msg in unpacker:
                if msg[0] == 2:
                    continue  # notification (serverPid)
                assert msg[0] == 1 and msg[1] == self.msgid, msg
                if msg[2] is not None:
                    raise RuntimeError(msg[2])
                return msg[3]
            data = s.recv(4096)  # mp_rpc.lua: c:receiveany(4096)
            if not data:
                raise RuntimeError("connection closed")
            unpacker.feed(data)

    def event(self, iid: int) -> None:
        step = self.call("plugin.HandleEvent", {"InstanceId": iid, "EventName": "access"})
        eid = step["EventId"]
        while step["Data"] != "ret":
            m = step["Data"]["Method"]
            if m in TERMINAL:
                return
            result = "v" if m == "kong.request.get_header" else True
            step = self.call("plugin.Step", {"EventId": eid, "Data": result})

    def close(self) -> None:
        for s, _ in self.socks:
            s.close()


class Server:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], path: str):
        self.name, self.path = name, path
        # cwd: not a checkout, or ``python -m`` would import its aigw first
        self.proc = subprocess.Popen(cmd, env=env, cwd=os.path.dirname(path), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

    def cpu_ns(self) -> int:
        total = 0
        for t in os.listdir(f"/proc/{self.proc.pid}/task"):
            with open(f"/proc/{self.proc.pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        return total

    def wait_ready(self, timeout: float = 60.0) -> None:
        sys.path.insert(0, str(ROOT))
        from aigw.pluginserver import answers

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited: {self.proc.stderr.read().decode()[-2000:]}")
            if os.path.exists(self.path) and answers(self.path, 2.0):
                return
            time.sleep(0.2)
        raise SystemExit(f"{self.name} not ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def extract(ref: str, into: Path) -> str:
    """``aigw/`` of git ref ``ref`` under ``into``; the commit hash."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", ref], check=True, capture_output=True,
                            text=True).stdout.strip()
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "aigw"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    return commit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="main", help="git ref of the 'before' launcher (default main)")
    ap.add_argument("--servers", default="kong-pdk,before,after")
    ap.add_argument("--scenarios", default="noop,pdk2,exit")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--events", type=int, default=3000, help="events per server, scenario and round")
    ap.add_argument("--conns", type=int, default=4, help="keep-alive connections of the fake Kong")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    names = args.servers.split(",")
    scenarios = args.scenarios.split(",")

    tmp = Path(tempfile.mkdtemp(prefix="aigw-bench-rpc-"))
    plugins = tmp / "plugins"
    plugins.mkdir()
    for name, src in PLUGINS.items():
        (plugins / f"{name}.py").write_text(src)
    before_commit = None
    servers: dict[str, Server] = {}
    try:
        for name in names:
            prefix = tmp / name
            prefix.mkdir()
            path = str(prefix / "ps.sock")
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            common = ["-d", str(plugins), "-p", str(prefix), "--socket-name", "ps.sock", "-g", "--no-lua-style"]
            if name == "kong-pdk":
                cmd = [sys.executable, str(BIN / "kong-python-pluginserver"), *common]
            elif name == "before":
                src = tmp / "before-src"
                src.mkdir()
                before_commit = extract(args.before, src)
                env["PYTHONPATH"] = str(src)
                cmd = [sys.executable, "-m", "aigw.pluginserver", *common]
            elif name == "after":
                env["PYTHONPATH"] = str(ROOT)
                cmd = [sys.executable, "-m", "aigw.pluginserver", *common]
            else:
                raise SystemExit(f"unknown server {name}")
            servers[name] = Server(name, cmd, env, path)
        for s in servers.values():
            s.wait_ready()
        clients, iids = {}, {}
        for name, s in servers.items():
            k = FakeKong(s.path, args.conns)
            clients[name] = k
            iids[name] = {sc: k.call("plugin.StartInstance", {"Name": p, "Config": "{}"})["Id"]
                          for sc, p in SCENARIOS.items()}
            for sc in scenarios:  # warm-up
                for _ in range(200):
                    k.event(iids[name][sc])
        cpu: dict[str, dict[str, list[float]]] = {n: {sc: [] for sc in scenarios} for n in names}
        wall: dict[str, dict[str, list[float]]] = {n: {sc: [] for sc in scenarios} for n in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for sc in scenarios:
                for name in order:
                    s, k, iid = servers[name], clients[name], iids[name][sc]
                    c0, w0 = s.cpu_ns(), time.perf_counter()
                    for _ in range(args.events):
                        k.event(iid)
                    w1, c1 = time.perf_counter(), s.cpu_ns()
                    cpu[name][sc].append((c1 - c0) / args.events / 1000)
                    wall[name][sc].append((w1 - w0) / args.events * 1e6)
            print(f"round {r + 1}/{args.rounds}: " + "  ".join(
                f"{n}/{sc} {cpu[n][sc][-1]:.1f}" for sc in scenarios for n in names), file=sys.stderr)
        report: dict[str, Any] = {"rounds": args.rounds, "events": args.events, "conns": args.conns,
                                  "before": {"ref": args.before, "commit": before_commit},
                                  "unit": "microseconds per event", "servers": {}, "ratios": {}}
        print(f"\n{'scenario':8s} {'server':9s} {'server CPU us/event':>20s} {'wall us/event':>14s}")
        for sc in scenarios:
            for n in names:
                c, w = statistics.median(cpu[n][sc]), statistics.median(wall[n][sc])
                report["servers"].setdefault(n, {})[sc] = {"cpu_us": round(c, 1), "wall_us": round(w, 1),
                                                           "cpu_us_rounds": [round(x, 1) for x in cpu[n][sc]]}
                print(f"{sc:8s} {n:9s} {c:20.1f} {w:14.1f}")
        if "after" in names:
            for base in (n for n in names if n != "after"):
                for sc in scenarios:
                    rs = [a / b for a, b in zip(cpu["after"][sc], cpu[base][sc])]
                    report["ratios"][f"after/{base} {sc}"] = round(statistics.median(rs), 3)
            print("\nCPU ratios (median of per-round ratios): " + ", ".join(
                f"{k} {v:.2f}" for k, v in report["ratios"].items()))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        for k in clients.values():
            k.close()
    finally:
        for s in servers.values():
            s.stop()


if __name__ == "__main__":
    main()
