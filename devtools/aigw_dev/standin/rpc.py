"""MessagePack-RPC client for the plugin server, as kong/runloop/plugin_servers/rpc/mp_rpc.lua.

Request ``[0, msgid, method, [args]]``, response ``[1, msgid, error, result]``, notification
``[2, label, args]`` (mp_rpc.lua ``Rpc:call``). Connections come from a keepalive pool (Kong's
``c:setkeepalive()``); every socket read has a timeout (Kong's cosocket timeouts) so a plugin that
never answers cannot hang a request forever. Instances are cached per plugin id and ``__seq__``
and restarted on a "no plugin instance" error (plugin.lua ``get_instance_id`` /
mp_rpc.lua ``Rpc:handle_event``).
"""
from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import gevent
import msgpack
import orjson


class RpcError(Exception):
    """The plugin server answered an error, or the socket failed."""


class _StaleConnection(Exception):
    pass


class Connection:
    def __init__(self, path: str, timeout: float):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Pool:
    """One keepalive pool per socket path, shared by every plugin's RPC object (Kong's cosocket
    pool is keyed by ``unix:<path>``), plus the worker's instance table (plugin.lua
    ``running_instances``, module-level: one per worker) and, for tests, what the server issued."""

    def __init__(self, path: str, timeout: float, size: int = 64):
        self.path, self.timeout, self.size = path, timeout, size
        self.conns: list[Connection] = []
        self.lock = threading.Lock()
        # plugin id -> {"seq", "id", "plugin_name", "conf_plugin_id", "rpc"}; id None = being started
        self.running: dict[str, dict[str, Any]] = {}
        self.issued: dict[int, str] = {}  # instance id -> plugin name of its latest StartInstance
        self.misrouted: list[dict[str, Any]] = []
        self.started: list[tuple[str, dict[str, Any]]] = []

    def get(self) -> Connection:
        with self.lock:
            if self.conns:
                return self.conns.pop()
        return Connection(self.path, self.timeout)

    def put(self, c: Connection) -> None:
        with self.lock:
            if len(self.conns) < self.size:
                self.conns.append(c)
                return
        c.close()

    def drop_all(self) -> list[Connection]:
        with self.lock:
            stale, self.conns = self.conns, []
        return stale


class RpcClient:
    """The RPC object of ONE external plugin (mp_rpc.lua ``new(plugin)``: each plugin has its own
    msg ids and its own ``pluginserver_pid``), over the socket's shared pool; greenlet safe."""

    def __init__(self, path: str, timeout: float = 60.0, pool: Pool | None = None):
        self.path = path
        self.timeout = timeout
        self.pool = pool or Pool(path, timeout)
        self._msgid = 0
        self.server_pid: int | None = None

    @property
    def started(self) -> list[tuple[str, dict[str, Any]]]:
        return self.pool.started

    def close(self) -> None:
        for c in self.pool.drop_all():
            c.close()

    def call(self, method: str, *args: Any) -> Any:
        try:
            return self._call(method, args, pooled_ok=True)
        except _StaleConnection:
            # a keepalive connection the server closed (e.g. it was respawned): retry on a new one
            return self._call(method, args, pooled_ok=False)

    def _call(self, method: str, args: tuple, pooled_ok: bool) -> Any:
        self._msgid += 1
        msgid = self._msgid
        pooled = bool(self.pool.conns) and pooled_ok
        for c in ([] if pooled_ok else self.pool.drop_all()):
            c.close()
        try:
            c = self.pool.get()
        except OSError as exc:
            raise RpcError(f"trying to connect: {exc}") from None
        received = False
        returned = False
        try:
            c.sock.sendall(msgpack.packb([0, msgid, method, list(args)], use_bin_type=True))
            while True:
                for msg in c.unpacker:
                    if msg[0] == 2:
                        self._notification(msg[1], msg[2])
                        continue
                    if msg[0] != 1 or msg[1] != msgid:
                        raise RpcError("unexpected RPC response ID from plugin server")
                    returned = True
                    self.pool.put(c)
                    if msg[2] is not None:
                        raise RpcError(str(msg[2]))
                    return msg[3]
                data = c.sock.recv(65536)
                if not data:
                    if pooled and not received:
                        raise _StaleConnection()
                    raise RpcError("no data")
                received = True
                c.unpacker.feed(data)
        except (OSError, ValueError, msgpack.ExtraData) as exc:
            c.close()
            if pooled and not received and isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                raise _StaleConnection() from None
            kind = "timeout" if isinstance(exc, (TimeoutError, socket.timeout)) else exc.__class__.__name__
            raise RpcError(f"plugin server socket: {kind}: {exc}") from None
        except BaseException:
            if not returned:
                c.close()
            raise

    def _notification(self, label: str, args: Any) -> None:
        """plugin.lua 3.9.1 ``rpc_notifications:serverPid`` (188-199): a pid different from the
        one this plugin's RPC object saw before drops the instances started through it."""
        if label == "serverPid":
            pid = int(args)
            if self.server_pid is not None and pid != self.server_pid:
                for key, info in list(self.pool.running.items()):
                    if info.get("rpc") is self:
                        self.pool.running.pop(key, None)
            self.server_pid = pid

    def instance_id(self, name: str, conf: dict[str, Any]) -> int:
        """plugin.lua 3.9.1 ``get_instance_id`` (237-303): reuse the cached instance of this
        plugin id and ``__seq__``; wait (0.1 s steps, 10 s at most) while another request starts
        it; else claim the slot, StartInstance, and close the previous instance."""
        key = conf["__plugin_id"]
        running = self.pool.running
        info = running.get(key)
        waited = 0
        while info is not None and info.get("id") is None:
            gevent.sleep(0.1)
            waited += 1
            if waited > 100:
                running.pop(key, None)
                raise RpcError(f"Could not claim instance_id for {name} (key: {key})")
            info = running.get(key)
        if info is not None and info.get("seq") == conf["__seq__"] and info.get("conf_plugin_id") == key:
            return info["id"]
        old_id = info["id"] if info else None
        if info is None:
            info = {"seq": conf["__seq__"], "conf_plugin_id": key}
            running[key] = info
        else:
            info["id"] = None
        try:
            # mp_rpc.lua 3.9.1 Rpc:call_start_instance (224-242): Config = cjson_encode(conf)
            status = self.call("plugin.StartInstance", {"Name": name, "Config": orjson.dumps(conf).decode()})
        except RpcError:
            running.pop(key, None)
            raise
        self.pool.issued[status["Id"]] = status.get("Name") or name
        self.pool.started.append((name, masked(conf)))
        info.update({"id": status["Id"], "plugin_name": name, "seq": conf["__seq__"], "conf_plugin_id": key,
                     "rpc": self})
        if old_id is not None:
            with contextlib.suppress(RpcError):
                self.call("plugin.CloseInstance", old_id)
        return status["Id"]

    def check_event(self, name: str, iid: int, step: dict[str, Any]) -> None:
        """Test instrumentation (Kong has none): record an event that reached an instance of
        another plugin, known from the server's latest StartInstance answer for this id or from
        the ``Name`` our launcher adds to HandleEvent answers."""
        holder = step.get("Name") if isinstance(step, dict) else None
        issued = self.pool.issued.get(iid)
        if (holder is not None and holder != name) or (issued is not None and issued != name):
            self.pool.misrouted.append({"plugin": name, "instance": iid, "holder": holder or issued})

    def reset_plugin(self, name: str) -> None:
        """plugin.lua ``reset_instance`` -> ``reset_instances_for_plugin`` (201-224)."""
        for k, v in list(self.pool.running.items()):
            if v.get("plugin_name") == name:
                self.pool.running.pop(k, None)


def masked(conf: Any) -> Any:
    """A copy of a config with every value that came from a vault reference replaced by
    ``"***"`` (the fields a record's ``$refs`` names), for the stand-in's test admin API."""
    if isinstance(conf, list):
        return [masked(v) for v in conf]
    if not isinstance(conf, dict):
        return conf
    out = {k: masked(v) for k, v in conf.items()}
    for field, ref in (conf.get("$refs") or {}).items():
        if isinstance(ref, str):
            out[field] = "***"
        elif isinstance(ref, list) and isinstance(out.get(field), list):
            out[field] = ["***" if r is not None else v for r, v in zip(ref, out[field], strict=False)] + out[field][len(ref):]
        elif isinstance(ref, dict) and isinstance(out.get(field), dict):
            out[field] = {k: ("***" if k in ref else v) for k, v in out[field].items()}
    return out
