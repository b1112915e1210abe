"""ai-redact's stream side (restore across chunks, flush at the end), through the
pipeline's chunk hooks and the chat writer, without sockets."""
import orjson

from aigw.context import Outcome, RequestContext
from aigw.gateway.egress import ChatEgress
from aigw.gateway.redact import RedactStage, RedactState
from aigw.pipeline import Exchange


class StreamOut:
    """The chunk path of the engine for one stage: chunk hook, then the client's writer."""

    def __init__(self, restore):
        self.ctx = RequestContext(id="t", api="chat", path="/v1/chat/completions", headers={},
                                  raw_body=b"", consumer=None)
        self.ctx.slot(RedactState).restore_map = restore
        self.stage = RedactStage({})
        self.ex = Exchange(outcome=Outcome(), stream=True)
        self.egress = ChatEgress()
        assert self.stage.wants_chunks(self.ctx, self.ex)

    def chunk(self, c):
        return [self.egress.chunk(o) for o in self.stage.chunk(self.ctx, self.ex, c)]

    def end(self):
        return [self.egress.chunk(o) for o in self.stage.flush(self.ctx, self.ex)] + [self.egress.end(self.ctx, self.ex)]


def _events(chunks):
    out = []
    for b in chunks:
        for line in b.decode().splitlines():
            if line.startswith("data: {"):
                out.append(orjson.loads(line[6:]))
    return out


def _chunk(delta, finish=None):
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_tool_argument_tail_is_flushed_restored_when_the_stream_ends_early():
    out = StreamOut({"<EMAIL_1>": 'a"b@example.com'})
    sent = []
    sent += out.chunk(_chunk({"tool_calls": [{"index": 0, "id": "x", "type": "function",
                                              "function": {"name": "f", "arguments": '{"to": "<EMAIL'}}]}))
    sent += out.chunk(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '_1>", "cc": "<EMA'}}]}))
    sent += out.end()  # no finish_reason: the provider stream was cut
    args = "".join(tc["function"].get("arguments") or "" for e in _events(sent)
                   for ch in e["choices"] for tc in ch["delta"].get("tool_calls") or ())
    # restored JSON-escaped inside arguments; the held-back tail is not lost
    assert args == '{"to": "a\\"b@example.com", "cc": "<EMA'


def test_content_placeholder_split_across_chunks_and_flushed_before_finish():
    out = StreamOut({"<PHONE_1>": "+1 415 555 0100"})
    sent = []
    for piece in ["call <PH", "ONE_", "1> now <PHO"]:
        sent += out.chunk(_chunk({"content": piece}))
    sent += out.chunk(_chunk({}, finish="stop"))
    events = _events(sent)
    text = "".join(ch["delta"].get("content") or "" for e in events for ch in e["choices"])
    assert text == "call +1 415 555 0100 now <PHO"
    # the held-back tail went out before the finish chunk
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
