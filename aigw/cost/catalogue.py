"""The maintained price catalogue: genai-prices (Pydantic), pinned, offline.

The catalogue ships inside the package (``genai_prices.data``); nothing here
downloads anything (genai-prices' ``UpdatePrices`` is never started).  Its
entries are converted once per (provider, model) into our ``Price`` and kept
in a small per-process cache, so the request path pays a dict lookup.  A
catalogue price that changes on a date (``StartDateConstraint``) or at a time
of day (``TimeOfDateConstraint``) is cached only until that boundary.

What is converted (USD per 1M tokens): ``input_mtok``, ``output_mtok``,
``cache_read_mtok``, ``cache_write_mtok`` (5-minute writes), and
``output_reasoning_mtok``, with their long-context tiers.  Prices the gateway
cannot measure from token usage (web searches, per-request fees, audio hours,
document pages) are not charged; a model priced *only* in such units is
unpriced.  Service-tier variants (batch, flex, priority) are not applied: the
standard price is used.  See docs/pricing.md.

Importing this module loads genai-prices (~0.5 s): ``PriceTable.default()`` imports it
when the first table needs the catalogue.
"""
from __future__ import annotations

import calendar
import re
import threading
import time
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from importlib.metadata import version

from genai_prices import data_snapshot
from genai_prices.data import providers
from genai_prices.data_snapshot import DataSnapshot
from genai_prices.types import (
    ModelInfo,
    ModelPrice,
    StartDateConstraint,
    TieredPrices,
    TimeOfDateConstraint,
)

from aigw.cost.price import Price, Tier
from aigw.providers.registry import PROVIDERS

__all__ = ["Catalogue", "PROVIDER_IDS", "catalogue_info"]

# our provider ``type`` -> genai-prices provider id, from the provider registry.  Types without
# one (openai_compatible) are matched by their ``base_url`` against the catalogue's API URL
# patterns, and are unpriced when none matches: a self-hosted model is never priced as some hosted one.
PROVIDER_IDS = {name: p.catalogue_id for name, p in PROVIDERS.items() if p.catalogue_id}

# catalogue field -> our Price field
_TOKEN_FIELDS = (("input_mtok", "input"), ("output_mtok", "output"),
                 ("cache_read_mtok", "cache_read"), ("cache_write_mtok", "cache_write"),
                 ("output_reasoning_mtok", "reasoning"))
_CACHE_MAX = 4096  # (provider, model) entries; names come from config, this only bounds misuse
_CHECKED = re.compile(r"(?i)(?:checked|as of|verified|last updated|retrieved)\D{0,24}(\d{4}-\d{2}-\d{2})")
_NEVER = float("inf")


class Catalogue:
    """Prices of the bundled genai-prices snapshot, looked up by provider and model."""

    def __init__(self, snapshot: DataSnapshot | None = None):
        self._snap = data_snapshot.get_snapshot() if snapshot is None else snapshot
        self._cache: dict[tuple[str | None, str | None, str], tuple[Price | None, float]] = {}
        self._lock = threading.Lock()

    def find(self, model: str, provider_type: str | None = None,
             api_url: str | None = None) -> Price | None:
        """Our ``Price`` for ``model`` at this provider, or None when the catalogue has none.

        ``provider_type`` is our provider type (``openai``, ``gemini``, ...); for a
        type without a catalogue id, ``api_url`` (the provider's base URL) picks
        the catalogue provider.  With neither, the provider is guessed from the
        model name, as genai-prices does.
        """
        if not model:
            return None
        pid = PROVIDER_IDS.get(provider_type) if provider_type else None
        url = None if pid or not provider_type else (api_url or "")
        key = (pid, url, model.lower())
        now = time.time()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        price, until = self._resolve(key[2], pid, url, now)
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = (price, until)
        return price

    def _resolve(self, model: str, pid: str | None, url: str | None,
                 now: float) -> tuple[Price | None, float]:
        if url == "":
            return None, _NEVER  # a type the catalogue does not know, without a base URL
        try:
            _provider, info = self._snap.find_provider_model(model, None, pid, url)
        except LookupError:
            return None, _NEVER
        at = datetime.fromtimestamp(now, UTC)
        return to_price(info.get_prices(at)), _valid_until(info, at)


def to_price(model_price: ModelPrice) -> Price | None:
    """A genai-prices ``ModelPrice`` as our ``Price`` (None: not priced by tokens)."""
    given = {k: v for k, v in vars(model_price).items() if v is not None and not k.startswith("_")}
    if not given:
        return Price(input=0.0, output=0.0)  # listed with no charge at all: a free model
    rates = {ours: given[theirs] for theirs, ours in _TOKEN_FIELDS if theirs in given}
    if not rates:
        return None  # priced per page, hour or request only: tokens do not measure it
    starts = sorted({t.start for v in rates.values() if isinstance(v, TieredPrices) for t in v.tiers})

    def at(n: int, tiers: tuple[Tier, ...] = ()) -> Price:
        """The price that applies to a request with ``n`` input tokens."""
        out = {"input": 0.0, "output": 0.0}
        for field, v in rates.items():
            if isinstance(v, TieredPrices):
                rate = v.base
                for t in v.tiers:  # sorted ascending by start
                    if n > t.start:
                        rate = t.price
                out[field] = float(rate)
            else:
                out[field] = float(v)
        return Price(input=out["input"], output=out["output"], cache_read=out.get("cache_read"),
                     cache_write=out.get("cache_write"), reasoning=out.get("reasoning"), tiers=tiers)

    return at(0, tuple(Tier(s, at(s + 1)) for s in starts))


def _valid_until(info: ModelInfo, at: datetime) -> float:
    """Epoch seconds until which the price resolved at ``at`` stays the catalogue's price."""
    prices = info.prices
    if not isinstance(prices, list):
        return _NEVER
    until = _NEVER
    for cond in prices:
        c = cond.constraint
        if isinstance(c, StartDateConstraint) and c.start_date > at.date():
            until = min(until, calendar.timegm(c.start_date.timetuple()))
        elif isinstance(c, TimeOfDateConstraint):
            for t in (c.start_time, c.end_time):
                # as genai-prices does: compare in UTC
                utc = datetime.combine(date(1970, 1, 1), t).astimezone(UTC).timetz() if t.tzinfo is not None else t
                edge = datetime.combine(at.date(), utc.replace(tzinfo=None), UTC)
                while edge <= at:
                    edge += timedelta(days=1)
                until = min(until, edge.timestamp())
    return until


@lru_cache(maxsize=1)
def catalogue_info() -> dict[str, str]:
    """Name, pinned version and date of the bundled catalogue.

    genai-prices carries no date field; ``as_of`` is the newest date on which
    its maintainers say (in the price comments) that they checked a price.
    """
    newest: date | None = None
    for p in providers:
        texts = [p.price_comments] + [m.price_comments for m in p.models]
        for text in texts:
            for d in _CHECKED.findall(text or ""):
                try:
                    parsed = date.fromisoformat(d)
                except ValueError:
                    continue
                newest = parsed if newest is None or parsed > newest else newest
    return {"name": "genai-prices", "version": version("genai-prices"),
            "as_of": newest.isoformat() if newest else "unknown"}
