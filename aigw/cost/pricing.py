"""Model prices and request cost (USD).

Prices are USD per 1M tokens.  The default table is the maintained genai-prices
catalogue (``aigw/cost/catalogue.py``, pinned, bundled, offline); ai-cost's
``prices`` from kong.yml go on top.  See docs/pricing.md for the lookup rule,
the entry format and the cost formula.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any, Protocol

from aigw.cost.price import Price, Tier
from aigw.providers.registry import PROVIDERS
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


class PriceSource(Protocol):
    """Where the prices a table has no entry for come from: the catalogue
    (``aigw.cost.catalogue.Catalogue``)."""

    def find(self, model: str, provider_type: str | None = None,
             api_url: str | None = None) -> Price | None: ...


class PriceTable:
    """Model -> Price: explicit entries (overrides) first, then the catalogue.

    A model may be given as a name (``"gpt-4o"``, ``"openai/gpt-4o"``) or as a
    routing target (anything with ``.key``, ``.model`` and ``.provider.type`` /
    ``.provider.base_url``): a target is looked up in the catalogue under its
    provider's catalogue id, so ``azure-eu/gpt-4o`` gets Azure's price.
    """

    def __init__(self, prices: Mapping[str, Price], *, as_of: str | None = None,
                 source: Any = None, catalogue: PriceSource | None = None):
        self._prices: dict[str, Price] = {k.lower(): v for k, v in prices.items()}
        self.as_of = as_of
        self.source = source
        self.catalogue = catalogue

    @classmethod
    def default(cls) -> PriceTable:
        """The catalogue alone (built once per process: importing it takes ~0.5 s)."""
        global _DEFAULT
        if _DEFAULT is None:
            # deferred: genai-prices (pydantic, ~170 modules, ~0.5 s) is loaded by the first
            # table that needs the catalogue, not by every process that imports pricing
            from aigw.cost.catalogue import Catalogue, catalogue_info  # noqa: PLC0415 (optional: heavy, docs/lint.md)
            info = catalogue_info()
            _DEFAULT = cls({}, as_of=info["as_of"], source=f"{info['name']} {info['version']}",
                           catalogue=Catalogue())
        return _DEFAULT

    @classmethod
    def from_dict(cls, models: Mapping[str, Mapping[str, Any]]) -> PriceTable:
        """A table holding only ``models`` (the entry format of ai-cost ``prices``), no catalogue."""
        return cls({name: _parse(name, entry) for name, entry in models.items()})

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]] | None) -> PriceTable:
        """A new table where ``overrides`` replace fields of known models or add new ones.

        A known model is one this table prices under that name (an earlier
        override, or the catalogue).  Fields given as ``None`` count as absent
        (Kong fills unset record fields with null).  A new model needs ``input``
        and ``output``.
        """
        prices = dict(self._prices)
        for name, entry in (overrides or {}).items():
            if not isinstance(entry, Mapping):
                raise PriceError(f"prices[{name!r}]: expected an object")
            given = {k: v for k, v in entry.items() if v is not None}
            base = self.lookup(name)
            if base is None:
                prices[name.lower()] = _parse(name, given)
                continue
            _parse(name, {"input": 0, "output": 0, **given})  # the fields given, checked alone
            merged = {**_to_dict(base), **given}
            if "tiers" in given:
                merged["tiers"] = given["tiers"]
            # inherited catalogue rates may be below MIN_PRICE (a real sub-cent price)
            prices[name.lower()] = _parse(name, merged, strict=False)
        return PriceTable(prices, as_of=self.as_of, source=self.source, catalogue=self.catalogue)

    def __contains__(self, model: str) -> bool:
        return model.lower() in self._prices

    def __iter__(self) -> Iterator[str]:
        return iter(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    def lookup(self, model: Any) -> Price | None:
        """Explicit entries by the name rule below, then the catalogue; None: unpriced.

        Explicit entries: case-insensitive; exact name, then without snapshot
        suffixes, then the same without each leading ``prefix/``.
        ``"azure-eu/gpt-4o-2024-08-06"`` tries ``azure-eu/gpt-4o-2024-08-06``,
        ``azure-eu/gpt-4o``, ``gpt-4o-2024-08-06``, ``gpt-4o``: the first name in
        the table wins, so a provider-specific entry beats the generic one.
        """
        key = getattr(model, "key", model)
        if not key or not isinstance(key, str):
            return None
        for candidate in _candidates(key.lower()):
            price = self._prices.get(candidate)
            if price is not None:
                return price
        if self.catalogue is None:
            return None
        provider = getattr(model, "provider", None)
        if provider is not None:  # a routing target
            for form in _prefix_forms(model.model):
                price = self.catalogue.find(form, provider.type, provider.base_url)
                if price is not None:
                    return price
            return None
        for form, ptype in _name_forms(key):
            price = self.catalogue.find(form, ptype)
            if price is not None:
                return price
        return None

    def cost(self, model: Any, usage: Usage | None) -> float | None:
        """USD cost of ``usage`` at ``model``'s price, or None when unpriced."""
        base = self.lookup(model)
        if base is None or usage is None:
            return None
        return usage_cost(base, usage)

    def worst_case(self, model: Any, prompt_tokens: int, max_output: int) -> float | None:
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


def _prefix_forms(name: str) -> list[str]:
    """``a/b/c``, ``b/c``, ``c``."""
    forms = [name]
    while "/" in forms[-1]:
        forms.append(forms[-1].split("/", 1)[1])
    return forms


def _name_forms(name: str) -> Iterator[tuple[str, str | None]]:
    """Catalogue queries for a bare name: ``openai/gpt-4o`` is gpt-4o at OpenAI when the
    prefix is a provider type we know; otherwise the provider is guessed from the name
    (genai-prices' rule), then each provider we have an adapter for is tried in turn."""
    head, sep, rest = name.partition("/")
    known = PROVIDERS.get(head.lower()) if sep else None
    if known is not None and known.catalogue_id:  # the registry's types with a catalogue id
        yield from ((form, head.lower()) for form in _prefix_forms(rest))
        return
    forms = _prefix_forms(name)
    yield from ((form, None) for form in forms)
    for ptype in _FIRST_PARTY:
        yield from ((form, ptype) for form in forms)


# the first-party APIs tried, in this order, for a bare model name: the registry's types with a
# public default base URL (openai, anthropic, gemini, mistral)
_FIRST_PARTY = tuple(name for name, p in PROVIDERS.items() if p.default_base_url)


def _candidates(name: str) -> Iterator[str]:
    prefixed = _prefix_forms(name)
    seen: set[str] = set()
    # provider-specific forms first (exact, then its snapshots), then generic ones
    for form in prefixed:
        current = form
        while current and current not in seen:
            seen.add(current)
            yield current
            current = _SNAPSHOT.sub("", current)


def _rate(model: str, field: str, value: Any, strict: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PriceError(f"prices[{model!r}].{field}: expected a number (USD per 1M tokens)")
    if value < 0:
        raise PriceError(f"prices[{model!r}].{field}: price must not be negative")
    if strict and 0 < value < MIN_PRICE:
        raise PriceError(
            f"prices[{model!r}].{field}: {value} looks like a per-token price; "
            f"prices are USD per 1M tokens (e.g. 2.5, not 0.0000025)")
    return float(value)


def _parse(model: str, entry: Mapping[str, Any], strict: bool = True) -> Price:
    if not isinstance(entry, Mapping):
        raise PriceError(f"prices[{model!r}]: expected an object")
    unknown = set(entry) - _FIELDS
    if unknown:
        raise PriceError(f"prices[{model!r}].{sorted(unknown)[0]}: unknown field")
    rates = _rates(model, entry, None, strict)
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
        tier_rates = {**rates, **_rates(where, raw, rates, strict)}
        tiers.append(Tier(above, Price(**tier_rates)))
    tiers.sort(key=lambda t: t.above_input_tokens)
    return replace(base, tiers=tuple(tiers))


def _rates(model: str, entry: Mapping[str, Any], inherited: dict[str, Any] | None,
           strict: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in _RATE_FIELDS:
        value = entry.get(field)
        if value is None:
            if field in ("input", "output") and inherited is None:
                raise PriceError(f"prices[{model!r}].{field}: required")
            continue
        out[field] = _rate(model, field, value, strict)
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
