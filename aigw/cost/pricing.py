"""Model price table and request cost (USD).

Prices are USD per 1M tokens.  The packaged table (``aigw/data/prices.json``)
is a default meant to be overridden from kong.yml; see docs/pricing.md for the
table format, the lookup rule and the cost formula.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Iterator, Mapping

import orjson

from aigw.types import Usage

__all__ = ["Price", "Tier", "PriceError", "PriceTable", "usd_to_micros"]

PER = 1_000_000  # prices are per this many tokens
MIN_PRICE = 0.001  # a non-zero price below this (USD per 1M) looks like a per-token price

_RATE_FIELDS = ("input", "output", "cache_read", "cache_write", "reasoning")
_FIELDS = frozenset(_RATE_FIELDS + ("tiers",))
_TIER_FIELDS = frozenset(_RATE_FIELDS + ("above_input_tokens",))

# Trailing snapshot / channel suffixes stripped by ``lookup`` (one at a time).
_SNAPSHOT = re.compile(
    r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{3,4}|latest|preview(?:-\d{2}-\d{2})?|exp(?:-\d{2}-\d{2})?)$"
)


class PriceError(ValueError):
    """Invalid price entry (message names the model and the field)."""


@dataclass(frozen=True)
class Tier:
    """Prices applying when a request's input tokens exceed ``above_input_tokens``."""

    above_input_tokens: int
    price: "Price"


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens.  ``None`` cache/reasoning prices fall back to input/output."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None
    tiers: tuple[Tier, ...] = ()

    def for_input(self, input_tokens: int) -> "Price":
        """The price that applies to a request with this many input tokens."""
        chosen = self
        for tier in self.tiers:  # sorted by threshold, ascending
            if input_tokens > tier.above_input_tokens:
                chosen = tier.price
        return chosen


class PriceTable:
    """Immutable model -> Price map with a forgiving name lookup."""

    def __init__(self, prices: Mapping[str, Price], *, as_of: str | None = None,
                 source: Any = None):
        self._prices: dict[str, Price] = {k.lower(): v for k, v in prices.items()}
        self.as_of = as_of
        self.source = source

    @classmethod
    def default(cls) -> "PriceTable":
        global _DEFAULT
        if _DEFAULT is None:
            raw = orjson.loads(resources.files("aigw").joinpath("data/prices.json").read_bytes())
            models = {name: _parse(name, entry) for name, entry in raw["models"].items()}
            _DEFAULT = cls(models, as_of=raw.get("as_of"), source=raw.get("source"))
        return _DEFAULT

    @classmethod
    def from_dict(cls, models: Mapping[str, Mapping[str, Any]]) -> "PriceTable":
        """A table holding only ``models`` (same entry format as prices.json)."""
        return cls({name: _parse(name, entry) for name, entry in models.items()})

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]] | None) -> "PriceTable":
        """A new table where ``overrides`` replace fields of known models or add new ones.

        Fields given as ``None`` count as absent (Kong fills unset record fields
        with null).  A new model needs ``input`` and ``output``.
        """
        prices = dict(self._prices)
        for name, entry in (overrides or {}).items():
            if not isinstance(entry, Mapping):
                raise PriceError(f"prices[{name!r}]: expected an object")
            given = {k: v for k, v in entry.items() if v is not None}
            base = self._prices.get(name.lower())
            merged = {**_to_dict(base), **given} if base is not None else given
            if base is not None and "tiers" in given:
                merged["tiers"] = given["tiers"]
            prices[name.lower()] = _parse(name, merged)
        return PriceTable(prices, as_of=self.as_of, source=self.source)

    def __contains__(self, model: str) -> bool:
        return model.lower() in self._prices

    def __iter__(self) -> Iterator[str]:
        return iter(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    def lookup(self, model: str | None) -> Price | None:
        """Exact name, then without provider prefixes, then without snapshot suffixes.

        Case-insensitive.  ``"azure-eu/gpt-4o-2024-08-06"`` tries
        ``azure-eu/gpt-4o-2024-08-06``, ``azure-eu/gpt-4o``, ``gpt-4o-2024-08-06``,
        ``gpt-4o``: the first name in the table wins, so an exact or
        provider-specific entry always beats the generic one.
        """
        if not model:
            return None
        for candidate in _candidates(model.lower()):
            price = self._prices.get(candidate)
            if price is not None:
                return price
        return None

    def cost(self, model: str | None, usage: Usage | None) -> float | None:
        """USD cost of ``usage`` at ``model``'s price, or None when unpriced."""
        base = self.lookup(model)
        if base is None or usage is None:
            return None
        return usage_cost(base, usage)

    def worst_case(self, model: str | None, prompt_tokens: int, max_output: int) -> float | None:
        """Upper bound before the call: no cache discount, all output at the dearer rate."""
        base = self.lookup(model)
        if base is None:
            return None
        p = base.for_input(prompt_tokens)
        out_rate = max(p.output, p.reasoning or 0.0)
        return (max(prompt_tokens, 0) * p.input + max(max_output, 0) * out_rate) / PER


def usage_cost(base: Price, usage: Usage) -> float:
    """Cost formula (see docs/pricing.md)."""
    p = base.for_input(usage.input_tokens)
    cache_read = max(usage.cache_read_tokens, 0)
    cache_write = max(usage.cache_write_tokens, 0)
    uncached = max(usage.input_tokens - cache_read - cache_write, 0)
    output = max(usage.output_tokens, 0)
    reasoning = min(max(usage.reasoning_tokens, 0), output) if p.reasoning is not None else 0
    total = (
        uncached * p.input
        + cache_read * (p.cache_read if p.cache_read is not None else p.input)
        + cache_write * (p.cache_write if p.cache_write is not None else p.input)
        + (output - reasoning) * p.output
        + reasoning * (p.reasoning or 0.0)
    )
    return total / PER


def usd_to_micros(x: float) -> int:
    """USD -> integer micro-USD, rounded up (budgets never under-charge).

    Float noise below 1e-6 micro-USD is ignored so 0.3 USD is 300000, not 300001.
    """
    return math.ceil(round(x * 1_000_000, 6))


_DEFAULT: PriceTable | None = None


def _candidates(name: str) -> Iterator[str]:
    prefixed = [name]
    while "/" in prefixed[-1]:
        prefixed.append(prefixed[-1].split("/", 1)[1])
    seen: set[str] = set()
    # provider-specific forms first (exact, then its snapshots), then generic ones
    for form in prefixed:
        current = form
        while current and current not in seen:
            seen.add(current)
            yield current
            current = _SNAPSHOT.sub("", current)


def _rate(model: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PriceError(f"prices[{model!r}].{field}: expected a number (USD per 1M tokens)")
    if value < 0:
        raise PriceError(f"prices[{model!r}].{field}: price must not be negative")
    if 0 < value < MIN_PRICE:
        raise PriceError(
            f"prices[{model!r}].{field}: {value} looks like a per-token price; "
            f"prices are USD per 1M tokens (e.g. 2.5, not 0.0000025)")
    return float(value)


def _parse(model: str, entry: Mapping[str, Any]) -> Price:
    if not isinstance(entry, Mapping):
        raise PriceError(f"prices[{model!r}]: expected an object")
    unknown = set(entry) - _FIELDS
    if unknown:
        raise PriceError(f"prices[{model!r}].{sorted(unknown)[0]}: unknown field")
    rates = _rates(model, entry, None)
    tiers_raw = entry.get("tiers") or ()
    if not isinstance(tiers_raw, (list, tuple)):
        raise PriceError(f"prices[{model!r}].tiers: expected a list")
    base = Price(**rates)
    tiers: list[Tier] = []
    for i, raw in enumerate(tiers_raw):
        where = f"{model}.tiers[{i}]"
        if not isinstance(raw, Mapping):
            raise PriceError(f"prices[{where!r}]: expected an object")
        unknown = set(raw) - _TIER_FIELDS
        if unknown:
            raise PriceError(f"prices[{where!r}].{sorted(unknown)[0]}: unknown field")
        above = raw.get("above_input_tokens")
        if isinstance(above, bool) or not isinstance(above, int) or above < 0:
            raise PriceError(f"prices[{where!r}].above_input_tokens: expected an integer >= 0")
        tier_rates = {**rates, **_rates(where, raw, rates)}
        tiers.append(Tier(above, Price(**tier_rates)))
    tiers.sort(key=lambda t: t.above_input_tokens)
    return replace(base, tiers=tuple(tiers))


def _rates(model: str, entry: Mapping[str, Any], inherited: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in _RATE_FIELDS:
        value = entry.get(field)
        if value is None:
            if field in ("input", "output") and inherited is None:
                raise PriceError(f"prices[{model!r}].{field}: required")
            continue
        out[field] = _rate(model, field, value)
    return out


def _to_dict(price: Price) -> dict[str, Any]:
    out: dict[str, Any] = {f: getattr(price, f) for f in _RATE_FIELDS if getattr(price, f) is not None}
    if price.tiers:
        out["tiers"] = [
            {"above_input_tokens": t.above_input_tokens,
             **{f: getattr(t.price, f) for f in _RATE_FIELDS if getattr(t.price, f) is not None}}
            for t in price.tiers
        ]
    return out
