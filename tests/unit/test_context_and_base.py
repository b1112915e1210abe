import time

import gevent
import orjson
import pytest

from aigw import context
from aigw.context import STORE, TICKET_HEADER, Outcome
from aigw.plugin_base import AIPlugin
from aigw.relay.intake import api_for_path


class FakeKong:
    """Records PDK calls like kong-pdk's RPC proxy would make them."""

    def __init__(self, path="/v1/chat/completions", body=b"{}", headers=None, consumer=None):
        self.calls = []
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.exited = None
        k = self

        class NS:
            def __init__(self, prefix):
                self.prefix = prefix

            def __getattr__(self, name):
                return NS(self.prefix + "." + name)

            def __call__(self, *a):
                k.calls.append(self.prefix)
                return k.answer(self.prefix, a)

        self.request = NS("kong.request")
        self.client = NS("kong.client")
        self.service = NS("kong.service")
        self.response = NS("kong.response")
        self._path, self._body, self._consumer = path, body, consumer

    def answer(self, method, args):
        if method == "kong.request.get_headers":
            return {k: [v] for k, v in self.headers.items()}
        if method == "kong.request.get_path":
            return self._path
        if method == "kong.request.get_raw_body":
            return self._body
        if method == "kong.client.get_consumer":
            return self._consumer
        if method == "kong.service.request.set_header":
            self.headers[args[0].lower()] = args[1]  # ngx.req.set_header semantics
            return None
        if method == "kong.response.exit":
            self.exited = args
            return None
        raise AssertionError(f"unexpected PDK call {method}")


class Ok(AIPlugin):
    NAME = "ai-tokens"
    ORDER = 771

    def __init__(self):
        self.config = {}
        self.seen = []

    def on_access(self, kong, ctx):
        self.seen.append(ctx)


class Anchor(AIPlugin):
    NAME = "ai-router"
    ANCHOR = True
    ORDER = 775

    def __init__(self, config=None):
        self.config = config or {}


def run_in_greenlet(fn, *a):
    g = gevent.spawn(fn, *a)
    g.join(timeout=5)
    assert g.ready(), "handler hung"
    return g


def test_a_plugin_that_is_not_the_anchor_makes_no_pdk_call_in_access():
    k = FakeKong(body=b'{"messages":[]}')
    p = Ok()
    g = run_in_greenlet(p.access, k)
    assert g.successful() and k.calls == [] and p.seen == []  # its request side runs in the relay
    assert p.instance.name == "ai-tokens"


def test_the_anchor_issues_a_ticket_with_two_pdk_calls():
    k = FakeKong(consumer={"id": "c1", "username": "alice"})
    run_in_greenlet(Anchor().access, k)
    assert k.calls == ["kong.client.get_consumer", "kong.service.request.set_header"]
    ctx = STORE.lookup(k.headers[TICKET_HEADER])
    assert ctx is not None and ctx.consumer_name == "alice" and ctx.anchor.name == "ai-router"


def test_a_forged_ticket_header_is_replaced():
    k = FakeKong(headers={TICKET_HEADER: "abc.9999999999.deadbeef"})
    run_in_greenlet(Anchor().access, k)
    assert k.headers[TICKET_HEADER] != "abc.9999999999.deadbeef"
    assert STORE.lookup(k.headers[TICKET_HEADER]) is not None


def test_a_failing_anchor_exits_with_a_clean_500_and_nothing_hangs(caplog):
    k = FakeKong()

    def broken(method, args):
        raise KeyError("jane@example.com")
    k.answer = lambda method, args: (FakeKong.answer(k, method, args) if method == "kong.response.exit"
                                     else broken(method, args))
    g = run_in_greenlet(Anchor().access, k)
    assert g.successful()  # GreenletExit counts as a clean end
    status, body, _headers = k.exited
    assert status == 500 and orjson.loads(body)["error"]["code"] == "gateway_error"
    assert "jane@example.com" not in caplog.text and "KeyError" in caplog.text


def test_relay_refuses_a_context_whose_plugin_did_not_finish():
    """A stage's request side that did not complete leaves its mark: the relay must not
    forward that request."""
    from aigw.relay.app import Relay
    ctx = STORE.create(api="chat", path="/", headers={}, raw_body=b"{}", consumer=None)
    ctx.pending.add("ai-redact")
    seen = {}

    def start_response(status, headers):
        seen["status"] = status

    body = b"".join(Relay(ctx).run(start_response))
    assert seen["status"].startswith("503")
    assert orjson.loads(body)["error"]["code"] == "gateway_incomplete"


def test_ticket_claimed_once_and_finish_runs_hooks_once():
    ctx = STORE.create(api="chat", path="/", headers={}, raw_body=b"", consumer=None)
    seen = []
    ctx.on_finish(lambda o: seen.append(o.status))
    assert STORE.claim(ctx.ticket) is ctx
    assert STORE.claim(ctx.ticket) is None
    ctx.finish(Outcome(status=200))
    ctx.finish(Outcome(status=500))
    assert seen == [200]
    assert STORE.lookup(ctx.ticket) is None


def test_tampered_or_expired_ticket_rejected(monkeypatch):
    ctx = STORE.create(api="chat", path="/", headers={}, raw_body=b"", consumer=None)
    cid, exp, sig = ctx.ticket.split(".")
    assert STORE.claim(f"{cid}.{int(exp) + 100}.{sig}") is None
    later = time.time() + context.TICKET_TTL + 5
    monkeypatch.setattr(context.time, "time", lambda: later)
    assert STORE.claim(ctx.ticket) is None


def test_sweep_finishes_requests_that_never_reached_the_relay():
    ctx = STORE.create(api="chat", path="/", headers={}, raw_body=b"", consumer=None)
    released = []
    ctx.on_finish(lambda o: released.append(o.error))
    assert STORE.sweep(now=time.time() + context.TICKET_TTL + 1) >= 1
    assert released == ["not_proxied"]


@pytest.mark.parametrize("path,api", [("/v1/chat/completions", "chat"), ("/openai/v1/embeddings", "embeddings"),
                                      ("/v1/models", "models"), ("/v1/messages", "anthropic"), ("/v1/other", None)])
def test_api_for_path(path, api):
    assert api_for_path(path) == api


def test_relay_refuses_when_a_required_plugin_never_ran():
    from aigw.relay.app import Relay
    from aigw.relay.provider import ProviderCall
    ctx = STORE.create(api="chat", path="/", headers={}, raw_body=b"{}", consumer=None)
    ctx.provide(ProviderCall(None, set(), frozenset({"ai-redact", "ai-tokens"})))
    ctx.done = {"ai-router", "ai-tokens"}  # ai-redact's event never ran
    seen = {}
    body = b"".join(Relay(ctx).run(lambda status, headers: seen.setdefault("status", status)))
    assert seen["status"].startswith("503")
    assert orjson.loads(body)["error"]["code"] == "gateway_incomplete"
