"""The price of one model: ``Price`` and its long-context ``Tier``s (USD per 1M tokens).

Its own module so that both the price table (``pricing``) and the catalogue adapter
(``catalogue``) build prices without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Price", "Tier"]


@dataclass(frozen=True)
class Tier:
    """Prices applying when a request's input tokens exceed ``above_input_tokens``."""

    above_input_tokens: int
    price: Price


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens.  ``None`` cache/reasoning prices fall back to input/output."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None
    tiers: tuple[Tier, ...] = ()

    def for_input(self, input_tokens: int) -> Price:
        """The price that applies to a request with this many input tokens."""
        chosen = self
        for tier in self.tiers:  # sorted by threshold, ascending
            if input_tokens > tier.above_input_tokens:
                chosen = tier.price
        return chosen
