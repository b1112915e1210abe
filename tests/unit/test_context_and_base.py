import time

import gevent
import orjson
import pytest

from aigw import context
from aigw.context import STORE, TICKET_HEADER, Outcome
from aigw.errors import GatewayError
from aigw.plugin_base import AIPlugin, api_for_path


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


class Boom(AIPlugin):
    NAME = "ai-tokens"

    def __init__(self, exc):
        self.exc = exc

    def on_access(self, kong, ctx):
        raise self.exc


class Ok(AIPlugin):
    NAME = "ai-tokens"

    def __init__(self):
        self.seen = []

    def on_access(self, kong, ctx):
        self.seen.append(ctx)


def run_in_greenlet(fn, *a):
    g = gevent.spawn(fn, *a)
    g.join(timeout=5)
    assert g.ready(), "handler hung"
    return g


def test_failing_handler_exits_with_clean_error_and_no_content_in_logs(caplog):
    k = FakeKong(body=b'{"messages":[{"role":"user","content":"jane@example.com"}]}')
    g = run_in_greenlet(Boom(KeyError("jane@example.com")).access, k)
    assert g.successful()  # GreenletExit counts as a clean end
    status, body, headers = k.exited
    assert status == 500
    err = orjson.loads(body)["error"]
    assert err["code"] == "gateway_error" and "jane" not in body.decode()
    assert "jane@example.com" not in caplog.text
    assert "KeyError" in caplog.text


def test_gateway_error_uses_the_client_api_format():
    k = FakeKong(path="/v1/messages")
    run_in_greenlet(Boom(GatewayError(429, "slow down", code="rate_limit_exceeded",
                                      headers={"Retry-After": "3"})).access, k)
    status, body, headers = k.exited
    assert status == 429 and headers["Retry-After"] == "3"
    assert orjson.loads(body) == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}


def test_context_is_shared_across_plugins_with_one_call_each():
    k = FakeKong(consumer={"id": "c1", "username": "alice"})
    a, b = Ok(), Ok()
    run_in_greenlet(a.access, k)
    first_calls = list(k.calls)
    assert first_calls == ["kong.request.get_headers", "kong.request.get_path", "kong.request.get_raw_body",
                           "kong.client.get_consumer", "kong.service.request.set_header"]
    run_in_greenlet(b.access, k)
    assert k.calls[len(first_calls):] == ["kong.request.get_headers"]
    assert a.seen[0] is b.seen[0] and a.seen[0].consumer_name == "alice"


def test_forged_ticket_is_ignored():
    k = FakeKong(headers={TICKET_HEADER: "abc.9999999999.deadbeef"})
    p = Ok()
    run_in_greenlet(p.access, k)
    assert "kong.request.get_raw_body" in k.calls  # a fresh context was built
    assert k.headers[TICKET_HEADER] != "abc.9999999999.deadbeef"


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


def test_relay_refuses_a_context_whose_plugin_did_not_finish():
    """Real Kong continues with the next plugin when an event fails mid-way; the
    plugin's mark stays, and the relay must not forward that request."""
    from aigw.relay.app import Relay
    ctx = STORE.create(api="chat", path="/", headers={}, raw_body=b"{}", consumer=None)
    ctx.pending.add("ai-redact")
    seen = {}

    def start_response(status, headers):
        seen["status"] = status

    body = b"".join(Relay(ctx).run(start_response))
    assert seen["status"].startswith("503")
    assert orjson.loads(body)["error"]["code"] == "gateway_incomplete"


def test_pending_mark_is_cleared_when_access_completes():
    k = FakeKong()
    p = Ok()
    run_in_greenlet(p.access, k)
    assert p.seen[0].pending == set()


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
