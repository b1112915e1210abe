"""MessagePack-RPC client for the plugin server, as kong/runloop/plugin_servers/rpc/mp_rpc.lua.

Request ``[0, msgid, method, [args]]``, response ``[1, msgid, error, result]``, notification
``[2, label, args]`` (mp_rpc.lua ``Rpc:call``). Connections come from a keepalive pool (Kong's
``c:setkeepalive()``); every socket read has a timeout (Kong's cosocket timeouts) so a plugin that
never answers cannot hang a request forever. Instances are cached per plugin id and ``__seq__``
and restarted on a "no plugin instance" error (plugin.lua ``get_instance_id`` /
mp_rpc.lua ``Rpc:handle_event``).
"""
from __future__ import annotations

import socket
import threading
from typing import Any

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
        try:
            self.sock.close()
        except OSError:
            pass


class RpcClient:
    """One plugin server socket; thread/greenlet safe."""

    def __init__(self, path: str, timeout: float = 60.0, pool_size: int = 64):
        self.path = path
        self.timeout = timeout
        self.pool_size = pool_size
        self._pool: list[Connection] = []
        self._lock = threading.Lock()
        self._msgid = 0
        self.server_pid: int | None = None
        # plugin id -> (seq, instance id); plugin.lua running_instances
        self.instances: dict[str, tuple[int, int, str]] = {}

    def _get(self) -> Connection:
        with self._lock:
            if self._pool:
                return self._pool.pop()
        return Connection(self.path, self.timeout)

    def _put(self, c: Connection) -> None:
        with self._lock:
            if len(self._pool) < self.pool_size:
                self._pool.append(c)
                return
        c.close()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for c in pool:
            c.close()

    def call(self, method: str, *args: Any) -> Any:
        try:
            return self._call(method, args, pooled_ok=True)
        except _StaleConnection:
            # a keepalive connection the server closed (e.g. it was respawned): retry on a new one
            return self._call(method, args, pooled_ok=False)

    def _call(self, method: str, args: tuple, pooled_ok: bool) -> Any:
        with self._lock:
            self._msgid += 1
            msgid = self._msgid
            pooled = bool(self._pool) and pooled_ok
            if not pooled_ok:
                stale, self._pool = self._pool, []
            else:
                stale = []
        for c in stale:
            c.close()
        try:
            c = self._get()
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
                    self._put(c)
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
        # plugin.lua rpc_notifications:serverPid — a new server pid invalidates every instance
        if label == "serverPid":
            pid = int(args)
            if self.server_pid is not None and pid != self.server_pid:
                self.instances.clear()
            self.server_pid = pid

    def instance_id(self, name: str, conf: dict[str, Any]) -> int:
        """plugin.lua get_instance_id: reuse the instance for this plugin id and __seq__."""
        key = conf["__plugin_id"]
        cached = self.instances.get(key)
        if cached and cached[0] == conf["__seq__"]:
            return cached[1]
        status = self.call("plugin.StartInstance", {"Name": name, "Config": orjson.dumps(conf).decode()})
        self.instances[key] = (conf["__seq__"], status["Id"], name)
        if cached:
            try:
                self.call("plugin.CloseInstance", cached[1])
            except RpcError:
                pass
        return status["Id"]

    def reset_plugin(self, name: str) -> None:
        """plugin.lua reset_instances_for_plugin."""
        for k, v in list(self.instances.items()):
            if v[2] == name:
                self.instances.pop(k, None)
