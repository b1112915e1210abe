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
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, Callable, Iterable, Mapping

from aigw.cost.pricing import PriceTable
from aigw.errors import GatewayError
from aigw.types import ProviderConfig

__all__ = [
    "ConfigError", "Target", "ModelSpec", "Needs", "Plan", "RouterConfig", "CircuitBreaker",
    "sticky_key", "PROVIDER_TYPES", "CAPABILITIES",
]

PROVIDER_TYPES = frozenset({"openai", "azure", "anthropic", "gemini", "mistral", "openai_compatible",
                            "bedrock", "vertex"})
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "mistral": "https://api.mistral.ai/v1",
}
STRATEGIES = ("weighted", "cost", "priority")
CAPABILITIES = frozenset({"chat", "stream", "tools", "vision", "embeddings"})
DEFAULT_CAPABILITIES = frozenset({"chat", "stream", "tools"})
DEFAULT_TIMEOUTS_MS = {"connect": 5000, "first_byte": 30000, "total": 300000}
DEFAULT_RETRY_STATUS = (429, 500, 502, 503, 504)

# Reasons recorded in Plan.rejected
CAPABILITY = "capability"
CONTEXT_WINDOW = "context_window"
DATA_CLASS = "data_class"
CIRCUIT_OPEN = "circuit_open"

_PROVIDER_KEYS = frozenset({"name", "type", "base_url", "api_key", "api_key_env", "api_version",
                            "timeouts", "headers", "region", "project", "credentials_file",
                            "credentials_json"})
_MODEL_KEYS = frozenset({"name", "aliases", "strategy", "sticky", "capabilities", "context_window",
                         "max_output", "tags", "allow", "targets"})
_TARGET_KEYS = frozenset({"provider", "model", "weight", "variant", "tags"})


class ConfigError(ValueError):
    """Invalid ai-router config; ``field`` is the path, e.g. ``models[2].targets[0].provider``."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


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

    def __init__(self, failures: int = 5, cooldown: float = 30.0,
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
                 aliases: dict[str, str], *, default_model: str | None = None,
                 max_attempts: int = 3, retry_on_status: frozenset[int] = frozenset(DEFAULT_RETRY_STATUS),
                 breaker_failures: int = 5, breaker_cooldown: float = 30.0,
                 data_class_policy: Mapping[str, frozenset[str]] | None = None,
                 max_body_bytes: int = 1048576):
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

    # -- building -------------------------------------------------------
    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> "RouterConfig":
        cfg = _obj(cfg, "config")
        providers: dict[str, ProviderConfig] = {}
        for i, raw in enumerate(_list(cfg.get("providers"), "providers", required=True)):
            p = _provider(raw, f"providers[{i}]", env)
            if p.name in providers:
                raise ConfigError(f"providers[{i}].name", f"duplicate provider name '{p.name}'")
            providers[p.name] = p
        models: dict[str, ModelSpec] = {}
        names: dict[str, str] = {}  # name or alias -> model name
        aliases: dict[str, str] = {}
        for i, raw in enumerate(_list(cfg.get("models"), "models", required=True)):
            spec = _model(raw, f"models[{i}]", providers)
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
        default = _opt_str(cfg.get("default_model"), "default_model")
        if default is not None and default not in names:
            raise ConfigError("default_model", f"unknown model '{default}'")
        failover = _obj(cfg.get("failover") or {}, "failover")
        max_attempts = _int(failover.get("max_attempts"), "failover.max_attempts", default=3, minimum=1)
        on_status = _list(failover.get("on_status"), "failover.on_status")
        if failover.get("on_status") is None:
            on_status = list(DEFAULT_RETRY_STATUS)
        statuses = frozenset(_int(s, f"failover.on_status[{j}]", minimum=400, maximum=599)
                             for j, s in enumerate(on_status))
        breaker = _obj(cfg.get("circuit_breaker") or {}, "circuit_breaker")
        failures = _int(breaker.get("failures"), "circuit_breaker.failures", default=5, minimum=1)
        cooldown = _number(breaker.get("cooldown"), "circuit_breaker.cooldown", default=30.0)
        policy = _policy(cfg.get("data_class_policy"))
        max_body = _int(cfg.get("max_body_bytes"), "max_body_bytes", default=1048576, minimum=1)
        return cls(providers, models, aliases,
                   default_model=names[default] if default is not None else None,
                   max_attempts=max_attempts, retry_on_status=statuses,
                   breaker_failures=failures, breaker_cooldown=cooldown,
                   data_class_policy=policy, max_body_bytes=max_body)

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
        ordered = self._order(spec, eligible, needs, max_out, sticky_key, prices)
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
               sticky: str | None, prices: PriceTable | None) -> list[Target]:
        if spec.strategy == "priority":
            return list(targets)
        if spec.strategy == "cost":
            table = prices or PriceTable.default()

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
            if isinstance(v, (list, tuple)):
                v = v[0] if v else None
            return str(v) if v else None
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


# -- field readers (each error names its path) ---------------------------

def _obj(value: Any, path: str, keys: frozenset[str] | None = None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, "expected an object")
    if keys is not None:
        unknown = sorted(k for k, v in value.items() if k not in keys and v is not None)
        if unknown:
            raise ConfigError(f"{path}.{unknown[0]}", "unknown field")
    return value


def _list(value: Any, path: str, *, required: bool = False) -> list[Any]:
    if value is None:
        if required:
            raise ConfigError(path, "at least one entry is required")
        return []
    if not isinstance(value, (list, tuple)):
        raise ConfigError(path, "expected a list")
    if required and not value:
        raise ConfigError(path, "at least one entry is required")
    return list(value)


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, "expected a non-empty string")
    return value


def _opt_str(value: Any, path: str) -> str | None:
    return None if value is None else _str(value, path)


def _strings(value: Any, path: str) -> tuple[str, ...]:
    return tuple(_str(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path)))


def _int(value: Any, path: str, *, default: int | None = None, minimum: int | None = None,
         maximum: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON from Lua may turn integers into floats
        else:
            raise ConfigError(path, "expected an integer")
    if minimum is not None and value < minimum:
        raise ConfigError(path, f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(path, f"must be <= {maximum}")
    return value


def _opt_int(value: Any, path: str, minimum: int = 1) -> int | None:
    return None if value is None else _int(value, path, minimum=minimum)


def _number(value: Any, path: str, *, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(path, "expected a positive number")
    return float(value)


def _provider(raw: Any, path: str, env: Mapping[str, str]) -> ProviderConfig:
    obj = _obj(raw, path, _PROVIDER_KEYS)
    name = _str(obj.get("name"), f"{path}.name")
    if "/" in name:
        raise ConfigError(f"{path}.name", "must not contain '/'")
    type_ = obj.get("type")
    if type_ not in PROVIDER_TYPES:
        raise ConfigError(f"{path}.type", f"expected one of {', '.join(sorted(PROVIDER_TYPES))}")
    base_url = _opt_str(obj.get("base_url"), f"{path}.base_url") or DEFAULT_BASE_URLS.get(type_)
    if base_url is None:
        raise ConfigError(f"{path}.base_url", f"required for type '{type_}'")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{path}.base_url", "expected an http:// or https:// URL")
    api_key = _opt_str(obj.get("api_key"), f"{path}.api_key")
    key_env = _opt_str(obj.get("api_key_env"), f"{path}.api_key_env")
    if api_key is not None and key_env is not None:
        raise ConfigError(f"{path}.api_key_env", "set api_key or api_key_env, not both")
    if key_env is not None:
        api_key = env.get(key_env) or None
        if api_key is None:
            raise ConfigError(f"{path}.api_key_env", f"environment variable '{key_env}' is not set")
    api_version = _opt_str(obj.get("api_version"), f"{path}.api_version")
    if type_ == "azure" and api_version is None:
        raise ConfigError(f"{path}.api_version", "required for type 'azure'")
    timeouts_raw = _obj(obj.get("timeouts") or {}, f"{path}.timeouts",
                        frozenset(DEFAULT_TIMEOUTS_MS))
    timeouts = {k: _int(timeouts_raw.get(k), f"{path}.timeouts.{k}", default=d, minimum=1) / 1000.0
                for k, d in DEFAULT_TIMEOUTS_MS.items()}
    headers_raw = _obj(obj.get("headers") or {}, f"{path}.headers")
    headers = {_str(k, f"{path}.headers"): _str(v, f"{path}.headers.{k}")
               for k, v in headers_raw.items()}
    cloud = _cloud_fields(obj, path, type_)
    if type_ == "vertex" and api_key is not None:
        raise ConfigError(f"{path}.api_key", "type 'vertex' authenticates with google-auth "
                                             "(credentials_file, credentials_json or ADC)")
    return ProviderConfig(name=name, type=type_, base_url=base_url.rstrip("/"), api_key=api_key,
                          api_version=api_version, connect_timeout=timeouts["connect"],
                          first_byte_timeout=timeouts["first_byte"],
                          total_timeout=timeouts["total"], headers=headers, **cloud)


def _cloud_fields(obj: Mapping[str, Any], path: str, type_: str) -> dict[str, str | None]:
    """region / project / credentials_*: only for bedrock and vertex, required where needed."""
    out = {k: _opt_str(obj.get(k), f"{path}.{k}")
           for k in ("region", "project", "credentials_file", "credentials_json")}
    allowed = {"bedrock": {"region"},
               "vertex": {"region", "project", "credentials_file", "credentials_json"}
               }.get(type_, set())
    for key, value in out.items():
        if value is not None and key not in allowed:
            raise ConfigError(f"{path}.{key}", f"not used by type '{type_}'")
    required = {"bedrock": ("region",), "vertex": ("region", "project")}.get(type_, ())
    for key in required:
        if out[key] is None:
            raise ConfigError(f"{path}.{key}", f"required for type '{type_}'")
    if out["credentials_file"] is not None and out["credentials_json"] is not None:
        raise ConfigError(f"{path}.credentials_json",
                          "set credentials_file or credentials_json, not both")
    return out


def _model(raw: Any, path: str, providers: Mapping[str, ProviderConfig]) -> ModelSpec:
    obj = _obj(raw, path, _MODEL_KEYS)
    name = _str(obj.get("name"), f"{path}.name")
    aliases = _strings(obj.get("aliases"), f"{path}.aliases")
    strategy = obj.get("strategy") or "weighted"
    if strategy not in STRATEGIES:
        raise ConfigError(f"{path}.strategy", f"expected one of {', '.join(STRATEGIES)}")
    sticky = obj.get("sticky") or "consumer"
    if not isinstance(sticky, str) or not (
            sticky in ("consumer", "none") or (sticky.startswith("header:") and sticky[7:].strip())):
        raise ConfigError(f"{path}.sticky", "expected consumer, none or header:<name>")
    if sticky.startswith("header:"):
        sticky = "header:" + sticky[7:].strip().lower()
    caps_raw = obj.get("capabilities")
    caps = frozenset(_strings(caps_raw, f"{path}.capabilities")) if caps_raw is not None \
        else DEFAULT_CAPABILITIES
    for j, c in enumerate(_strings(caps_raw, f"{path}.capabilities")):
        if c not in CAPABILITIES:
            raise ConfigError(f"{path}.capabilities[{j}]",
                              f"unknown capability '{c}' (known: {', '.join(sorted(CAPABILITIES))})")
    window = _opt_int(obj.get("context_window"), f"{path}.context_window")
    max_output = _opt_int(obj.get("max_output"), f"{path}.max_output")
    if window is not None and max_output is not None and max_output > window:
        raise ConfigError(f"{path}.max_output", "must not exceed context_window")
    allow_consumers = allow_groups = None
    if obj.get("allow") is not None:
        allow = _obj(obj["allow"], f"{path}.allow", frozenset({"consumers", "groups"}))
        allow_consumers = frozenset(_strings(allow.get("consumers"), f"{path}.allow.consumers"))
        allow_groups = frozenset(_strings(allow.get("groups"), f"{path}.allow.groups"))
    targets: list[Target] = []
    for j, t_raw in enumerate(_list(obj.get("targets"), f"{path}.targets", required=True)):
        t = _target(t_raw, f"{path}.targets[{j}]", providers)
        if any(t.key == other.key for other in targets):
            raise ConfigError(f"{path}.targets[{j}]", f"duplicate target '{t.key}'")
        targets.append(t)
    if strategy == "weighted" and sum(t.weight for t in targets) <= 0:
        raise ConfigError(f"{path}.targets", "weights must add up to more than 0")
    return ModelSpec(name=name, aliases=aliases, strategy=strategy, sticky=sticky,
                     capabilities=caps, context_window=window, max_output=max_output,
                     tags=frozenset(_strings(obj.get("tags"), f"{path}.tags")),
                     allow_consumers=allow_consumers, allow_groups=allow_groups,
                     targets=tuple(targets))


def _target(raw: Any, path: str, providers: Mapping[str, ProviderConfig]) -> Target:
    obj = _obj(raw, path, _TARGET_KEYS)
    pname = _str(obj.get("provider"), f"{path}.provider")
    if pname not in providers:
        raise ConfigError(f"{path}.provider", f"unknown provider '{pname}'")
    return Target(provider=providers[pname], model=_str(obj.get("model"), f"{path}.model"),
                  weight=_int(obj.get("weight"), f"{path}.weight", default=1, minimum=0),
                  variant=_opt_str(obj.get("variant"), f"{path}.variant"),
                  tags=frozenset(_strings(obj.get("tags"), f"{path}.tags")))


def _policy(raw: Any) -> dict[str, frozenset[str]]:
    if raw is None:
        return {}
    obj = _obj(raw, "data_class_policy")
    # a class mapped to null counts as absent (unrestricted), like Kong's unset map values
    return {_str(k, "data_class_policy"): frozenset(_strings(v, f"data_class_policy.{k}"))
            for k, v in obj.items() if v is not None}
