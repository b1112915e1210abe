"""ai-router core: config validation, model resolution, target planning, circuit breaker.

Pure logic, no I/O and no PDK.  ``RouterConfig.from_dict`` turns the plugin's
``config`` into frozen value objects; ``RouterConfig.plan`` orders the targets
one request may try.
"""
from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

from aigw import schema
from aigw.cost.pricing import PriceError, PriceTable
from aigw.errors import GatewayError
from aigw.providers.registry import ALL_CAPABILITIES, GOOGLE_OAUTH, PROVIDERS, TYPE_SPECIFIC_FIELDS
from aigw.schema import ConfigInvalid
from aigw.types import ProviderConfig

__all__ = [
    "ConfigError", "Target", "ModelSpec", "Needs", "Plan", "RouterConfig", "CircuitBreaker",
    "sticky_key", "PROVIDER_TYPES", "CAPABILITIES", "default_retry_statuses",
]

PROVIDER_TYPES = frozenset(PROVIDERS)  # the registry's types (aigw/providers/registry.py)
CAPABILITIES = ALL_CAPABILITIES
NAME = "ai-router"  # the schema every default and single-field rule comes from


def default_retry_statuses() -> frozenset[int]:
    """``failover.on_status``'s default, read from schemas/ai-router.json."""
    return frozenset(schema.default(NAME, "failover", "on_status"))


# Reasons recorded in Plan.rejected
CAPABILITY = "capability"
CONTEXT_WINDOW = "context_window"
DATA_CLASS = "data_class"
CIRCUIT_OPEN = "circuit_open"


class ConfigError(ConfigInvalid):
    """Invalid ai-router config; ``field`` is the path, e.g. ``models[2].targets[0].provider``.

    The same error class (and message format) as a schema violation, so the
    plugin's start-up and ``aigw-validate`` report both kinds alike."""

    def __init__(self, field: str, message: str):
        super().__init__(NAME, field, message)


@dataclass(frozen=True)
class Target:
    provider: ProviderConfig = field(hash=False)  # ProviderConfig itself is unhashable
    model: str
    weight: int = 1
    variant: str | None = None
    tags: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        """``provider/model``: identity for breakers, prices and logs."""
        return f"{self.provider.name}/{self.model}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    aliases: tuple[str, ...]
    strategy: str
    sticky: str  # "consumer" | "none" | "header:<lower-case name>"
    capabilities: frozenset[str]
    context_window: int | None
    max_output: int | None
    tags: frozenset[str]
    allow_consumers: frozenset[str] | None  # None with allow_groups None: everyone
    allow_groups: frozenset[str] | None
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class Needs:
    """What one request requires from a model."""

    capability: str = "chat"  # chat | embeddings
    stream: bool = False
    tools: bool = False
    vision: bool = False
    prompt_tokens: int = 0
    max_output: int | None = None

    def required(self) -> frozenset[str]:
        extra = {name for name, on in (("stream", self.stream), ("tools", self.tools),
                                       ("vision", self.vision)) if on}
        return frozenset({self.capability, *extra})


@dataclass
class Plan:
    """Targets to try in order, and why others were set aside.

    ``rejected`` maps target.key to a reason (capability, context_window,
    data_class, circuit_open).  Circuit-open targets stay in ``targets``, last.
    """

    targets: list[Target]
    rejected: dict[str, str] = field(default_factory=dict)
    model: str = ""
    missing: frozenset[str] = frozenset()  # capabilities the model lacks
    blocked_classes: frozenset[str] = frozenset()  # data classes that removed targets
    needed_tokens: int = 0
    context_window: int | None = None

    def error(self) -> GatewayError | None:
        """The client answer for an empty plan (None when there is a target)."""
        if self.targets:
            return None
        reasons = set(self.rejected.values())
        if DATA_CLASS in reasons:
            classes = ", ".join(sorted(self.blocked_classes))
            return GatewayError(403, f"model '{self.model}' may not receive data of class: {classes}",
                                code="data_class_not_allowed")
        if CONTEXT_WINDOW in reasons:
            return GatewayError(
                400, f"this request needs {self.needed_tokens} tokens (prompt plus maximum output) "
                     f"but model '{self.model}' has a context window of {self.context_window}",
                code="context_length_exceeded")
        if CAPABILITY in reasons:
            missing = ", ".join(sorted(self.missing))
            return GatewayError(400, f"model '{self.model}' does not support: {missing}",
                                code="unsupported_capability")
        return GatewayError(503, f"model '{self.model}' has no usable target", code="no_target")


class CircuitBreaker:
    """Per-key breaker: opens after ``failures`` consecutive failures.

    After ``cooldown`` seconds it is half-open: ``allow`` lets exactly one
    trial through; success closes it, failure re-opens it.  A trial that never
    reports back frees its slot after another ``cooldown``.
    """

    def __init__(self, failures: int, cooldown: float,
                 clock: Callable[[], float] = time.monotonic):
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._count: dict[str, int] = {}
        self._opened: dict[str, float] = {}
        self._trial: dict[str, float] = {}

    def state(self, key: str) -> str:
        """``closed`` | ``open`` | ``half_open`` (does not take the trial)."""
        with self._lock:
            opened = self._opened.get(key)
            if opened is None:
                return "closed"
            return "open" if self._clock() - opened < self.cooldown else "half_open"

    def allow(self, key: str) -> bool:
        with self._lock:
            opened = self._opened.get(key)
            if opened is None:
                return True
            now = self._clock()
            if now - opened < self.cooldown:
                return False
            trial = self._trial.get(key)
            if trial is not None and now - trial < self.cooldown:
                return False
            self._trial[key] = now
            return True

    def record_success(self, key: str) -> None:
        with self._lock:
            self._count.pop(key, None)
            self._opened.pop(key, None)
            self._trial.pop(key, None)

    def record_failure(self, key: str) -> None:
        with self._lock:
            count = self._count.get(key, 0) + 1
            self._count[key] = count
            if key in self._opened or count >= self.failures:
                self._opened[key] = self._clock()
                self._trial.pop(key, None)


class RouterConfig:
    """Validated ai-router config."""

    def __init__(self, providers: dict[str, ProviderConfig], models: dict[str, ModelSpec],
                 aliases: dict[str, str], *, default_model: str | None, max_attempts: int,
                 retry_on_status: frozenset[int], breaker_failures: int, breaker_cooldown: float,
                 data_class_policy: Mapping[str, frozenset[str]], max_body_bytes: int,
                 prices: PriceTable):
        # no defaults here: from_dict passes every value, its defaults come from the schema
        self.providers = providers
        self.models = models
        self.aliases = aliases  # alias -> model name
        self.default_model = default_model
        self.max_attempts = max_attempts
        self.retry_on_status = retry_on_status
        self.breaker_failures = breaker_failures
        self.breaker_cooldown = breaker_cooldown
        self.data_class_policy: dict[str, frozenset[str]] = dict(data_class_policy or {})
        self.max_body_bytes = max_body_bytes
        # the route's one price table (catalogue + this config's ``prices``): cost routing
        # orders by it and ai-cost charges by it (ctx.prices); docs/pricing.md
        self.prices = prices

    # -- building -------------------------------------------------------
    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> RouterConfig:
        """Build from a plugin config.

        The config is checked against schemas/ai-router.json first (types,
        ranges, enums, patterns, unknown fields) and the schema fills every
        default; the code below checks only what JSON Schema cannot say: rules
        across entries (unique names, known references), rules that depend on a
        provider's type (from the provider registry), and the environment.  The
        plugin has validated the config already (plugin_base); validating again
        here is idempotent and keeps direct callers (tests, aigw-validate) honest.
        """
        try:
            cfg = schema.validate(NAME, dict(cfg) if isinstance(cfg, Mapping) else cfg)
        except ConfigInvalid as e:
            raise ConfigError(e.path, e.detail) from None
        providers: dict[str, ProviderConfig] = {}
        for i, raw in enumerate(cfg["providers"]):
            p = _provider(raw, f"providers[{i}]", env)
            # uniqueness across array entries by one key: JSON Schema's uniqueItems compares whole items
            if p.name in providers:
                raise ConfigError(f"providers[{i}].name", f"duplicate provider name '{p.name}'")
            providers[p.name] = p
        models: dict[str, ModelSpec] = {}
        names: dict[str, str] = {}  # name or alias -> model name
        aliases: dict[str, str] = {}
        for i, raw in enumerate(cfg["models"]):
            spec = _model(raw, f"models[{i}]", providers)
            # names and aliases share one namespace across entries: not expressible in JSON Schema
            if spec.name in names:
                raise ConfigError(f"models[{i}].name",
                                  f"'{spec.name}' is already used by model '{names[spec.name]}'")
            names[spec.name] = spec.name
            for j, alias in enumerate(spec.aliases):
                if alias in names:
                    raise ConfigError(f"models[{i}].aliases[{j}]",
                                      f"'{alias}' is already used by model '{names[alias]}'")
                names[alias] = spec.name
                aliases[alias] = spec.name
            models[spec.name] = spec
        default = cfg.get("default_model")
        # a reference to another part of the config: JSON Schema has no cross-reference check
        if default is not None and default not in names:
            raise ConfigError("default_model", f"unknown model '{default}'")
        # optional records left out arrive as null (Kong does not expand them): schema defaults
        failover = cfg.get("failover") or schema.defaults(NAME, "failover")
        breaker = cfg.get("circuit_breaker") or schema.defaults(NAME, "circuit_breaker")
        policy = {k: frozenset(v) for k, v in (cfg.get("data_class_policy") or {}).items()}
        try:  # units and the merge with catalogue entries: checks beyond a schema (aigw/cost/pricing.py)
            prices = PriceTable.default().with_overrides(cfg.get("prices"))
        except PriceError as e:
            raise ConfigError("prices", str(e)) from None
        return cls(providers, models, aliases,
                   default_model=names[default] if default is not None else None,
                   max_attempts=int(failover["max_attempts"]),
                   retry_on_status=frozenset(int(s) for s in failover["on_status"]),
                   breaker_failures=int(breaker["failures"]),
                   breaker_cooldown=float(breaker["cooldown"]),
                   data_class_policy=policy, max_body_bytes=int(cfg["max_body_bytes"]),
                   prices=prices)

    def make_breaker(self, clock: Callable[[], float] = time.monotonic) -> CircuitBreaker:
        return CircuitBreaker(self.breaker_failures, self.breaker_cooldown, clock)

    # -- lookups --------------------------------------------------------
    def resolve(self, name: str | None) -> ModelSpec | None:
        """Model by name or alias; ``default_model`` when ``name`` is empty."""
        if not name:
            return self.models.get(self.default_model) if self.default_model else None
        spec = self.models.get(name)
        if spec is None and name in self.aliases:
            spec = self.models[self.aliases[name]]
        return spec

    def allowed(self, spec: ModelSpec, consumer: str | Iterable[str] | None,
                groups: Iterable[str] = ()) -> bool:
        """Allow-list check.  ``consumer`` is one identifier or several (username, id)."""
        if spec.allow_consumers is None and spec.allow_groups is None:
            return True
        if consumer is None:
            ids: set[str] = set()
        elif isinstance(consumer, str):
            ids = {consumer}
        else:
            ids = {c for c in consumer if c}
        if spec.allow_consumers and ids & spec.allow_consumers:
            return True
        return bool(spec.allow_groups and spec.allow_groups.intersection(groups or ()))

    def visible_models(self, consumer: str | Iterable[str] | None,
                       groups: Iterable[str] = ()) -> list[ModelSpec]:
        groups = tuple(groups or ())
        return [m for m in self.models.values() if self.allowed(m, consumer, groups)]

    # -- planning -------------------------------------------------------
    def plan(self, spec: ModelSpec, needs: Needs, *, sticky_key: str | None,
             data_classes: Iterable[str] = (), prices: PriceTable | None = None,
             breaker: CircuitBreaker | None = None) -> Plan:
        """Ordered targets for one request (see docs and module docstring)."""
        max_out = needs.max_output or spec.max_output or 0
        plan = Plan(targets=[], model=spec.name, needed_tokens=needs.prompt_tokens + max_out,
                    context_window=spec.context_window)
        missing = needs.required() - spec.capabilities
        if missing:
            plan.missing = frozenset(missing)
            plan.rejected = {t.key: CAPABILITY for t in spec.targets}
            return plan
        if spec.context_window is not None and plan.needed_tokens > spec.context_window:
            plan.rejected = {t.key: CONTEXT_WINDOW for t in spec.targets}
            return plan
        classes = frozenset(data_classes)
        eligible: list[Target] = []
        blocked: set[str] = set()
        for t in spec.targets:
            refused = self._refused_classes(spec, t, classes)
            if refused:
                blocked |= refused
                plan.rejected[t.key] = DATA_CLASS
            else:
                eligible.append(t)
        plan.blocked_classes = frozenset(blocked)
        if not eligible:
            return plan
        ordered = self._order(spec, eligible, needs, max_out, sticky_key,
                              self.prices if prices is None else prices)
        if breaker is None:
            plan.targets = ordered[: self.max_attempts]
            return plan
        healthy: list[Target] = []
        opened: list[Target] = []
        for t in ordered:  # ask the breaker only as far as needed (allow() may take a trial)
            if len(healthy) >= self.max_attempts:
                break
            if breaker.allow(t.key):
                healthy.append(t)
            else:
                opened.append(t)
                plan.rejected[t.key] = CIRCUIT_OPEN
        plan.targets = (healthy + opened)[: self.max_attempts]
        return plan

    def _refused_classes(self, spec: ModelSpec, target: Target, classes: frozenset[str]) -> set[str]:
        tags = target.tags | spec.tags
        return {c for c in classes
                if c in self.data_class_policy and not (tags & self.data_class_policy[c])}

    @staticmethod
    def _order(spec: ModelSpec, targets: list[Target], needs: Needs, max_out: int,
               sticky: str | None, table: PriceTable) -> list[Target]:
        if spec.strategy == "priority":
            return list(targets)
        if spec.strategy == "cost":

            def cost_key(t: Target) -> tuple[bool, float, float]:
                worst = table.worst_case(t, needs.prompt_tokens, max_out)
                price = table.lookup(t)
                return (worst is None, worst or 0.0, (price.input + price.output) if price else 0.0)

            return sorted(targets, key=cost_key)
        return _weighted(targets, sticky, spec.name)


def sticky_key(spec: ModelSpec, consumer: str | None,
               headers: Mapping[str, Any] | None = None) -> str | None:
    """The stickiness key the model's ``sticky`` setting asks for (None: random)."""
    if spec.sticky == "none":
        return None
    if spec.sticky == "consumer":
        return consumer or None
    name = spec.sticky.split(":", 1)[1]
    for k, v in (headers or {}).items():
        if k.lower() == name:
            value = (v[0] if v else None) if isinstance(v, (list, tuple)) else v  # the first one
            return str(value) if value else None
    return None


def _weighted(targets: list[Target], sticky: str | None, model: str) -> list[Target]:
    by_weight = sorted(targets, key=lambda t: -t.weight)
    total = sum(t.weight for t in targets)
    if total <= 0:
        return by_weight
    if sticky is None:
        point = random.randrange(total)
    else:
        digest = blake2b(f"{model}\x00{sticky}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") % total
    primary = by_weight[0]
    acc = 0
    for t in targets:
        acc += t.weight
        if point < acc:
            primary = t
            break
    return [primary] + [t for t in by_weight if t is not primary]


# -- entry builders: the config is schema-valid here; each check names its path ----------

def _provider(obj: Mapping[str, Any], path: str, env: Mapping[str, str]) -> ProviderConfig:
    name = obj["name"]
    type_ = obj["type"]
    kind = PROVIDERS[type_]  # the schema's enum equals the registry's types (test_provider_registry)
    # rules that depend on the type come from the registry, one entry per provider: the schema
    # Kong reads has no if/then, and a per-type rule belongs beside the type's adapter
    base_url = obj.get("base_url") or kind.default_base_url
    if base_url is None:
        raise ConfigError(f"{path}.base_url", f"required for type '{type_}'")
    api_key = obj.get("api_key")
    key_env = obj.get("api_key_env")
    # two fields that exclude each other: JSON Schema says so only as "invalid (not)", naming neither
    if api_key is not None and key_env is not None:
        raise ConfigError(f"{path}.api_key_env", "set api_key or api_key_env, not both")
    if key_env is not None:  # the environment, not the config: no schema can check it
        api_key = env.get(key_env) or None
        if api_key is None:
            raise ConfigError(f"{path}.api_key_env", f"environment variable '{key_env}' is not set")
    for key in TYPE_SPECIFIC_FIELDS:
        if obj.get(key) is not None and key not in kind.fields:
            raise ConfigError(f"{path}.{key}", f"not used by type '{type_}'")
    for key in kind.required:
        if obj.get(key) is None:
            raise ConfigError(f"{path}.{key}", f"required for type '{type_}'")
    if obj.get("credentials_file") is not None and obj.get("credentials_json") is not None:
        raise ConfigError(f"{path}.credentials_json",
                          "set credentials_file or credentials_json, not both")
    if not kind.api_key and (api_key is not None or key_env is not None):
        raise ConfigError(f"{path}.api_key" if key_env is None else f"{path}.api_key_env",
                          f"type '{type_}' authenticates with google-auth "
                          "(credentials_file, credentials_json or ADC)" if kind.auth == GOOGLE_OAUTH
                          else f"type '{type_}' takes no API key")
    timeouts = {**schema.defaults(NAME, "providers", "[]", "timeouts"), **(obj.get("timeouts") or {})}
    return ProviderConfig(name=name, type=type_, base_url=base_url.rstrip("/"), api_key=api_key,
                          api_version=obj.get("api_version"),
                          connect_timeout=timeouts["connect"] / 1000.0,
                          first_byte_timeout=timeouts["first_byte"] / 1000.0,
                          total_timeout=timeouts["total"] / 1000.0,
                          headers=dict(obj.get("headers") or {}),
                          **{k: obj.get(k) for k in TYPE_SPECIFIC_FIELDS})


def _model(obj: Mapping[str, Any], path: str, providers: Mapping[str, ProviderConfig]) -> ModelSpec:
    strategy = obj["strategy"]
    sticky = obj["sticky"]  # the schema's pattern: consumer | none | header:<name>
    if sticky.startswith("header:"):
        sticky = "header:" + sticky[7:].strip().lower()
    caps = frozenset(obj["capabilities"])
    window = obj.get("context_window")
    max_output = obj.get("max_output")
    # a bound between two fields: JSON Schema compares a value only with constants
    if window is not None and max_output is not None and max_output > window:
        raise ConfigError(f"{path}.max_output", "must not exceed context_window")
    allow_consumers = allow_groups = None
    if obj.get("allow") is not None:
        allow_consumers = frozenset(obj["allow"].get("consumers") or ())
        allow_groups = frozenset(obj["allow"].get("groups") or ())
    targets: list[Target] = []
    for j, raw in enumerate(obj["targets"]):
        t = _target(raw, f"{path}.targets[{j}]", providers)
        if any(t.key == other.key for other in targets):  # uniqueness by a derived key
            raise ConfigError(f"{path}.targets[{j}]", f"duplicate target '{t.key}'")
        # what the provider's adapter can serve (registry) against what the model promises
        lacking = caps - PROVIDERS[t.provider.type].capabilities
        if lacking:
            raise ConfigError(f"{path}.targets[{j}].provider",
                              f"provider type '{t.provider.type}' does not support: "
                              f"{', '.join(sorted(lacking))}")
        targets.append(t)
    # a sum over entries, and only for one strategy
    if strategy == "weighted" and sum(t.weight for t in targets) <= 0:
        raise ConfigError(f"{path}.targets", "weights must add up to more than 0")
    return ModelSpec(name=obj["name"], aliases=tuple(obj.get("aliases") or ()), strategy=strategy,
                     sticky=sticky, capabilities=caps, context_window=window, max_output=max_output,
                     tags=frozenset(obj.get("tags") or ()),
                     allow_consumers=allow_consumers, allow_groups=allow_groups,
                     targets=tuple(targets))


def _target(obj: Mapping[str, Any], path: str, providers: Mapping[str, ProviderConfig]) -> Target:
    pname = obj["provider"]
    if pname not in providers:  # a reference to another entry: no schema check for it
        raise ConfigError(f"{path}.provider", f"unknown provider '{pname}'")
    return Target(provider=providers[pname], model=obj["model"], weight=int(obj["weight"]),
                  variant=obj.get("variant"), tags=frozenset(obj.get("tags") or ()))
