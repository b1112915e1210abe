"""Launch and query kong-pdk's Python plugin server (the only module importing kong_pdk).

``aigw-pluginserver`` takes kong-pdk's own ``kong-python-pluginserver`` arguments
(``kong_pdk.cli.parse``) and runs kong-pdk's ``PluginServer`` with four changes, all on our side
of the protocol (Kong/kong tag 3.9.1):

* gevent monkey-patching first: kong-pdk's ``-g`` mode spawns greenlets but never patches the
  standard library, so our relay and Redis clients would block the whole server.
* **The socket is bound before the plugins load.** Kong serves traffic as soon as nginx runs and
  spawns the start command from a worker timer (``kong/runloop/plugin_servers/process.lua``
  ``pluginserver_timer``, 153); until the socket exists every AI request fails ("no such file or
  directory"). Loading our plugins takes seconds; with the socket already listening, Kong's
  connect succeeds and its calls wait in the backlog until we accept them.
* **Instance ids never repeat across restarts.** kong-pdk numbers instances 0, 1, 2... again in
  every process, while Kong's workers keep their cached ids (``plugin_servers/plugin.lua``
  ``get_instance_id``, 237-303): after a respawn a cached id names another plugin's instance. Ours are
  ``generation << 20 | plugin slot << 15 | n``: the generation is a counter kept next to the
  socket (``<socket>.gen``) and bumped by every process, the slot is the plugin's index among the
  loaded plugin modules. A stale id is unknown to the new process, so HandleEvent answers
  "no plugin instance", which makes Kong reset and restart it (``mp_rpc.lua``
  ``Rpc:handle_event``, 301-320); an id whose slot does not name the instance's plugin is refused the
  same way. Ids stay below 2^31.
* **Every answer is preceded by a ``serverPid`` notification** ``[2, "serverPid", pid]``: Kong
  reads notifications on any call (``mp_rpc.lua Rpc:call``, 172-221) and, when the pid differs from the
  one it saw before, drops that plugin's cached instances (``plugin.lua``
  ``rpc_notifications:serverPid``, 188-199). kong-pdk never sends it. It goes on every answer, not once per
  connection, because Kong's per-plugin RPC objects share one keepalive pool per socket.

HandleEvent answers also carry ``Name`` (the instance's plugin); Kong reads only ``EventId`` and
``Data`` (``mp_rpc.lua bridge_loop``, 264-298), the stand-in checks it.

``aigw-plugin-info -d DIR NAME`` is the ``pluginserver_<name>_query_cmd`` Kong runs with
``io.popen`` (kong/runloop/plugin_servers/process.lua ``query_external_plugin_info``): it prints a
JSON array whose first (and only) element is ``PluginServer.get_plugin_info(NAME)``. kong-pdk 0.36's
own ``--dump-plugin-info`` cannot serve here: it unpacks a dict as a tuple and prints msgpack.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any


GEN_BITS, SLOT_BITS, N_BITS = 11, 5, 15  # 31 bits: Kong's Lua numbers and msgpack ints hold them
MAX_GEN = (1 << GEN_BITS) - 1


def next_generation(path: str) -> int:
    """Bump the generation counter kept in ``path`` (1..2047, wrapping); random if unwritable."""
    import random

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 32).strip()
            prev = int(raw) if raw.isdigit() else random.randint(1, MAX_GEN)
            gen = prev % MAX_GEN + 1
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, str(gen).encode())
            return gen
        finally:
            os.close(fd)
    except OSError:
        return random.randint(1, MAX_GEN)


def _server_class():
    from kong_pdk.exception import PluginServerException
    from kong_pdk.server import PluginServer

    class AigwPluginServer(PluginServer):
        """kong-pdk's PluginServer with instance ids unique across restarts (module docstring)."""

        def __init__(self, *args, gen_file: str, **kw):
            super().__init__(*args, **kw)
            self.gen_file = gen_file
            self.slots = {name: i for i, name in enumerate(sorted(self.plugins)[: 1 << SLOT_BITS])}
            self.generation = next_generation(gen_file)
            self.next_n: dict[str, int] = {}

        def _new_id(self, name: str) -> int:
            n = self.next_n.get(name, 0)
            if n >= 1 << N_BITS:  # this generation's ids for the plugin are used up: take a new one
                self.generation, self.next_n = next_generation(self.gen_file), {}
                n = 0
            self.next_n[name] = n + 1
            return (self.generation << (SLOT_BITS + N_BITS)) | (self.slots[name] << N_BITS) | n

        def start_instance(self, cfg):
            name = cfg["Name"]
            if name not in self.slots:
                raise PluginServerException("%s not initizlied" % name)
            self.i_lock.acquire()
            try:
                self.instance_id = self._new_id(name)
            finally:
                self.i_lock.release()
            # kong-pdk's own start_instance takes ``self.instance_id`` as the id (under i_lock);
            # two concurrent starts cannot interleave here: gevent switches only on I/O
            return super().start_instance(cfg)

        def handle_event(self, event):
            iid = event.get("InstanceId")
            ins = self.instances.get(iid) if isinstance(iid, int) else None
            slot = (iid >> N_BITS) & ((1 << SLOT_BITS) - 1) if isinstance(iid, int) else -1
            if ins is None or self.slots.get(ins.name) != slot:
                raise PluginServerException("no plugin instance #%s" % iid)
            out = super().handle_event(event)
            out["Name"] = ins.name
            return out

    return AigwPluginServer


def _listener(path: str, backlog: int):
    """Bind and listen on the Unix socket now (before the plugins load)."""
    from gevent import socket as gsocket

    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    sock = gsocket.socket(gsocket.AF_UNIX, gsocket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(backlog)
    return sock


def _serve(ps, sock) -> None:
    """Answer MessagePack-RPC requests on ``sock`` like kong-pdk's listener, each answer
    preceded by the serverPid notification."""
    import traceback

    import msgpack
    from gevent import sleep as gsleep
    from gevent import spawn as gspawn
    from gevent.server import StreamServer
    from kong_pdk.exception import PDKException, PluginServerException
    from kong_pdk.listener import watchdog

    notice = msgpack.packb([2, "serverPid", os.getpid()])
    methods: dict[str, Any] = {}

    def method(name: str):
        fn = methods.get(name)
        if fn is None:
            ns, _, cmd = name.partition(".")
            if ns != "plugin" or not cmd:
                return None
            snake = "".join("_" + c.lower() if c.isupper() else c for c in cmd).lstrip("_")
            fn = methods[name] = getattr(ps, snake, None)
        return fn

    def handle(conn, _address) -> None:
        unpacker = msgpack.Unpacker(strict_map_key=False)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                unpacker.feed(data)
                for msg in unpacker:
                    answer(conn, msg)
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            ps.logger.warn("rpc connection closed: %s" % type(exc).__name__)

    def answer(conn, msg) -> None:
        if not (isinstance(msg, list) and len(msg) == 4 and isinstance(msg[3], list)):
            raise ValueError("not a MessagePack-RPC request")
        _, msgid, name, args = msg
        fn = method(name)
        err, result = None, None
        if fn is None:
            err = "RPC for %s is not supported" % name
        else:
            try:
                result = fn(*args)
            except (PluginServerException, PDKException) as exc:
                ps.logger.warn("rpc: #%d error: %s" % (msgid, exc))
                err = str(exc)
            except Exception as exc:
                ps.logger.error("rpc: #%d exception: %s" % (msgid, traceback.format_exc()))
                err = str(exc)
        conn.sendall(notice + msgpack.packb([1, msgid, err, result]))

    gspawn(watchdog, gsleep, ps.logger)  # exit when Kong (the parent) is gone, as kong-pdk does
    StreamServer(sock, handle).serve_forever()


def main() -> None:
    """Console script ``aigw-pluginserver``: same argv as ``kong-python-pluginserver``."""
    from gevent import monkey

    monkey.patch_all()
    from kong_pdk import cli

    args = cli.parse()
    if args.dump_info or args.dump_all_info or not args.gevent:
        cli.start_server()  # kong-pdk's own paths (dumps, threading/multiprocessing modes)
        return
    from kong_pdk.logger import Logger

    path = os.path.join(args.prefix, args.socket_name)
    sock = _listener(path, args.listen_queue_size)
    _warm_prices()  # Kong's first connections wait in the listen queue meanwhile
    ps = _server_class()(loglevel=Logger.WARNING - args.verbose, plugin_dir=args.directory,
                         use_gevent=True, lua_style=not args.no_lua_style, gen_file=path + ".gen")
    cli.display_lua_style_notice(not args.no_lua_style, ps)
    ps.logger.info("server (gevent) listening at path %s, instance generation %d" % (path, ps.generation))
    try:
        _serve(ps, sock)
    except KeyboardInterrupt:
        ps.logger.info("polite exit requested, terminating...")


def _warm_prices() -> None:
    """Load the price catalogue (~0.5 s) before serving, not on the first request."""
    try:
        from .cost.pricing import PriceTable
        PriceTable.default()
    except Exception as exc:  # the first request loads it (and reports) instead
        print(f"aigw: price catalogue not preloaded: {type(exc).__name__}", file=sys.stderr)


def plugin_info(plugins_dir: str, name: str) -> dict:
    """The info dict kong-pdk reports for one plugin (loads the plugin modules, starts nothing)."""
    from kong_pdk.logger import Logger
    from kong_pdk.server import PluginServer

    # kong-pdk's Logger and the plugin modules write to stdout; stdout must carry only the JSON
    with contextlib.redirect_stdout(sys.stderr):
        ps = PluginServer(loglevel=Logger.WARNING, plugin_dir=plugins_dir, use_gevent=True)
        return ps.get_plugin_info(name)


def plugin_info_main(argv: list[str] | None = None) -> None:
    """Console script ``aigw-plugin-info -d PLUGINS_DIR NAME``: a one-element JSON array."""
    import orjson

    parser = argparse.ArgumentParser(prog="aigw-plugin-info", description=__doc__)
    parser.add_argument("-d", "--plugins-directory", dest="directory", required=True)
    parser.add_argument("name")
    args = parser.parse_args(argv)
    try:
        info = plugin_info(args.directory, args.name)
    except Exception as exc:  # kong-pdk raises PluginServerException("<name> not initizlied")
        print(f"aigw-plugin-info: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    sys.stdout.buffer.write(orjson.dumps([info]))
    sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


def answers(socket_path: str, timeout: float = 2.0) -> bool:
    """True when the plugin server on ``socket_path`` answers an RPC (``plugin.GetStatus``)
    within ``timeout``: its socket exists AND its plugins are loaded. Kong's own health check
    (``kong health``) only checks that nginx runs, and Kong serves traffic before the plugin
    server is up."""
    import socket

    import msgpack

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(socket_path)
        s.sendall(msgpack.packb([0, 1, "plugin.GetStatus", []]))
        unpacker = msgpack.Unpacker(strict_map_key=False)
        while True:
            data = s.recv(65536)
            if not data:
                return False
            unpacker.feed(data)
            for msg in unpacker:
                if msg[0] == 1:
                    return msg[1] == 1 and msg[2] is None
    except (OSError, ValueError):
        return False
    finally:
        s.close()


def check_main(argv: list[str]) -> None:
    """``python -m aigw.pluginserver check SOCKET [TIMEOUT]``: exit 0 when the server answers."""
    if not argv:
        print("usage: python -m aigw.pluginserver check SOCKET [TIMEOUT]", file=sys.stderr)
        raise SystemExit(2)
    ok = answers(argv[0], float(argv[1]) if len(argv) > 1 else 2.0)
    if not ok:
        print(f"plugin server on {argv[0]} does not answer", file=sys.stderr)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    # ``python -m aigw.pluginserver plugin-info -d DIR NAME`` when the console scripts are absent
    if sys.argv[1:2] == ["plugin-info"]:
        plugin_info_main(sys.argv[2:])
    elif sys.argv[1:2] == ["check"]:
        check_main(sys.argv[2:])
    else:
        main()
