"""Test-only plugin: an extra stage plugged into the pipeline through its public interface.

Nothing in the relay knows it: it is a ``Stage`` with its own typed slice of the context
and a plugin file made by ``kong_plugin``, like the five real ones (tests/e2e/test_pipeline.py).
It stamps every answer with a header, counts the stream items it sees (and may rewrite
them: ``upper`` upper-cases content), puts the count on the stream's final usage chunk,
refuses a request that asks for it, and logs one line from its finish hook.
"""
import logging
from dataclasses import dataclass

from aigw import schema
from aigw.context import Outcome, RequestContext, Slice
from aigw.errors import GatewayError
from aigw.pipeline import Exchange, Stage
from aigw.plugin_base import kong_plugin

log = logging.getLogger("aigw")

schema.register("ai-stamp", {
    "type": "object", "additionalProperties": False,
    "properties": {"tag": {"type": "string", "default": "stamped"},
                   "upper": {"type": "boolean", "default": False}},
})


@dataclass(slots=True)
class StampState(Slice):
    mark: str = ""
    chunks: int = 0
    finished: int = 0


class StampStage(Stage):
    name = "ai-stamp"
    priority = 760  # after every AI plugin of the reference config

    def request(self, ctx: RequestContext) -> None:
        st = ctx.slot(StampState)
        st.mark = ctx.headers.get("x-stamp-mark", "")
        if ctx.headers.get("x-stamp-deny"):
            raise GatewayError(403, "Refused by ai-stamp.", code="stamp_denied")

    def headers(self, ctx: RequestContext, ex: Exchange, headers: list[tuple[str, str]]) -> None:
        headers.append(("X-Stamp", self.config["tag"]))

    def wants_chunks(self, ctx: RequestContext, ex: Exchange) -> bool:
        return True

    def chunk(self, ctx: RequestContext, ex: Exchange, item):
        ctx.slot(StampState).chunks += 1
        if self.config["upper"] and ex.wire == "openai":
            for ch in item.get("choices") or ():
                delta = ch.get("delta") or {}
                if isinstance(delta.get("content"), str):
                    delta["content"] = delta["content"].upper()
        return [item]

    def response(self, ctx: RequestContext, ex: Exchange) -> None:
        ex.trailer["stamp_chunks"] = ctx.slot(StampState).chunks
        if ex.response is not None and self.config["upper"] and ex.wire == "openai":
            for ch in ex.response.get("choices") or ():
                msg = ch.get("message") or {}
                if isinstance(msg.get("content"), str):
                    msg["content"] = msg["content"].upper()

    def finish(self, ctx: RequestContext, outcome: Outcome) -> None:
        st = ctx.slot(StampState)
        st.finished += 1
        log.info("aigw-stamp mark=%s status=%s error=%s chunks=%d finished=%d cache=%s",
                 st.mark, outcome.status, outcome.error, st.chunks, st.finished, outcome.cache_status)


Plugin, Schema, version, priority = kong_plugin("ai-stamp", StampStage)
