"""Test helper: run the stand-in (with ``--strict-pdk``) as a subprocess on free ports.

    with StandIn({"_format_version": "3.0", "services": [...]}, plugins_dir="plugins") as kong:
        requests.get(kong.url + "/v1/models")
        assert kong.stats()["unimplemented_pdk"] == []
"""
from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import yaml

from aigw.pluginserver import answers

from .. import REPO_ROOT, child_pythonpath
from .process import forward_aigw_env


def free_port() -> int:
    """A port that is free now, from a range no other process of the test run draws from.

    Below Linux's ephemeral range (32768-60999 by default): a port the kernel hands out for
    bind(0) is also the kind it hands to outgoing connections, and one of those could take it
    before the process it is meant for binds it. Below the Redis topology tests' ports
    (tests/redis_topology.py: 20000-45000, +10000 for a Cluster's bus). And one slice per
    pytest-xdist worker (PYTEST_XDIST_WORKER=gw0, gw1, ...), so two workers never draw the same."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    size = 1500
    lo = 5000 + (index % 10) * size
    for _ in range(200):
        port = random.randint(lo, lo + size - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StandInError(RuntimeError):
    """The stand-in did not become ready (its stderr is in the message)."""


class StandIn:
    def __init__(self, config: str | Path | dict[str, Any], env: dict[str, str] | None = None,
                 plugins_dir: str | Path = REPO_ROOT / "plugins", port: int | None = None,
                 admin_port: int | None = None, timeout: float = 30.0, extra_args: list[str] | None = None,
                 forward_aigw: bool = True, wait_pluginserver: bool = True):
        self.config, self.env, self.plugins_dir = config, env, Path(plugins_dir)
        self.port, self.admin_port = port or free_port(), admin_port or free_port()
        self.timeout, self.extra_args = timeout, list(extra_args or [])
        self.forward_aigw, self.wait_pluginserver = forward_aigw, wait_pluginserver
        self.proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._log = bytearray()
        self._log_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> StandIn:
        self._tmp = tempfile.TemporaryDirectory(prefix="aigw-standin-")
        tmp = Path(self._tmp.name)
        if isinstance(self.config, dict):
            cfg_path = tmp / "kong.yml"
            cfg_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        else:
            cfg_path = Path(self.config)
        prefix = tmp / "prefix"
        prefix.mkdir()
        env = dict(os.environ)
        env.update(self.env or {})
        if self.forward_aigw:
            # as docker/entrypoint.sh: every AIGW_* setting gets an nginx `env` directive, the
            # only way a variable reaches a plugin server Kong spawns (process.worker_env)
            env = forward_aigw_env(env)
        env["PYTHONPATH"] = child_pythonpath(env.get("PYTHONPATH"))
        cmd = [sys.executable, "-m", "aigw_dev.standin", "--config", str(cfg_path), "--port", str(self.port),
               "--admin-port", str(self.admin_port), "--plugins-dir", str(self.plugins_dir),
               "--prefix", str(prefix), "--strict-pdk", *self.extra_args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True, cwd=str(REPO_ROOT))
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                time.sleep(0.1)
                raise StandInError(f"stand-in exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.admin_url + "/status", timeout=1) as r:
                    if r.status == 200 and (not self.wait_pluginserver or self.pluginservers_answer()):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        logs = self.logs()
        self.stop()
        raise StandInError(f"stand-in not ready after {self.timeout}s:\n{logs}")

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._log_lock:
                self._log.extend(line)

    def logs(self) -> str:
        with self._log_lock:
            return self._log.decode(errors="replace")

    def _admin(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self.admin_url + path, method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            return orjson.loads(r.read())

    def reload(self, doc: dict[str, Any]) -> None:
        """Replace the declarative config, as ``POST /config`` does on a DB-less Kong."""
        req = urllib.request.Request(self.admin_url + "/config", method="POST", data=orjson.dumps(doc),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def stats(self) -> dict[str, Any]:
        return self._admin("GET", "/_standin/stats")

    def reset_stats(self) -> None:
        self._admin("POST", "/_standin/stats/reset")

    def started_instances(self) -> list[dict[str, Any]]:
        """Every ``plugin.StartInstance`` so far: ``{"name", "config"}`` (secrets masked)."""
        return self._admin("GET", "/_standin/instances")["started"]

    def pluginservers_answer(self, timeout: float = 1.0) -> bool:
        """The compose healthcheck's test: every plugin server socket answers an RPC."""
        sockets = self._admin("GET", "/_standin/pluginserver")["sockets"]
        return all(answers(s, timeout) for s in sockets)

    def pluginserver_pid(self) -> int | None:
        pids = self._admin("GET", "/_standin/pluginserver")["pids"]
        return next((p for p in pids.values() if p), None)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
