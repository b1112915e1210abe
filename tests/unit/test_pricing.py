"""Price table: lookup rule, cost formula, golden costs per provider usage shape, overrides."""
from __future__ import annotations

import pytest

from aigw.cost.pricing import Price, PriceError, PriceTable, usd_to_micros
from aigw.types import Usage

M = 1_000_000  # prices are per 1M tokens


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.default()


# --- the default table: the genai-prices catalogue (tests/unit/test_catalogue.py) ---

REQUIRED = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini",
            "text-embedding-3-small", "text-embedding-3-large", "claude-opus-4", "claude-sonnet-4",
            "claude-3-5-haiku", "gemini-2.5-pro", "gemini-2.5-flash", "mistral-large",
            "mistral-small-latest", "mistral-embed", "gemini-embedding-001"]


@pytest.mark.parametrize("model", REQUIRED)
def test_default_table_prices_required_models(table: PriceTable, model: str) -> None:
    price = table.lookup(model)
    assert price is not None
    assert price.input > 0


def test_default_table_has_provenance(table: PriceTable) -> None:
    import datetime
    from importlib.metadata import version
    assert datetime.date.fromisoformat(table.as_of) <= datetime.datetime.now(datetime.UTC).date()
    assert table.source == f"genai-prices {version('genai-prices')}"


def test_default_gemini_pro_is_tiered(table: PriceTable) -> None:
    price = table.lookup("gemini-2.5-pro")
    assert price is not None and price.tiers
    assert price.tiers[0].above_input_tokens == 200000
    assert price.for_input(200001).input > price.input


# --- lookup rule ----------------------------------------------------------

@pytest.mark.parametrize("query,expected", [
    ("gpt-4o", "gpt-4o"),
    ("GPT-4o", "gpt-4o"),
    ("openai/gpt-4o", "gpt-4o"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("openai/gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
    ("claude-sonnet-4-20250514", "claude-sonnet-4"),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
    ("models/gemini-2.5-pro", "gemini-2.5-pro"),
    ("mistral-large-2411", "mistral-large"),
])
def test_lookup_normalises_names(table: PriceTable, query: str, expected: str) -> None:
    assert table.lookup(query) == table.lookup(expected)
    assert table.lookup(query) is not None


def test_lookup_exact_snapshot_beats_stripped_name(table: PriceTable) -> None:
    # gpt-4o-2024-05-13 kept its own (higher) price
    assert table.lookup("gpt-4o-2024-05-13").input == 5
    assert table.lookup("gpt-4o-2024-08-06").input == 2.5


def test_lookup_provider_specific_entry_first(table: PriceTable) -> None:
    t = table.with_overrides({"azure-eu/gpt-4o": {"input": 2.75, "output": 11}})
    assert t.lookup("azure-eu/gpt-4o").input == 2.75
    assert t.lookup("azure-eu/gpt-4o-2024-08-06").input == 2.75
    assert t.lookup("openai/gpt-4o").input == 2.5


@pytest.mark.parametrize("query", ["no-such-model", "", None, "gpt", "llama-3-70b"])
def test_unknown_model_is_unpriced(table: PriceTable, query: str | None) -> None:
    assert table.lookup(query) is None
    assert table.cost(query, Usage(input_tokens=10, output_tokens=10)) is None
    assert table.worst_case(query, 10, 10) is None


# --- cost formula ---------------------------------------------------------

def test_cost_plain() -> None:
    t = PriceTable.from_dict({"m": {"input": 2, "output": 8}})
    assert t.cost("m", Usage(input_tokens=1000, output_tokens=250)) == pytest.approx(
        (1000 * 2 + 250 * 8) / M)


def test_cached_input_charged_at_cache_price() -> None:
    t = PriceTable.from_dict({"m": {"input": 2, "output": 8, "cache_read": 0.5, "cache_write": 2.5}})
    u = Usage(input_tokens=1000, output_tokens=0, cache_read_tokens=600, cache_write_tokens=100)
    assert t.cost("m", u) == pytest.approx((300 * 2 + 600 * 0.5 + 100 * 2.5) / M)


def test_cache_prices_fall_back_to_input() -> None:
    t = PriceTable.from_dict({"m": {"input": 2, "output": 8}})
    u = Usage(input_tokens=1000, cache_read_tokens=600, cache_write_tokens=100)
    assert t.cost("m", u) == pytest.approx(1000 * 2 / M)


def test_reasoning_priced_apart_when_set() -> None:
    t = PriceTable.from_dict({"m": {"input": 1, "output": 2, "reasoning": 4},
                              "n": {"input": 1, "output": 2}})
    u = Usage(input_tokens=10, output_tokens=100, reasoning_tokens=60)
    assert t.cost("m", u) == pytest.approx((10 * 1 + 40 * 2 + 60 * 4) / M)
    # without a reasoning price, reasoning tokens are ordinary output
    assert t.cost("n", u) == pytest.approx((10 * 1 + 100 * 2) / M)


def test_tier_chosen_by_input_tokens() -> None:
    t = PriceTable.from_dict({"m": {"input": 1, "output": 10, "cache_read": 0.25, "tiers": [
        {"above_input_tokens": 1000, "input": 2, "output": 20}]}})
    at = Usage(input_tokens=1000, output_tokens=10)
    above = Usage(input_tokens=1001, output_tokens=10, cache_read_tokens=1)
    assert t.cost("m", at) == pytest.approx((1000 * 1 + 10 * 10) / M)
    # a tier without cache_read inherits the base cache_read price
    assert t.cost("m", above) == pytest.approx((1000 * 2 + 1 * 0.25 + 10 * 20) / M)


def test_worst_case_uses_dearer_output_rate_and_tier() -> None:
    t = PriceTable.from_dict({"m": {"input": 1, "output": 2, "reasoning": 3, "tiers": [
        {"above_input_tokens": 100, "input": 5}]}})
    assert t.worst_case("m", 50, 10) == pytest.approx((50 * 1 + 10 * 3) / M)
    assert t.worst_case("m", 150, 10) == pytest.approx((150 * 5 + 10 * 3) / M)


# --- golden costs: each provider's usage shape, converted to OpenAI semantics ---

def test_golden_openai_with_cached_prompt(table: PriceTable) -> None:
    # {"prompt_tokens": 10000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 4000}}
    u = Usage.from_openai({"prompt_tokens": 10000, "completion_tokens": 500,
                           "prompt_tokens_details": {"cached_tokens": 4000}})
    # 6000 x 2.50 + 4000 x 1.25 + 500 x 10.00 = 25000 USD/1M
    assert table.cost("gpt-4o-2024-08-06", u) == pytest.approx(0.025)


def test_golden_openai_reasoning_model(table: PriceTable) -> None:
    u = Usage.from_openai({"prompt_tokens": 2000, "completion_tokens": 3000,
                           "completion_tokens_details": {"reasoning_tokens": 2500}})
    # o4-mini: 2000 x 1.10 + 3000 x 4.40 (reasoning billed as output) = 15400
    assert table.cost("o4-mini", u) == pytest.approx(0.0154)


def test_golden_anthropic_cache_read_and_write(table: PriceTable) -> None:
    # Anthropic reports {"input_tokens": 100, "cache_read_input_tokens": 2000,
    # "cache_creation_input_tokens": 500, "output_tokens": 300}; input excludes the cache.
    u = Usage(input_tokens=100 + 2000 + 500, output_tokens=300,
              cache_read_tokens=2000, cache_write_tokens=500)
    # 100 x 3 + 2000 x 0.30 + 500 x 3.75 + 300 x 15 = 7275
    assert table.cost("claude-sonnet-4-20250514", u) == pytest.approx(0.007275)


def test_golden_gemini_with_thoughts(table: PriceTable) -> None:
    # usageMetadata {"promptTokenCount": 1000, "candidatesTokenCount": 200, "thoughtsTokenCount": 800}
    u = Usage(input_tokens=1000, output_tokens=200 + 800, reasoning_tokens=800)
    # 1000 x 0.30 + 1000 x 2.50 = 2800
    assert table.cost("gemini-2.5-flash", u) == pytest.approx(0.0028)


def test_golden_gemini_pro_long_context_tier(table: PriceTable) -> None:
    u = Usage(input_tokens=250000, output_tokens=1000, cache_read_tokens=50000)
    # above 200k: 200000 x 2.50 + 50000 x 0.25 + 1000 x 15 = 527500
    assert table.cost("gemini-2.5-pro", u) == pytest.approx(0.5275)
    short = Usage(input_tokens=200000, output_tokens=1000)
    # at 200k: 200000 x 1.25 + 1000 x 10 = 260000
    assert table.cost("gemini-2.5-pro", short) == pytest.approx(0.26)


def test_golden_mistral_snapshot(table: PriceTable) -> None:
    u = Usage(input_tokens=1500, output_tokens=700)
    # 1500 x 2 + 700 x 6 = 7200
    assert table.cost("mistral/mistral-large-2411", u) == pytest.approx(0.0072)


def test_golden_embeddings(table: PriceTable) -> None:
    assert table.cost("text-embedding-3-small", Usage(input_tokens=50000)) == pytest.approx(0.001)


# --- overrides and unit checks ---------------------------------------------

def test_override_replaces_fields_and_keeps_the_rest(table: PriceTable) -> None:
    t = table.with_overrides({"gpt-4o": {"input": 2.0, "output": None}})
    assert t.lookup("gpt-4o") == Price(input=2.0, output=10.0, cache_read=1.25)
    assert table.lookup("gpt-4o").input == 2.5  # the original is untouched


def test_override_adds_model(table: PriceTable) -> None:
    t = table.with_overrides({"house-llama-x": {"input": 0.6, "output": 0.6}})
    assert t.cost("local/house-llama-x", Usage(input_tokens=1000, output_tokens=1000)) == \
        pytest.approx(0.0012)
    assert table.lookup("house-llama-x") is None


def test_override_zero_price_allowed(table: PriceTable) -> None:
    t = table.with_overrides({"free": {"input": 0, "output": 0}})
    assert t.cost("free", Usage(input_tokens=10**6, output_tokens=10**6)) == 0


@pytest.mark.parametrize("entry,field", [
    ({"input": 0.0000025, "output": 10}, "input"),
    ({"input": 2.5, "output": 0.00001}, "output"),
    ({"input": 2.5, "output": 10, "cache_read": 0.00000125}, "cache_read"),
    ({"input": 2.5, "output": 10, "tiers": [{"above_input_tokens": 10, "input": 0.0000005}]}, "input"),
])
def test_per_token_prices_rejected(table: PriceTable, entry: dict, field: str) -> None:
    with pytest.raises(PriceError) as err:
        table.with_overrides({"my-model": entry})
    assert "my-model" in str(err.value) and field in str(err.value)
    assert "per-token" in str(err.value)


@pytest.mark.parametrize("entry,field", [
    ({"input": -1, "output": 10}, "input"),
    ({"input": 1}, "output"),
    ({"input": "1", "output": 1}, "input"),
    ({"input": 1, "output": 1, "cache_reed": 1}, "cache_reed"),
    ({"input": 1, "output": 1, "tiers": [{"input": 2}]}, "above_input_tokens"),
])
def test_invalid_prices_rejected(table: PriceTable, entry: dict, field: str) -> None:
    with pytest.raises(PriceError) as err:
        table.with_overrides({"my-model": entry})
    assert "my-model" in str(err.value) and field in str(err.value)


@pytest.mark.parametrize("usd,micros", [
    (0.0, 0), (0.3, 300000), (1.0, 1000000), (0.0000011, 2), (1e-9, 1), (0.025, 25000),
])
def test_usd_to_micros_rounds_up(usd: float, micros: int) -> None:
    assert usd_to_micros(usd) == micros
