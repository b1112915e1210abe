"""aigw-pluginserver's RPC engine (``aigw.pluginserver.Rpc``, issue 18): the fast path (an event
with no PDK call answered inline), PDK calls after it with Steps on other connections, StepError,
exits, handler errors, interrupted waits, and that nothing is left behind (issue 13).

In-process: the engine serves gevent socketpairs; the test is Kong (mp_rpc.lua's protocol:
``[0, id, method, [arg]]`` one at a time per connection, notifications skipped)."""
from __future__ import annotations

import json
import textwrap

import gevent
import msgpack
import pytest
from gevent import socket as gsocket

from aigw.pluginserver import Rpc, _server_class

PLUGINS = {
    "noop": """
        def access(self, kong):
            return
        def log(self, kong):
            raise KeyError("secret request data")
    """,
    "pdk2": """
        def access(self, kong):
            v = kong.request.get_header("x-test")
            kong.service.request.set_header("x-seen", str(v))
    """,
    "exiter": """
        def access(self, kong):
            v = kong.request.get_header("x-test") if self.config.get("ask") else None
            kong.response.exit(403, "no " + str(v))
            try:
                kong.request.get_header("after")
            except Exception as exc:
                type(self).after_exit = type(exc).__name__
            raise __import__("gevent").GreenletExit
        def log(self, kong):
            kong.response.exit(200, "x")  # returns normally afterwards (kong-pdk blocks forever here)
    """,
    "boom": """
        def access(self, kong):
            kong.request.get_header("x")
            raise RuntimeError("secret request data")
    """,
    "patient": """
        def access(self, kong):
            import gevent
            try:
                with gevent.Timeout(0.05):
                    kong.request.get_header("slow")
            except gevent.Timeout:
                type(self).timed_out = True
            try:
                kong.request.get_header("again")
            except Exception as exc:
                type(self).then = type(exc).__name__
            gevent.sleep(0.01)
    """,
}


@pytest.fixture()
def rpc(tmp_path):
    from kong_pdk.logger import Logger

    d = tmp_path / "plugins"
    d.mkdir()
    for name, body in PLUGINS.items():
        src = ("version = '0.1.0'\npriority = 1\nSchema = ()\nclass Plugin:\n"
               "    def __init__(self, config):\n        self.config = config\n") + textwrap.indent(
                  textwrap.dedent(body), "    ")
        (d / f"{name}.py").write_text(src)
    ps = _server_class()(loglevel=Logger.ERROR, plugin_dir=str(d), use_gevent=True, lua_style=False,
                         gen_file=str(tmp_path / "gen"))
    return Rpc(ps)


class Kong:
    """One keep-alive connection of Kong's pool to the engine."""

    def __init__(self, rpc: Rpc):
        a, self.sock = gsocket.socketpair()
        self.reader = gevent.spawn(rpc.connection, a)
        self.unpacker = msgpack.Unpacker(strict_map_key=False)
        self.msgid = 0
        self.notices: list = []

    def send(self, method: str, arg) -> int:
        self.msgid += 1
        self.sock.sendall(msgpack.packb([0, self.msgid, method, [arg]]))
        return self.msgid

    def recv(self, msgid: int, timeout: float = 2.0):
        with gevent.Timeout(timeout):
            while True:
                for msg in self.unpacker:
                    if msg[0] == 2:
                        self.notices.append(msg)
                        continue
                    assert msg[:2] == [1, msgid]
                    return msg[2], msg[3]
                data = self.sock.recv(4096)
                assert data, "connection closed"
                self.unpacker.feed(data)

    def call(self, method: str, arg):
        return self.recv(self.send(method, arg))


def start(kong: Kong, name: str, config: dict | None = None) -> int:
    err, res = kong.call("plugin.StartInstance", {"Name": name, "Config": json.dumps(config or {})})
    assert err is None
    return res["Id"]


def event(kong: Kong, iid: int, phase: str = "access"):
    return kong.call("plugin.HandleEvent", {"InstanceId": iid, "EventName": phase})


def test_an_event_without_pdk_calls_is_answered_inline(rpc):
    k = Kong(rpc)
    iid = start(k, "noop")
    reader = k.reader
    for _ in range(3):
        err, res = event(k, iid)
        assert err is None and res["Data"] == "ret" and res["Name"] == "noop" and "EventId" in res
    assert k.reader is reader and not reader.dead  # no hand-off happened
    assert k.notices and all(n[1] == "serverPid" for n in k.notices)  # before every answer
    assert rpc.events == {}


def test_pdk_calls_with_steps_on_other_connections_and_events_interleaved(rpc):
    k1, k2, k3 = Kong(rpc), Kong(rpc), Kong(rpc)
    pdk2, noop = start(k1, "pdk2"), start(k1, "noop")
    err, res = event(k1, pdk2)
    assert err is None and res["Data"] == {"Method": "kong.request.get_header", "Args": ["x-test"]}
    eid = res["EventId"]
    assert eid in rpc.events
    # meanwhile another event runs to completion on the same connection (a new reader took it)
    assert event(k1, noop)[1]["Data"] == "ret"
    err, res = k2.call("plugin.Step", {"EventId": eid, "Data": "v1"})
    assert err is None and res == {"Data": {"Method": "kong.service.request.set_header",
                                            "Args": ["x-seen", "v1"]}, "EventId": eid}
    err, res = k3.call("plugin.Step", {"EventId": eid, "Data": True})
    assert err is None and res == {"Data": "ret", "EventId": eid}
    assert rpc.events == {}
    err, _ = k3.call("plugin.Step", {"EventId": eid, "Data": True})
    assert err == f"event id {eid} not found"


def test_step_error_raises_in_the_handler_and_a_failing_access_is_answered_with_a_500(rpc):
    k = Kong(rpc)
    iid = start(k, "pdk2")
    _, res = event(k, iid)
    err, res = k.call("plugin.StepError", {"EventId": res["EventId"], "Data": "no such header"})
    assert err is None and res["Data"] == {"Method": "kong.response.error", "Args": [500]}
    assert rpc.events == {}


def test_a_handler_error_is_answered_and_its_message_not_logged(rpc, capsys):
    k = Kong(rpc)
    boom, noop = start(k, "boom"), start(k, "noop")
    _, res = event(k, boom)
    _, res = k.call("plugin.Step", {"EventId": res["EventId"], "Data": None})
    assert res["Data"] == {"Method": "kong.response.error", "Args": [500]}
    assert event(k, noop, "log")[1]["Data"] == "ret"  # the log phase cannot exit: "ret"
    out = capsys.readouterr()
    logs = out.out + out.err
    assert "RuntimeError at boom.py" in logs and "KeyError at noop.py" in logs
    assert "secret request data" not in logs
    assert rpc.events == {}


@pytest.mark.parametrize("ask", [False, True])
def test_exit_ends_the_event_and_a_pdk_call_after_it_raises(rpc, ask):
    k, k2 = Kong(rpc), Kong(rpc)
    iid, noop = start(k, "exiter", {"ask": ask}), start(k, "noop")
    _err, res = event(k, iid)
    if ask:
        res = k2.call("plugin.Step", {"EventId": res["EventId"], "Data": "v"})[1]
    assert res["Data"] == {"Method": "kong.response.exit", "Args": [403, "no v" if ask else "no None"]}
    assert event(k, noop)[1]["Data"] == "ret"  # the connection goes on serving
    gevent.sleep(0)
    plugin = type(rpc.ps.instances[iid].cls)
    assert plugin.after_exit == "PDKException"
    assert rpc.events == {}


def test_a_handler_returning_normally_after_exit_is_not_left_blocked(rpc):
    k = Kong(rpc)
    iid = start(k, "exiter")
    _err, res = event(k, iid, "log")
    assert res["Data"] == {"Method": "kong.response.exit", "Args": [200, "x"]}
    gevent.sleep(0.01)
    assert rpc.events == {}
    # the handler went on in the first reader greenlet (a new one took the connection): it ended
    assert k.reader.dead
    assert event(k, start(k, "noop"))[1]["Data"] == "ret"


def test_an_interrupted_wait_gets_the_next_output_and_later_calls_raise(rpc):
    k, k2 = Kong(rpc), Kong(rpc)
    iid = start(k, "patient")
    _, res = event(k, iid)
    assert res["Data"]["Args"] == ["slow"]
    gevent.sleep(0.1)  # the handler's Timeout fires while it waits for this Step
    err, res = k2.call("plugin.Step", {"EventId": res["EventId"], "Data": "late"})
    assert err is None and res["Data"] == "ret"
    plugin = type(rpc.ps.instances[iid].cls)
    assert plugin.timed_out and plugin.then == "PDKException"
    assert rpc.events == {}


def test_an_event_kong_stops_stepping_is_dropped(rpc):
    k = Kong(rpc)
    iid = start(k, "pdk2")
    _, res = event(k, iid)
    ev = rpc.events[res["EventId"]]
    assert rpc.sweep(ttl=60) == 0
    assert rpc.sweep(ttl=0) == 1
    gevent.sleep(0.01)
    assert rpc.events == {} and ev.handler.dead


def test_unknown_instance_and_method(rpc):
    k = Kong(rpc)
    err, _ = event(k, 12345)
    assert err.startswith("no plugin instance")  # Kong restarts the instance on this text
    err, _ = k.call("plugin.NoSuchThing", {})
    assert err == "RPC for plugin.NoSuchThing is not supported"
    err, res = k.call("plugin.GetStatus", {})
    assert err is None and res["Pid"]
