"""Cost accounting: price table and cost formula."""
from aigw.cost.pricing import Price, PriceError, PriceTable, Tier, usd_to_micros

__all__ = ["Price", "PriceError", "PriceTable", "Tier", "usd_to_micros"]
