"""The stage interface and the engine, without sockets: typed slices, request side in
order, finish exactly once, chunk hooks only when a stage asks, early answers."""
from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest

from aigw.context import STORE, Outcome, RequestContext, Slice
from aigw.errors import GatewayError
from aigw.pipeline import Exchange, Replay, Stage, StreamBroken, run_request
from aigw.relay.app import Engine
from aigw.types import Usage


@dataclass(slots=True)
class CountState(Slice):
    n: int = 0


def _ctx(**kw) -> RequestContext:
    return STORE.create(api="chat", path="/v1/chat/completions", headers={}, raw_body=b"{}",
                        consumer=None, **kw)


def test_slices_are_typed_and_fail_loudly():
    ctx = _ctx()
    s = ctx.slot(CountState)
    assert ctx.slot(CountState) is s and isinstance(s, CountState)
    with pytest.raises(TypeError):
        ctx.slot(dict)  # not a slice
    with pytest.raises(TypeError):
        ctx.put({"n": 1})  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        s.m = 1  # type: ignore[attr-defined]  # a key the slice does not declare
    ctx.finish(Outcome(status=200))
    assert ctx.slots == {}  # request state goes when the request ends


class Recorder(Stage):
    def __init__(self, name: str, log: list, deny: bool = False):
        super().__init__({})
        self.name, self.log, self.deny = name, log, deny

    def request(self, ctx):
        self.log.append(("request", self.name))
        if self.deny:
            raise GatewayError(429, "no", code="denied")

    def finish(self, ctx, outcome):
        self.log.append(("finish", self.name, outcome.status))


def test_request_side_in_order_and_every_joined_stage_finishes_once():
    log: list = []
    a, b, c = Recorder("a", log), Recorder("b", log, deny=True), Recorder("c", log)
    ctx = _ctx()
    with pytest.raises(GatewayError):
        run_request(ctx, [a, b, c])
    run_request(ctx, [a])  # a stage already in the pipeline does not join twice
    ctx.finish(Outcome(status=429))
    ctx.finish(Outcome(status=500))  # a second end is ignored
    assert log == [("request", "a"), ("request", "b"), ("request", "a"),
                   ("finish", "a", 429), ("finish", "b", 429)]


# ----------------------------------------------------------------- the engine

class ListEgress:
    def __init__(self):
        self.seen: list = []

    def body(self, ctx, resp, usage):
        return orjson.dumps(resp)

    def chunk(self, item):
        self.seen.append(item)
        return orjson.dumps(item) + b"\n"

    def end(self, ctx, ex):
        return b"end " + orjson.dumps(ex.trailer) + b"\n"

    def error(self, message):
        return b"error " + message.encode() + b"\n"


class ListSource:
    def __init__(self, items, broken=False):
        self._items, self.broken, self.closed = items, broken, 0

    def items(self):
        yield from self._items
        if self.broken:
            raise StreamBroken("cut", "stream_broken")

    def usage(self):
        return Usage(input_tokens=1, output_tokens=len(self._items))

    def close(self):
        self.closed += 1


class Terminal:
    def __init__(self, source=None, response=None):
        self.source, self.response, self.calls = source, response, 0

    def check(self, ctx):
        pass

    def answer(self, engine, ex: Exchange):
        self.calls += 1
        if self.source is None:
            ex.response, ex.usage = self.response, Usage(input_tokens=1, output_tokens=1)
        return self.source


class Counter(Stage):
    """Counts and tags items; says so on the trailer and in a header."""

    def wants_chunks(self, ctx, ex):
        return True

    def chunk(self, ctx, ex, item):
        ctx.slot(CountState).n += 1
        return [{**item, "seen": True}]

    def flush(self, ctx, ex):
        return [{"tail": True}]

    def headers(self, ctx, ex, headers):
        headers.append(("X-Count", "on"))

    def response(self, ctx, ex):
        ex.trailer["count"] = ctx.slot(CountState).n


def _serve(ctx, stages, terminal):
    run_request(ctx, stages)
    ctx.provide(terminal)
    ctx.egress = ListEgress()
    head = {}
    body = Engine(ctx).run(lambda status, headers: head.update(status=status, headers=dict(headers)))
    try:
        out = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return head, out


def test_items_pass_untouched_when_no_stage_asks_for_chunks():
    items = [{"i": i} for i in range(3)]
    src = ListSource(items)
    ctx = _ctx(stream=True)
    finished: list = []
    ctx.on_finish(finished.append)
    head, out = _serve(ctx, [Stage({})], Terminal(src))
    assert ctx.egress.seen == items and all(a is b for a, b in zip(ctx.egress.seen, items, strict=True))
    assert head["status"] == "200 OK" and out.endswith(b"end {}\n")
    assert src.closed == 1 and len(finished) == 1 and finished[0].usage.output_tokens == 3


def test_chunk_hooks_rewrite_flush_and_reach_the_trailer():
    src = ListSource([{"i": 0}, {"i": 1}])
    ctx = _ctx(stream=True)
    head, out = _serve(ctx, [Counter({})], Terminal(src))
    assert ctx.egress.seen == [{"i": 0, "seen": True}, {"i": 1, "seen": True}, {"tail": True}]
    assert head["headers"]["X-Count"] == "on" and out.endswith(b'end {"count":2}\n')


def test_a_broken_stream_still_settles_and_finishes_once():
    src = ListSource([{"i": 0}], broken=True)
    ctx = _ctx(stream=True)
    outcomes: list = []
    ctx.on_finish(outcomes.append)
    _, out = _serve(ctx, [Counter({})], Terminal(src))
    assert out.endswith(b"error cut\n")
    assert [(o.error, o.usage.output_tokens) for o in outcomes] == [("stream_broken", 1)]


def test_an_early_answer_is_served_without_the_terminal():
    ctx = _ctx()
    terminal = Terminal()
    run_request(ctx, [Counter({})])
    ctx.answer_early(Replay(response={"choices": [{"message": {"content": "hi"}}],
                                      "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}},
                            usage={}, target=None, chunks=list))
    head, out = _serve(ctx, [], terminal)
    assert terminal.calls == 0 and head["status"] == "200 OK"
    assert orjson.loads(out)["choices"][0]["message"]["content"] == "hi"


def test_no_terminal_fails_closed():
    ctx = _ctx()
    head = {}
    body = b"".join(Engine(ctx).run(lambda status, headers: head.update(status=status)))
    assert head["status"].startswith("503") and orjson.loads(body)["error"]["code"] == "gateway_incomplete"


def test_a_plugin_takes_its_priority_from_its_stage():
    from aigw.gateway.cost import CostStage
    from aigw.plugin_base import kong_plugin
    assert kong_plugin("ai-cost", CostStage)[3] == 770 == kong_plugin("ai-cost", CostStage, 770)[3]
    with pytest.raises(ValueError):
        kong_plugin("ai-cost", CostStage, 771)


def test_a_request_side_answer_is_served_by_the_engine():
    from aigw.pipeline import Respond

    class Answers(Stage):
        def request(self, ctx):
            ctx.provide(self)

        def check(self, ctx):
            pass

        def answer(self, engine, ex):
            raise Respond(200, {"ok": True}, {"X-Early": "1"})

    ctx = _ctx()
    run_request(ctx, [Answers({})])
    head = {}
    body = Engine(ctx).run(lambda status, headers: head.update(status=status, headers=dict(headers)))
    assert b"".join(body) == b'{"ok":true}' and head["headers"]["X-Early"] == "1"
    body.close()
    assert ctx.state == "finished"
