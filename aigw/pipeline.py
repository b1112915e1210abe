"""The stage interface: every feature owns both directions of a request.

A **stage** is one feature (redaction, routing, caching, token limits, cost...)
built once per plugin instance from its validated config (``RedactStage(config)``).
A request runs through an ordered list of stages (highest priority first, as
Kong orders plugins):

``request(ctx)``
    decide before any provider is called: rewrite the request, deny it
    (raise ``GatewayError``), answer it at once (raise ``Respond``, or set an
    early answer with ``ctx.answer_early(Replay(...))``), or offer the
    terminal step (``ctx.provide(terminal)``: the one stage that calls a
    provider, ai-router's). ``run_request(ctx, stages)`` runs this side.
``headers(ctx, ex, headers)``
    the response head is about to be sent (success, error or stream): add
    headers. ``ex.usage`` is known for a complete answer and for a replay.
``chunk(ctx, ex, item)`` / ``flush(ctx, ex)``
    each stream item, in the order of the stages; returns the items to pass
    on: ``[item]`` (pass), a rewritten item, ``[]`` (hold back) or more.
    Only stages whose ``wants_chunks(ctx, ex)`` is true are called; when none
    is, items go from the provider to the client untouched. ``flush`` gives
    back what a stage still holds when the stream ends.
``response(ctx, ex)``
    the answer is over (complete, cut or broken) and its usage is known:
    rewrite a non-stream body (``ex.response``, before it is encoded for the
    client), price it, put fields on the stream's final usage event
    (``ex.trailer`` / ``ex.usage_fields``). Runs once per answered request.
``finish(ctx, outcome)``
    exactly once, however the request ended (success, provider error, client
    gone, broken stream, early answer, denial, never proxied).

Each stage keeps its per-request state in its own typed slice of the context
(a ``Slice`` dataclass, ``ctx.slot(CacheState)``). The engine that runs the
stages (``aigw.relay.app``) imports this module only and knows no stage by name.

Shape after Kong 3.9.1's AI plugin framework (kong/llm/plugin/base.lua ``STAGES``:
request introspection/transformation, response introspection/transformation,
streaming, post-processing; kong/llm/plugin/ctx.lua: a namespaced ctx whose keys
are registered with a type and fail loudly otherwise) and Envoy AI Gateway's
per-request translator (internal/translator/translator.go: request body,
response headers, response body with end-of-stream, token usage).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from . import schema
from .context import Outcome, RequestContext, Slice
from .tokens.counting import count_completion_text
from .types import Usage

if TYPE_CHECKING:
    from .relay.app import Engine

__all__ = ["Stage", "Slice", "Exchange", "Replay", "Respond", "Terminal", "Source", "Egress",
           "StreamBroken", "run_request", "response_stages", "counted_usage", "with_prompt"]


class Respond(Exception):
    """Answer the client directly from the request side (e.g. GET /v1/models)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body if isinstance(body, bytes) else orjson.dumps(body)
        self.headers = {"Content-Type": "application/json", **(headers or {})}


@dataclass
class Replay:
    """An answer the gateway already has (a cache hit): served instead of a provider call,
    through the same response-side stages, marked ``ex.replayed``."""

    response: dict[str, Any]                 # canonical chat.completion
    usage: dict[str, Any]                    # OpenAI-shaped usage kept beside it
    target: Any                              # aigw.routing.Target it was answered by
    chunks: Callable[[], Iterable[dict[str, Any]]]  # the canonical chunks of a stream replay


@dataclass
class Exchange:
    """The response side of one request, as the stages see it."""

    outcome: Outcome
    stream: bool = False
    replayed: bool = False                   # an early answer (cache), not generated now
    wire: str = "openai"                     # item shape: openai (canonical) | anthropic (native)
    usage: Usage | None = None               # known once the answer is over (or for a replay)
    response: dict[str, Any] | None = None   # non-stream body (client wire), stages may rewrite
    complete: bool = False                   # the answer ended normally
    keep_answer: bool = False                # some stage wants the canonical answer at finish
    egress: Any = None                       # the writer, when not the client API's (ctx.egress)
    head: list[tuple[str, str]] = field(default_factory=list)   # headers the answer's source adds
    trailer: dict[str, Any] = field(default_factory=dict)       # on the final usage event
    usage_fields: dict[str, Any] = field(default_factory=dict)  # inside its usage object

    @property
    def target(self) -> Any:
        return self.outcome.target


class Stage:
    """Base class of a feature's stage; every hook is optional (the default does nothing)."""

    name = ""          # the plugin it belongs to, e.g. "ai-cost"
    priority = 0       # higher runs first (Kong's plugin priority)

    def __init__(self, config: dict[str, Any]):
        # the plugin's JSON Schema is the one source of its defaults: a stage built from a
        # partial config (tests, tools) gets them filled, and a wrong one is refused, exactly
        # as at StartInstance (aigw/plugin_base.py); validating a validated config changes nothing
        self.config = schema.validate(self.name, config) if self.name else config

    def request(self, ctx: RequestContext) -> None:
        """Request side; raise ``GatewayError`` to deny, ``Respond`` to answer at once."""

    def keeps_answer(self, ctx: RequestContext) -> bool:
        """True to receive the canonical (unrewritten) answer in ``outcome.response``."""
        return False

    def headers(self, ctx: RequestContext, ex: Exchange, headers: list[tuple[str, str]]) -> None:
        """The response head is about to be sent: append headers."""

    def wants_chunks(self, ctx: RequestContext, ex: Exchange) -> bool:
        """Asked once per stream: whether ``chunk``/``flush`` should be called."""
        return False

    def chunk(self, ctx: RequestContext, ex: Exchange, item: Any) -> list[Any]:
        return [item]

    def flush(self, ctx: RequestContext, ex: Exchange) -> list[Any]:
        return []

    def response(self, ctx: RequestContext, ex: Exchange) -> None:
        """The answer is over and ``ex.usage`` is known."""

    def finish(self, ctx: RequestContext, outcome: Outcome) -> None:
        """Once, however the request ended."""


def run_request(ctx: RequestContext, stages: Iterable[Stage]) -> None:
    """Run the request side of ``stages`` (already in priority order) over ``ctx``.

    Each stage joins the request's pipeline (``ctx.stages``) before its request side
    runs, so its ``finish`` runs even when it (or a later stage) denies the request.
    Called by each plugin's access phase with its own stage, and usable by whatever runs
    a route's whole pipeline in one place."""
    for stage in stages:
        if stage not in ctx.stages:
            ctx.stages.append(stage)
            ctx.on_finish(_finisher(stage, ctx))
        stage.request(ctx)


def _finisher(stage: Stage, ctx: RequestContext) -> Callable[[Outcome], None]:
    return lambda outcome: stage.finish(ctx, outcome)


def response_stages(ctx: RequestContext) -> list[Stage]:
    """The request's stages in priority order (the order the response side runs them)."""
    return sorted(ctx.stages, key=lambda s: -s.priority)


class StreamBroken(Exception):
    """A stream source failed after the head was sent: the engine ends the stream with an
    error event (what was produced is still accounted)."""

    def __init__(self, message: str, error: str):
        super().__init__(error)
        self.message = message
        self.error = error


class Egress(Protocol):
    """How an answer is written in the client's API (chat, Anthropic Messages, Responses)."""

    def body(self, ctx: RequestContext, resp: dict[str, Any], usage: Usage) -> bytes: ...

    def chunk(self, item: Any) -> bytes: ...

    def end(self, ctx: RequestContext, ex: Exchange) -> bytes: ...

    def error(self, message: str) -> bytes: ...


class Source(Protocol):
    """An answer on its way: a stream of ``items`` (the writer is ``ex.egress`` or the
    request's ``ctx.egress``)."""

    def items(self) -> Iterator[Any]: ...

    def usage(self) -> Usage: ...

    def close(self) -> None: ...


class Terminal(Protocol):
    """The step that produces the answer (ai-router's provider call). ``answer`` calls the
    provider (with failover) until one target answers; it fills ``ex`` (``response`` and
    ``usage`` for a non-stream answer) and returns a Source for a stream, or None."""

    def answer(self, engine: Engine, ex: Exchange) -> Source | None: ...

    def check(self, ctx: RequestContext) -> None:
        """Before anything is sent: refuse (``GatewayError``) a request whose checks are
        incomplete."""


# ----------------------------------------------------------------- usage of an answer

def counted_usage(ctx: RequestContext, model: str, completion_text: str) -> Usage:
    """Usage when the provider reported none: our own counts, flagged estimated."""
    prompt = ctx.prompt_count.tokens if ctx.prompt_count is not None else 0
    out = count_completion_text(completion_text, model).tokens if completion_text else 0
    return Usage(input_tokens=prompt, output_tokens=out, estimated=True)


def with_prompt(ctx: RequestContext, usage: Usage) -> Usage:
    """A provider that reported output but no prompt tokens: our prompt count, flagged estimated."""
    pc = ctx.prompt_count
    if usage.input_tokens or pc is None or not pc.tokens:
        return usage
    return dataclasses.replace(usage, input_tokens=pc.tokens, estimated=True)
