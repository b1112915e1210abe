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
import errno
import fcntl
import gc
import itertools
import os
import random
import signal
import socket
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sized
from typing import TYPE_CHECKING, Any

import gevent
import msgpack
import orjson
from gevent import GreenletExit, get_hub, getcurrent, monkey, spawn
from gevent import sleep as gsleep
from gevent import socket as gsocket
from gevent.event import Event
from kong_pdk import cli
from kong_pdk.exception import PDKException, PluginServerException
from kong_pdk.listener import watchdog
from kong_pdk.logger import Logger
from kong_pdk.pdk import FakeClasses
from kong_pdk.server import PluginServer

if TYPE_CHECKING:
    from greenlet import greenlet

GEN_BITS, SLOT_BITS, N_BITS = 11, 5, 15  # 31 bits: Kong's Lua numbers and msgpack ints hold them
MAX_GEN = (1 << GEN_BITS) - 1


def next_generation(path: str) -> int:
    """Bump the generation counter kept in ``path`` (1..2047, wrapping); random if unwritable."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
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


# kong-pdk publishes no type information, so mypy sees its PluginServer as Any
class AigwPluginServer(PluginServer):  # type: ignore[misc]
    """kong-pdk's PluginServer with instance ids unique across restarts (module docstring)."""

    def __init__(self, *args: Any, gen_file: str, **kw: Any) -> None:
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

    def start_instance(self, cfg: dict[str, Any]) -> Any:
        name = cfg["Name"]
        if name not in self.slots:
            raise PluginServerException(f"{name} not initizlied")  # kong-pdk's words
        self.i_lock.acquire()
        try:
            self.instance_id = self._new_id(name)
        finally:
            self.i_lock.release()
        # kong-pdk's own start_instance takes ``self.instance_id`` as the id (under i_lock);
        # two concurrent starts cannot interleave here: gevent switches only on I/O
        return super().start_instance(cfg)

    def instance_for(self, iid: Any) -> Any:
        """The instance ``iid`` names, or "no plugin instance" (Kong then restarts it)."""
        ins = self.instances.get(iid) if type(iid) is int else None
        if ins is None or self.slots.get(ins.name) != (iid >> N_BITS) & ((1 << SLOT_BITS) - 1):
            # Kong expects the error to start with "no plugin instance" (mp_rpc.lua 312)
            raise PluginServerException(f"no plugin instance #{iid}")
        return ins

    def handle_event(self, event: dict[str, Any]) -> Any:
        """kong-pdk's own event path (``Rpc`` serves Kong; kept for kong-pdk's API)."""
        ins = self.instance_for(event.get("InstanceId"))
        out = super().handle_event(event)
        out["Name"] = ins.name
        return out


def _server_class() -> type[AigwPluginServer]:
    """The plugin-server class ``main`` runs (kept for the tests' and the bench's callers)."""
    return AigwPluginServer


def _listener(path: str, backlog: int) -> gsocket.socket:
    """Bind and listen on the Unix socket now (before the plugins load)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    sock = gsocket.socket(gsocket.AF_UNIX, gsocket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(backlog)
    return sock


# kong/runloop/plugin_servers/rpc/mp_rpc.lua (3.9.1) ``call_pdk_method`` runs these PDK calls and,
# in the access phase, ends the request there (kong/pdk/response.lua ``exit`` -> ``ngx.exit``):
# Kong never sends a Step for them (kong_pdk/server.py ``terminal_methods`` says the same)
TERMINAL = frozenset(("kong.response.exit", "kong.response.error"))
# the Step methods Kong answers a PDK call with (mp_rpc.lua ``get_step_method``, 141-167)
STEPS = {"plugin.Step": False, "plugin.StepError": True, "plugin.StepCredential": False,
         "plugin.StepConsumer": False, "plugin.StepRoute": False, "plugin.StepService": False,
         "plugin.StepMultiMap": False, "plugin.StepMemoryStats": False, "plugin.StepPlugin": False}
# phases whose failure ends the request with Kong's own 500 (a Lua plugin's error does the same)
EXIT_PHASES = frozenset(("rewrite", "access", "response"))
EVENT_TTL = 300.0  # an event Kong has not stepped for this long is abandoned (its cosocket gave up)


class _Conn:
    """One connection from Kong and the greenlet reading it (``owner``)."""

    __slots__ = ("sock", "unpacker", "owner")

    def __init__(self, sock: gsocket.socket, unpacker: Any, owner: greenlet | None) -> None:
        self.sock, self.unpacker, self.owner = sock, unpacker, owner


class _Event:
    """One ``plugin.HandleEvent``: the handler runs in ``handler`` (a greenlet); ``reply`` is the
    HandleEvent call still unanswered (conn, msgid) while the handler runs inline; ``peer`` the
    greenlet of a Step call waiting for the handler's next output."""

    __slots__ = ("id", "name", "handler", "reply", "peer", "waiting", "broken", "ended", "final",
                 "since")

    def __init__(self, eid: int, name: str, handler: greenlet,
                 reply: tuple[_Conn, Any] | None) -> None:
        self.id, self.name, self.handler, self.reply = eid, name, handler, reply
        self.peer: greenlet | None = None
        self.waiting = False   # the handler is suspended until a Step brings its PDK result
        self.broken = False    # that wait was interrupted (e.g. a gevent.Timeout of the handler)
        self.ended = False     # the handler returned, or ended the request with a terminal call
        # an output nobody was waiting for yet (after an interrupted wait)
        self.final: dict[str, Any] | None = None
        self.since = 0.0


class Rpc:
    """kong-pdk's RPC loop and event machinery, rebuilt for cost (issue 18) and with no state
    left behind (issue 13). The MessagePack-RPC protocol is Kong's (mp_rpc.lua, 3.9.1):

    * requests ``[0, msgid, method, [args]]``, one at a time per connection (``Rpc:call``
      172-221 sends, then reads until the answer with its ``msg_id``); answers
      ``[1, msgid, error, result]``, each preceded by the ``serverPid`` notification (module
      docstring), written with one ``sendall``.
    * ``plugin.HandleEvent {InstanceId, EventName}`` is answered ``{Data, EventId}`` where Data is
      ``"ret"`` (done) or the handler's next PDK call ``{Method, Args}``; Kong runs it and sends
      ``plugin.Step*{EventId, Data}`` (``StepError`` with the error), on any pooled connection,
      and repeats until ``"ret"`` (``bridge_loop`` 264-298). After a terminal call
      (``TERMINAL``) Kong sends nothing more for the event.

    Differences from kong-pdk 0.36 (``server.py handle_event``/``_step``, ``listener.py``), none
    visible to Kong:

    * **No greenlet and no channel for an event that makes no PDK call:** the handler runs in the
      greenlet reading the connection, and its "ret" is the answer. Only at its first PDK call
      does the connection get a new reader greenlet; the handler keeps the old one and is resumed
      by the Step with a direct greenlet switch (no channel, no hub round trip).
    * A dict lookup, not a regex, maps method names; no lock around HandleEvent (kong-pdk holds
      one while the handler runs up to its first PDK call, so every event waits for the slowest).
    * Nothing outlives its event: kong-pdk keeps an event whose first answer is a terminal call in
      ``events`` forever, and a handler that returns after ``kong.response.exit`` blocks forever on
      its channel. Here a PDK call after a terminal one raises, events Kong stopped stepping are
      dropped after ``EVENT_TTL``.
    * A handler that raises is answered instead of never (kong-pdk leaves Kong waiting for its
      cosocket timeout, then Kong continues the request): in rewrite/access/response with
      ``kong.response.error(500)``, Kong's own answer to a failing Lua plugin; in log with "ret".
      Only the exception's type and place are logged, never its message (it may hold request data).
    """

    def __init__(self, ps: AigwPluginServer, lua_style: bool = False) -> None:
        self.ps, self.lua_style = ps, lua_style
        self.hub = get_hub()
        self.events: dict[int, _Event] = {}
        self.ids = itertools.count()
        self.notice = msgpack.packb([2, "serverPid", os.getpid()])
        self.packb = msgpack.Packer(autoreset=True).pack
        self.Unpacker = msgpack.Unpacker
        self.unpack_errors = (ValueError, msgpack.UnpackException)
        self.FakeClasses = FakeClasses
        self.PDKException, self.PluginServerException = PDKException, PluginServerException
        self.methods: dict[str, Any] = {}
        self.getcurrent, self.spawn, self.GreenletExit = getcurrent, spawn, GreenletExit

    # -- connections ------------------------------------------------------------------------

    def serve(self, sock: gsocket.socket) -> None:
        """Accept Kong's connections on the listening ``sock`` forever."""
        while True:
            try:
                conn, _ = sock.accept()
            except OSError as exc:  # EMFILE and friends: wait, do not spin
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    gsleep(0.1)
                    continue
                raise
            spawn(self.connection, conn)

    def connection(self, sock: gsocket.socket) -> None:
        # read_size: msgpack's default buffer is 1 MiB per Unpacker, and feeding walks through all
        # of it before compacting: each of Kong's pooled connections ended up holding 1 MiB of
        # RSS (issue 13: +63 MiB over a soak, growing with the connection count). Kong's messages
        # are small (it reads ours with receiveany(4096), mp_rpc.lua 189-191); the buffer grows
        # for a larger one (a raw body in a Step) up to max_buffer_size (100 MiB).
        c = _Conn(sock, self.Unpacker(strict_map_key=False, read_size=16384), self.getcurrent())
        self.read(c)

    def read(self, c: _Conn) -> None:
        """Answer the requests on ``c`` until Kong closes it or a handler takes this greenlet."""
        me = self.getcurrent()
        sock, unpacker = c.sock, c.unpacker
        try:
            while True:
                for msg in unpacker:
                    self.answer(c, msg)
                    if c.owner is not me:
                        return  # a handler went on in this greenlet; another one reads now
                data = sock.recv(65536)
                if not data:
                    return
                unpacker.feed(data)
        except (OSError, *self.unpack_errors) as exc:
            self.ps.logger.warning("rpc connection closed: %s", type(exc).__name__)
        finally:
            if c.owner is me:
                c.owner = None
                sock.close()

    def send(self, c: _Conn, msgid: Any, err: str | None, result: Any) -> None:
        try:
            c.sock.sendall(self.notice + self.packb([1, msgid, err, result]))
        except OSError as exc:  # Kong went away; its reader sees the same and closes
            self.ps.logger.warning("rpc answer not sent: %s", type(exc).__name__)

    def answer(self, c: _Conn, msg: Any) -> None:
        if type(msg) is not list or len(msg) != 4 or type(msg[3]) is not list:
            raise ValueError("not a MessagePack-RPC request")
        _, msgid, name, args = msg
        if name == "plugin.HandleEvent":
            return self.handle_event(c, msgid, args)
        is_error = STEPS.get(name)
        if is_error is not None:
            return self.step(c, msgid, args, is_error)
        fn = self.method(name)
        err, result = None, None
        if fn is None:
            err = f"RPC for {name} is not supported"
        else:
            try:
                result = fn(*args)
            except (self.PluginServerException, self.PDKException) as exc:
                self.ps.logger.warning("rpc: #%d error: %s", msgid, exc)
                err = str(exc)
            except Exception as exc:
                self.ps.logger.error("rpc: #%d %s exception: %s", msgid, name, _where(exc))
                err = str(exc)
        self.send(c, msgid, err, result)

    def method(self, name: str) -> Callable[..., Any] | None:
        """``plugin.GetStatus`` -> ``ps.get_status`` (kong-pdk's names), cached."""
        fn = self.methods.get(name)
        if fn is None:
            ns, _, cmd = name.partition(".")
            if ns != "plugin" or not cmd:
                return None
            snake = "".join("_" + c.lower() if c.isupper() else c for c in cmd).lstrip("_")
            fn = self.methods[name] = getattr(self.ps, snake, None)
        return fn

    # -- events -----------------------------------------------------------------------------

    def handle_event(self, c: _Conn, msgid: Any, args: list[Any]) -> None:
        try:
            event = args[0]
            ins = self.ps.instance_for(event.get("InstanceId"))
            phase = event["EventName"]
            handler = getattr(ins.cls, phase)
        except (self.PluginServerException, self.PDKException) as exc:
            self.ps.logger.warning("rpc: #%d error: %s", msgid, exc)
            return self.send(c, msgid, str(exc), None)
        except Exception as exc:  # malformed event, or a phase the plugin lacks
            return self.send(c, msgid, str(exc), None)
        ins.last_used_time = time.time()  # kong-pdk's reset_expire_ts (GetStatus shows it)
        ev = _Event(next(self.ids), ins.name, self.getcurrent(), (c, msgid))
        out: dict[str, Any] | str
        try:
            handler(self.FakeClasses("kong", lambda m, *a: self.pdk(ev, m, a)))
            out = "ret"
        except self.GreenletExit:  # our plugins end so after kong.response.exit; or EVENT_TTL
            out = "ret"
        except Exception as exc:
            self.ps.logger.error("event %s %s of %s raised %s", ev.id, phase, ins.name, _where(exc))
            out = {"Method": "kong.response.error", "Args": [500]} if phase in EXIT_PHASES else "ret"
        if not ev.ended:
            ev.ended = True
            self.output(ev, out, False, last=True)

    def pdk(self, ev: _Event, method: str, args: tuple[Any, ...]) -> Any:
        """A PDK call of the handler of ``ev`` (kong_pdk/pdk/__init__.py ``rpc_of``)."""
        if method == "kong.log" or method.startswith("kong.log."):  # as rpc_of: loggable args
            args = tuple(a if type(a) in (str, int, list, dict) else str(a) for a in args)
        terminal = method in TERMINAL
        if ev.ended or ev.broken:
            err = ("the request was already ended" if ev.ended else
                   "an earlier PDK call of this event was interrupted")
            if terminal:
                return None
            if self.lua_style:
                return None, err
            raise self.PDKException(f"{method}: {err}")
        if terminal:
            ev.ended = True
            self.output(ev, {"Method": method, "Args": list(args)}, False)
            return None  # as kong-pdk: the handler goes on (Kong ended the request)
        data, err = self.output(ev, {"Method": method, "Args": list(args)}, True)
        if self.lua_style:
            return data, err
        if err:
            raise self.PDKException(f"exception from {method}: {err}")
        return data

    def output(self, ev: _Event, data: Any, wait: bool, last: bool = False) -> Any:
        """Give the handler's next output to the call waiting for it; with ``wait``, suspend
        the handler until the Step with its result arrives and return ``(data, err)``;
        ``last``: the handler has returned."""
        body = {"Data": data, "EventId": ev.id}
        if ev.reply is not None:  # still inside HandleEvent, in the connection's reader greenlet
            c, msgid = ev.reply
            ev.reply = None
            body["Name"] = ev.name  # for the stand-in; Kong reads EventId and Data only
            self.send(c, msgid, None, body)
            if last:
                return None  # the whole event without a greenlet switch
            c.owner = self.spawn(self.read, c)  # the handler keeps this greenlet: a new reader
            if not wait:
                return None
            self.events[ev.id] = ev
            return self.suspend(ev, self.hub.switch)
        peer, ev.peer = ev.peer, None
        if not wait:  # done: hand the output over, keep running (or end) without waiting
            if peer is None:  # after an interrupted wait: the pending Step takes it
                ev.final = body
                ev.since = time.monotonic()
                return None
            self.events.pop(ev.id, None)
            self.hub.loop.run_callback(peer.switch, body)
            return None
        if peer is None:  # unreachable: a waiting handler is not running; keep the event sane
            ev.broken = True
            return None, "no Step is waiting for this PDK call"
        return self.suspend(ev, peer.switch, body)

    def suspend(self, ev: _Event, switch: Callable[..., Any], *arg: Any) -> Any:
        ev.waiting, ev.since = True, time.monotonic()
        try:
            got = switch(*arg)  # resumed by step() with the result
        except BaseException:
            ev.broken = True  # thrown in while waiting (Timeout, kill): the result is lost
            raise
        finally:
            ev.waiting = False
        return got

    def step(self, c: _Conn, msgid: Any, args: list[Any], is_error: bool) -> None:
        try:
            data = args[0]
            ev = self.events.get(data["EventId"])
        except Exception as exc:
            return self.send(c, msgid, str(exc), None)
        if ev is None or ev.peer is not None:
            return self.send(c, msgid, f"event id {data.get('EventId')} not found", None)
        if ev.final is not None:  # the handler ended while nobody waited for it
            self.events.pop(ev.id, None)
            return self.send(c, msgid, None, ev.final)
        dd = data.get("Data")
        ev.peer = self.getcurrent()
        if ev.waiting:
            out = ev.handler.switch((None, dd) if is_error else (dd, None))
        else:  # the handler's wait was interrupted: take its next output
            out = self.hub.switch()
        self.send(c, msgid, None, out)

    def sweep_forever(self, every: float = 60.0) -> None:
        while True:
            gsleep(every)
            self.sweep()

    def sweep(self, ttl: float = EVENT_TTL) -> int:
        """Drop events Kong stopped stepping; end their handlers."""
        old = [ev for ev in self.events.values() if time.monotonic() - ev.since > ttl]
        for ev in old:
            self.events.pop(ev.id, None)
            if ev.peer is not None:
                self.hub.loop.run_callback(ev.peer.switch, {"Data": "ret", "EventId": ev.id})
                ev.peer = None
            if ev.waiting:
                ev.ended = True
                self.hub.loop.run_callback(self._end, ev)
        return len(old)

    def _end(self, ev: _Event) -> None:
        if ev.waiting and not ev.handler.dead:  # still suspended where sweep() found it
            ev.handler.throw(self.GreenletExit())


def _where(exc: BaseException) -> str:
    """``Type at file:line`` of the innermost frame: no message, it may carry request data."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}" if tb else ""
    return type(exc).__name__ + where


def _serve(ps: AigwPluginServer, sock: gsocket.socket, lua_style: bool = False) -> None:
    """Answer Kong's MessagePack-RPC on ``sock`` (``Rpc``)."""
    global _RPC
    rpc = _RPC = Rpc(ps, lua_style)
    spawn(watchdog, gsleep, ps.logger)  # exit when Kong (the parent) is gone, as kong-pdk does
    spawn(rpc.sweep_forever)
    if os.environ.get("AIGW_MEMDEBUG"):
        spawn(_memdebug, float(os.environ["AIGW_MEMDEBUG"]), os.environ.get("AIGW_MEMDEBUG_OUT"))
    rpc.serve(sock)


def _memdebug(every: float, out: str | None) -> None:
    """Diagnostics, off by default (``AIGW_MEMDEBUG=<seconds>``, 0: only on SIGUSR1;
    ``AIGW_MEMDEBUG_OUT=<file>``, default stderr; ``AIGW_MEMDEBUG_FRAMES``): at every dump the
    allocation sites that grew most since the previous dump (tracemalloc, after a full gc), the
    object types whose count grew, and the sizes of the engine's and the core's stores."""
    tracemalloc.start(int(os.environ.get("AIGW_MEMDEBUG_FRAMES", "6")))
    kick = Event()
    gevent.signal_handler(signal.SIGUSR1, kick.set)
    prev_snap: tracemalloc.Snapshot | None = None
    prev_types: Counter[str] = Counter()
    while True:
        kick.wait(every or None)
        kick.clear()
        gc.collect()
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        types = Counter(type(o).__name__ for o in gc.get_objects())
        lines = [(f"--- memdebug t={time.time():.0f} traced={tracemalloc.get_traced_memory()[0] / 2**20:.1f} MiB "
                  f"objects={sum(types.values())} {_store_sizes()}")]
        if prev_snap is not None:
            for st in snap.compare_to(prev_snap, "traceback")[:15]:
                lines.append(f"{st.size_diff / 1024:+9.1f} KiB {st.count_diff:+7d} blocks")
                lines.extend("      " + str(f) for f in st.traceback.format()[-12:])
            growth = [(n, c - prev_types.get(n, 0)) for n, c in types.items()]
            growth = sorted((g for g in growth if g[1] > 0), key=lambda g: -g[1])[:15]
            lines.append("types: " + ", ".join(f"{n} {d:+d}" for n, d in growth))
        prev_snap, prev_types = snap, types
        text = "\n".join(lines) + "\n"
        if out:
            with open(out, "a") as f:
                f.write(text)
        else:
            sys.stderr.write(text)


def _store_sizes() -> str:
    sizes = []
    for mod, attr in (("aigw.context", "STORE"), ("aigw.airecord", "RECENT")):
        m = sys.modules.get(mod)
        obj = getattr(m, attr, None) if m else None
        if isinstance(obj, Sized):
            sizes.append(f"{attr}={len(obj)}")
    if _RPC is not None:
        sizes.append(f"events={len(_RPC.events)}")
    return " ".join(sizes)


_RPC: Rpc | None = None


def main() -> None:
    """Console script ``aigw-pluginserver``: same argv as ``kong-python-pluginserver``."""
    monkey.patch_all()
    args = cli.parse()
    if args.dump_info or args.dump_all_info or not args.gevent:
        cli.start_server()  # kong-pdk's own paths (dumps, threading/multiprocessing modes)
        return
    path = os.path.join(args.prefix, args.socket_name)
    sock = _listener(path, args.listen_queue_size)
    _warm_prices()  # Kong's first connections wait in the listen queue meanwhile
    ps = _server_class()(loglevel=Logger.WARNING - args.verbose, plugin_dir=args.directory,
                         use_gevent=True, lua_style=not args.no_lua_style, gen_file=path + ".gen")
    cli.display_lua_style_notice(not args.no_lua_style, ps)
    ps.logger.info("server (gevent) listening at path %s, instance generation %d", path,
                   ps.generation)
    try:
        _serve(ps, sock, lua_style=not args.no_lua_style)
    except KeyboardInterrupt:
        ps.logger.info("polite exit requested, terminating...")


def _warm_prices() -> None:
    """Load the price catalogue (~0.5 s) before serving, not on the first request."""
    try:
        # a preload for the plugins (they import it themselves): importing it at the top would add
        # ~80 modules, ~60 ms CPU to every process that imports this module without serving
        # (the compose healthcheck's ``check``, every 5 s); and its failure is reported here, not
        # fatal (docs/lint.md)
        from .cost.pricing import PriceTable  # noqa: PLC0415 (preload, start-up cost: above)

        PriceTable.default()
    except Exception as exc:  # the first request loads it (and reports) instead
        print(f"aigw: price catalogue not preloaded: {type(exc).__name__}", file=sys.stderr)


def plugin_info(plugins_dir: str, name: str) -> dict[str, Any]:
    """The info dict kong-pdk reports for one plugin (loads the plugin modules, starts nothing)."""
    # kong-pdk's Logger and the plugin modules write to stdout; stdout must carry only the JSON
    with contextlib.redirect_stdout(sys.stderr):
        ps = PluginServer(loglevel=Logger.WARNING, plugin_dir=plugins_dir, use_gevent=True)
        info: dict[str, Any] = ps.get_plugin_info(name)
        return info


def plugin_info_main(argv: list[str] | None = None) -> None:
    """Console script ``aigw-plugin-info -d PLUGINS_DIR NAME``: a one-element JSON array."""
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
