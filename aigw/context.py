"""Per-request state shared by the stages and the relay, in memory.

Kong runs our plugins' access handlers and then proxies the request to the
relay; all of them live in the one plugin-server process, so the request's
state (parsed body, redaction map, routing plan, reservations) stays here and
only a signed ticket travels with the request.

The first AI plugin to run for a request creates the context and sets the
ticket as an upstream header with ``kong.service.request.set_header``; in
Kong that call changes the request headers that later plugins read through
``kong.request.get_headers`` (kong/pdk/service/request.lua uses
``ngx.req.set_header``), so each later plugin finds the context with the
single ``get_headers`` call it needs anyway.  The relay accepts a request
only with a valid, unexpired, unclaimed ticket.

Each stage (aigw/pipeline.py) keeps its own state in a typed ``Slice`` of the
context (``ctx.slot(CacheState)``); the context's own fields are what every
stage reads.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import gevent

if TYPE_CHECKING:  # annotation only: the context needs none of them at run time (the
    # pipeline and ai-limits' batch import the context)
    from .cost.pricing import PriceTable
    from .gateway.limits import Batch
    from .pipeline import Replay, Terminal
    from .routing import ModelSpec, Target
    from .tokens.counting import Count
    from .types import Usage

log = logging.getLogger("aigw")

TICKET_HEADER = "x-aigw-ticket"
TICKET_TTL = float(os.environ.get("AIGW_TICKET_TTL", "60"))

_SECRET = secrets.token_bytes(32)  # never leaves this process


@dataclass
class Outcome:
    """How a request ended, handed to every finish hook exactly once."""

    status: int = 0
    usage: Usage | None = None
    target: Target | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    cache_status: str | None = None
    cost_usd: float | None = None
    ttft: float | None = None
    duration: float = 0.0
    error: str | None = None
    response: dict[str, Any] | None = None   # canonical response (for the cache), not logged
    reached_provider: bool = False


class Slice:
    """Base of a stage's typed slice of the request context (a dataclass per stage,
    ``ctx.slot(CacheState)``): the only way stages keep per-request state, so that each
    feature's state has one owner and one type (after kong/llm/plugin/ctx.lua, where a key
    must be registered with its type in its namespace and a mismatch raises)."""

    __slots__ = ()

    def log_fields(self) -> dict[str, Any]:
        """Fields this slice adds to the request's log line (counts and names only)."""
        return {}


S = TypeVar("S", bound=Slice)


@dataclass
class RequestContext:
    """What every stage and the engine share about one request. Feature state lives in
    typed slices (``slot``); the fields here are the request as the gateway understands it
    (set by the stage that decides them, read by all)."""

    id: str
    api: str                       # chat | embeddings | models | anthropic | responses | count_tokens
    path: str
    headers: dict[str, str]
    raw_body: bytes
    consumer: dict[str, Any] | None
    created: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    body: Any = None               # parsed client body; redaction rewrites it in place
    canonical: dict[str, Any] | None = None  # OpenAI-shaped request sent to adapters
    groups: list[str] | None = None
    # the request as routed (set by the routing stage, read by the others)
    model: ModelSpec | None = None
    plan: list[Target] = field(default_factory=list)  # in failover order
    stream: bool = False
    include_usage: bool = False    # the client asked for stream usage
    prompt_count: Count | None = None
    max_output: int | None = None
    output_cap: int | None = None  # output tokens per choice reserved by ai-tokens/ai-cost
    data_classes: set[str] = field(default_factory=set)  # sensitive data found (steers routing)
    prices: PriceTable | None = None  # the route's one table (ai-router's)
    log_fields: dict[str, Any] = field(default_factory=dict)  # core fields of the log line (trace ids)
    hooks: list[Callable[[Outcome], None]] = field(default_factory=list)
    # the pipeline: stages whose request side ran (aigw.pipeline.run_request), the terminal
    # step one of them provides, an early answer, and the client API's writer
    stages: list[Any] = field(default_factory=list)
    limits: Batch | None = None    # reservations until the relay commits
    terminal: Terminal | None = None
    early: Replay | None = None
    # aigw.pipeline.Egress | None (and ``anchor`` below, aigw.instances.Instance | None): left
    # Any until aigw/relay type-checks, which reads both as set (typed, 13 findings there)
    egress: Any = None
    # plugins whose access handler started but did not finish: if Kong gave up on an
    # event mid-way (real Kong logs an RPC error and continues), the relay refuses
    pending: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)  # plugins whose access decision completed
    canonical_hooks: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    # Kong's scope of the request: the ai-router instance that issued the ticket
    # (aigw.instances.Instance) and the route/service ids the registry picks configs by
    anchor: Any = None
    route_id: str | None = None
    service_id: str | None = None
    state: str = "open"            # open -> claimed -> finished
    ticket: str = ""
    slots: dict[type, Slice] = field(default_factory=dict)

    @property
    def consumer_name(self) -> str | None:
        c = self.consumer
        if not c:
            return None
        return c.get("username") or c.get("custom_id") or c.get("id")

    @property
    def error_api(self) -> str:
        """The client API errors are written in: ``anthropic`` or ``openai``."""
        return "anthropic" if self.api in ("anthropic", "count_tokens") else "openai"

    # -------------------------------------------------------------- typed slices
    def slot(self, cls: type[S]) -> S:
        """The request's instance of a stage's slice, created empty on first use."""
        s = self.slots.get(cls)
        if s is None:
            if not (isinstance(cls, type) and issubclass(cls, Slice)):
                raise TypeError(f"{cls!r} is not a context slice (aigw.context.Slice)")
            s = self.slots[cls] = cls()
        return s  # type: ignore[return-value]

    def put(self, value: Slice) -> None:
        """Set a slice (replacing the request's instance of its class)."""
        if not isinstance(value, Slice):
            raise TypeError(f"{type(value).__name__} is not a context slice (aigw.context.Slice)")
        self.slots[type(value)] = value

    def has(self, cls: type[Slice]) -> bool:
        return cls in self.slots

    # ------------------------------------------------------------------ pipeline
    def provide(self, terminal: Terminal) -> None:
        """The stage that calls the provider offers its terminal step (one per request)."""
        self.terminal = terminal

    def answer_early(self, replay: Replay) -> None:
        """Answer without a provider call (a cache hit): later stages see ``answered``."""
        self.early = replay

    @property
    def answered(self) -> bool:
        return self.early is not None

    def on_canonical(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Run ``fn`` on the canonical request once the routing stage has built it (an API
        whose whole request only the router can rebuild: the Responses API)."""
        self.canonical_hooks.append(fn)

    def canonical_ready(self, canonical: dict[str, Any]) -> None:
        hooks, self.canonical_hooks = self.canonical_hooks, []
        for fn in hooks:
            fn(canonical)

    def on_finish(self, fn: Callable[[Outcome], None]) -> None:
        self.hooks.append(fn)

    def finish(self, outcome: Outcome) -> None:
        """Run every finish hook once; a failing hook never stops the others."""
        if self.state == "finished":
            return
        self.state = "finished"
        STORE.drop(self.id)
        for fn in self.hooks:
            try:
                fn(outcome)
            except Exception as exc:  # logged without request content
                log.error("aigw finish hook failed: %s", type(exc).__name__)
        self.hooks.clear()
        if _observer is not None:
            try:
                _observer(self, outcome)
            except Exception as exc:
                log.error("aigw observer failed: %s", type(exc).__name__)
        self.slots.clear()  # restore maps and other request state go as soon as it ends
        self.early = None


_observer: Callable[[RequestContext, Outcome], None] | None = None


def set_observer(fn: Callable[[RequestContext, Outcome], None]) -> None:
    """Install the function that logs and meters every finished request."""
    global _observer
    _observer = fn


def _sign(payload: str) -> str:
    return hmac.new(_SECRET, payload.encode(), hashlib.sha256).hexdigest()[:32]


class ContextStore:
    def __init__(self) -> None:
        self._items: dict[str, RequestContext] = {}
        self._sweeper: gevent.Greenlet[[], None] | None = None

    def create(self, **kw: Any) -> RequestContext:
        cid = secrets.token_hex(16)
        ctx = RequestContext(id=cid, **kw)
        exp = int(time.time() + TICKET_TTL)
        payload = f"{cid}.{exp}"
        ctx.ticket = f"{payload}.{_sign(payload)}"
        self._items[cid] = ctx
        if self._sweeper is None:
            self._sweeper = gevent.spawn(self._sweep_forever)
        return ctx

    def _verify(self, ticket: str | None) -> RequestContext | None:
        if not ticket or ticket.count(".") != 2:
            return None
        cid, exp, sig = ticket.split(".")
        if not hmac.compare_digest(sig, _sign(f"{cid}.{exp}")):
            return None
        try:
            if int(exp) < time.time():
                return None
        except ValueError:
            return None
        return self._items.get(cid)

    def ticket_id(self, ticket: str | None) -> str | None:
        """The context id of a genuine ticket (signature checked), even once finished."""
        if not ticket or ticket.count(".") != 2:
            return None
        cid, exp, sig = ticket.split(".")
        return cid if hmac.compare_digest(sig, _sign(f"{cid}.{exp}")) else None

    def lookup(self, ticket: str | None) -> RequestContext | None:
        """For plugins in access/log: the open or claimed context of a ticket."""
        ctx = self._verify(ticket)
        return ctx if ctx is not None and ctx.state != "finished" else None

    def claim(self, ticket: str | None) -> RequestContext | None:
        """For the relay: each ticket serves exactly one proxied request."""
        ctx = self._verify(ticket)
        if ctx is None or ctx.state != "open":
            return None
        ctx.state = "claimed"
        return ctx

    def drop(self, cid: str) -> None:
        self._items.pop(cid, None)

    def __len__(self) -> int:
        return len(self._items)

    def _sweep_forever(self) -> None:
        while True:
            gevent.sleep(max(1.0, TICKET_TTL / 4))
            self.sweep()

    def sweep(self, now: float | None = None) -> int:
        """Finish contexts whose request never reached the relay (releases reservations)."""
        now = now or time.time()
        stale = [c for c in list(self._items.values())
                 if c.state == "open" and now - c.created > TICKET_TTL]
        for c in stale:
            c.finish(Outcome(status=0, error="not_proxied"))
        return len(stale)


STORE = ContextStore()
