"""Plugin server entries, query and process management, as Kong 3.x does.

kong/conf_loader/init.lua builds one entry per ``pluginserver_names`` item with
``pluginserver_<name>_socket`` (default ``<prefix>/<name>.socket``), ``_start_cmd`` and
``_query_cmd`` (dashes in the name become underscores in the keys; env vars ``KONG_<KEY>``).
kong/runloop/plugin_servers/process.lua runs each query_cmd, JSON-decodes its stdout and keeps only
element [1]; it spawns each start_cmd (``exec <cmd>``, stdout+stderr into Kong's log), respawns it
one second after it dies, and sends SIGTERM on shutdown. An entry without start_cmd is "managed
externally".

Our default: one entry per ``*.py`` in the plugins dir, all on ONE socket, only the first with a
start_cmd (kong-pdk serves every plugin of the directory from one process).
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from .. import REPO_ROOT
from .config import PluginInfo


def main_env_value(names: list[str]) -> str:
    """A ``KONG_NGINX_MAIN_ENV`` value that declares ``env NAME;`` for each name. Kong renders
    every ``nginx_main_<directive>`` as ``<directive> <value>;`` in nginx.conf's main block
    (kong/templates/nginx.lua 3.9.1, 9-12; key namespace ``nginx_main_`` in
    kong/conf_loader/constants.lua 113-117), so ``A; env B`` becomes ``env A; env B;``."""
    return "; env ".join(names)


# What the plugin server reads from its environment: our settings, the OpenTelemetry SDK's,
# and the cloud credential chains of botocore (bedrock) and google-auth (vertex).
FORWARDED_PREFIXES = ("AIGW_", "OTEL_", "AWS_")
FORWARDED_NAMES = ("GOOGLE_APPLICATION_CREDENTIALS",)


def forwarded(name: str) -> bool:
    return name.startswith(FORWARDED_PREFIXES) or name in FORWARDED_NAMES


def forward_aigw_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``KONG_NGINX_MAIN_ENV`` extended by every forwarded name in it
    (``AIGW_*``, ``OTEL_*``, ``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``): the rule of our
    Docker entrypoint (docker/entrypoint.sh), so that those settings reach the plugin server
    under Kong; for the stand-in's test helper and ``aigw_dev.dev``."""
    names = sorted(k for k in env if forwarded(k))
    if not names:
        return dict(env)
    value = main_env_value(names)
    prev = env.get("KONG_NGINX_MAIN_ENV")
    return {**env, "KONG_NGINX_MAIN_ENV": f"{prev}; env {value}" if prev else value}


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of an nginx worker, which Kong's start_cmd inherits.

    nginx removes every variable inherited from its parent except ``TZ`` and those named by
    ``env`` directives (nginx core module, directive ``env``; ``env NAME=value`` sets one). Kong
    spawns the start command from worker 0 with ``ngx_pipe.spawn`` and no ``environ`` option
    (kong/runloop/plugin_servers/process.lua 3.9.1, 152), i.e. with that environment; the
    ``/bin/sh`` running ``exec <start_cmd>`` then adds ``PWD`` (measured on Kong 3.9.1: the
    spawned server had exactly ``PWD``). ``env`` directives come from ``KONG_NGINX_MAIN_ENV``."""
    out: dict[str, str] = {}
    if "TZ" in env:
        out["TZ"] = env["TZ"]
    value = env.get("KONG_NGINX_MAIN_ENV")
    if value:
        # the rendered directive text is "env <value>;": split it back into statements
        for stmt in ("env " + value).split(";"):
            words = stmt.split(None, 1)
            if len(words) != 2 or words[0] != "env":
                continue
            name, eq, val = words[1].strip().partition("=")
            if eq:
                out[name] = val
            elif name in env:
                out[name] = env[name]
    return out


@dataclass
class ServerDef:
    name: str
    socket: str
    start_cmd: str | None
    query_cmd: str


def _script(name: str, module_args: list[str]) -> list[str]:
    """The console script from this venv, else ``python -m`` (console scripts not installed)."""
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    return [sys.executable, *module_args]


def _from_checkout(root: str, call: str) -> list[str]:
    return [sys.executable, "-c", (f"import sys; sys.path.insert(0, {root!r}); "
                                   f"from aigw.pluginserver import *; {call}")]


def default_server_defs(plugins_dir: str, prefix: str) -> list[ServerDef]:
    names = sorted(p.stem for p in Path(plugins_dir).glob("*.py") if not p.name.startswith("_"))
    if not names:
        return []
    sock_name = f"{names[0]}.sock"
    socket_path = os.path.join(prefix, sock_name)
    d = os.path.abspath(plugins_dir)
    start = _script("aigw-pluginserver", ["-m", "aigw.pluginserver"]) + [
        "-d", d, "-p", prefix, "--socket-name", sock_name, "-g", "--no-lua-style"]
    root = str(REPO_ROOT)
    if start[0] == sys.executable:
        # not installed: the worker's environment has no PYTHONPATH, so the command carries it
        start = ["/usr/bin/env", "PYTHONPATH=" + root] + start
    elif os.environ.get("PYTHONPATH"):
        # a checkout other than the installed one (PYTHONPATH) must win in the plugin server
        # too, without adding a variable to the environment Kong gives it
        start = _from_checkout(root, "main()") + start[1:]
    out = []
    for i, n in enumerate(names):
        query = _script("aigw-plugin-info", ["-m", "aigw.pluginserver", "plugin-info"]) + ["-d", d, n]
        if os.environ.get("PYTHONPATH") and query[0] != sys.executable:
            query = _from_checkout(root, "plugin_info_main(sys.argv[1:])") + query[1:]
        out.append(ServerDef(n, socket_path, shlex.join(start) if i == 0 else None, shlex.join(query)))
    return out


def server_defs(plugins_dir: str, prefix: str, env: dict[str, str]) -> list[ServerDef]:
    """Defaults, overridden by KONG_PLUGINSERVER_NAMES / KONG_PLUGINSERVER_<NAME>_* like conf_loader."""
    defaults = {d.name: d for d in default_server_defs(plugins_dir, prefix)}
    names_env = env.get("KONG_PLUGINSERVER_NAMES")
    names = [n.strip().lower() for n in names_env.split(",") if n.strip()] if names_env else list(defaults)
    out = []
    for n in names:
        key = "KONG_PLUGINSERVER_" + n.replace("-", "_").upper()
        base = defaults.get(n)
        socket = env.get(key + "_SOCKET") or (base.socket if base else os.path.join(prefix, f"{n}.socket"))
        start = env.get(key + "_START_CMD") or (base.start_cmd if base else None)
        query = env.get(key + "_QUERY_CMD") or (base.query_cmd if base else None)
        if not query:
            raise RuntimeError(f"query_command undefined for pluginserver {n}")
        out.append(ServerDef(n, socket, start, query))
    return out


def query_info(sd: ServerDef, env: dict[str, str]) -> PluginInfo:
    """process.lua query_external_plugin_info: run query_cmd, use ``(dump.Plugins or dump)[1]``."""
    # query_cmd is a shell command line: Kong runs it with io.popen (/bin/sh -c), and reads the
    # output whatever the exit status (kong/runloop/plugin_servers/process.lua 3.9.1, line 51)
    proc = subprocess.run(sd.query_cmd, shell=True, capture_output=True, env=env,  # noqa: S602
                          timeout=60, check=False)
    try:
        dump = orjson.loads(proc.stdout)
    except orjson.JSONDecodeError as exc:
        err = proc.stderr.decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"failed decoding plugin info for {sd.name}: {exc}; stderr: {err}") from None
    if isinstance(dump, dict):
        dump = dump.get("Plugins") or dump
    if not isinstance(dump, list) or not dump:
        raise RuntimeError(f"not a plugin info table: {sd.query_cmd}")
    info = dump[0]
    fields = info["Schema"]["fields"]
    config_fields: list = []
    for f in fields:
        if "config" in f:
            config_fields = f["config"].get("fields") or []
    return PluginInfo(info["Name"], int(info.get("Priority") or 0), info.get("Version"), config_fields,
                      list(info.get("Phases") or []), server=sd.name)


class Supervisor:
    """pluginserver_timer: spawn, forward output, respawn one second after death, SIGTERM on stop."""

    def __init__(self, sd: ServerDef, env: dict[str, str]):
        self.sd, self.env = sd, env
        self.proc: subprocess.Popen | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"pluginserver-{sd.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        next_spawn = 0.0
        while not self._stopping:
            delay = next_spawn - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if self._stopping:
                return
            # start_cmd is a shell command line: Kong spawns "exec " .. start_command with
            # ngx.pipe.spawn (process.lua 3.9.1, line 153), which runs a string with /bin/sh -c
            # (lua-resty-core lib/ngx/pipe.lua, pipe_spawn)
            self.proc = subprocess.Popen("exec " + self.sd.start_cmd, shell=True,  # noqa: S602
                                         env=worker_env(self.env),
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            next_spawn = time.monotonic() + 1
            sys.stderr.write(f"[standin] [pluginserver] started {self.sd.name}, pid {self.proc.pid}\n")
            prefix = f"[{self.sd.name}:{self.proc.pid}] ".encode()
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                sys.stderr.buffer.write(prefix + line)
                sys.stderr.flush()
            rc = self.proc.wait()
            if not self._stopping:
                sys.stderr.write(f"[standin] [pluginserver] '{self.sd.name}' terminated: exit {rc}\n")
            if rc == 127:
                sys.stderr.write(f"[standin] [pluginserver] start command not found: {self.sd.start_cmd}\n")
                return

    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def stop(self) -> None:
        self._stopping = True
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
