"""The genai-prices catalogue behind the default price table.

Our conversion is checked against genai-prices' own ``calc_price`` on every
token-priced model of the providers we have adapters for; plus offline use,
the pin, conditional prices, the per-model cache, the reference config.
"""
from __future__ import annotations

import copy
import datetime as dt
import re
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from genai_prices import data_snapshot
from genai_prices import types as gtypes

from aigw.cost import catalogue as cat
from aigw.cost.pricing import PriceTable, usage_cost
from aigw.routing import RouterConfig, Target
from aigw.types import ProviderConfig, Usage
from aigw.validate import main as validate_main
from aigw.validate import unpriced_targets

ROOT = Path(__file__).resolve().parents[2]


def target(ptype: str, model: str, base_url: str = "https://example.invalid", name: str | None = None):
    return Target(ProviderConfig(name or ptype, ptype, base_url), model)


# our provider type -> the catalogue provider it must use
OURS = {"openai": "openai", "azure": "azure", "anthropic": "anthropic", "gemini": "google",
        "mistral": "mistral", "bedrock": "aws"}

USAGES = [
    Usage(input_tokens=1234, output_tokens=567),
    Usage(input_tokens=10_000, output_tokens=3_000, cache_read_tokens=4_000, cache_write_tokens=1_000,
          reasoning_tokens=2_000),
    Usage(input_tokens=300_000, output_tokens=1_000, cache_read_tokens=50_000),  # past 200k tiers
    Usage(input_tokens=128_001, output_tokens=10, cache_write_tokens=1),
]


def _their_usage(u: Usage) -> gtypes.Usage:
    return gtypes.Usage(input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                        cache_read_tokens=u.cache_read_tokens, cache_write_tokens=u.cache_write_tokens,
                        output_reasoning_tokens=u.reasoning_tokens)


def _models():
    snap = data_snapshot.get_snapshot()
    for ptype, pid in OURS.items():
        provider = next(p for p in snap.providers if p.id == pid)
        for m in provider.models:
            yield pytest.param(ptype, provider, m, id=f"{ptype}:{m.id}")


@pytest.mark.parametrize("ptype,provider,model", list(_models()))
def test_our_cost_equals_genai_prices_calc(ptype, provider, model) -> None:
    table = PriceTable.default()
    now = dt.datetime.now(dt.UTC)
    mp = model.get_prices(now)
    token_priced = any(getattr(mp, f) is not None for f, _ in cat._TOKEN_FIELDS)
    ours = cat.to_price(mp)
    if not token_priced and any(v is not None for k, v in vars(mp).items() if not k.startswith("_")):
        assert ours is None  # priced in pages/hours/requests only: never guessed from tokens
        return
    assert ours is not None
    if model.is_match(model.id):  # most ids match themselves (not e.g. ft:gpt-4o)
        assert table.lookup(target(ptype, model.id)) is not None
    for u in USAGES:
        theirs = model.calc_price(_their_usage(u), provider, genai_request_timestamp=now)
        assert usage_cost(ours, u) == pytest.approx(float(theirs.total_price), rel=1e-9, abs=1e-15), u


def test_tier_conversion_on_a_constructed_price() -> None:
    mp = gtypes.ModelPrice(
        input_mtok=gtypes.TieredPrices(base=Decimal("1"), tiers=[gtypes.Tier(start=1000, price=Decimal("2")),
                                                                   gtypes.Tier(start=5000, price=Decimal("3"))]),
        output_mtok=gtypes.TieredPrices(base=Decimal("10"), tiers=[gtypes.Tier(start=5000, price=Decimal("20"))]),
        cache_read_mtok=Decimal("0.5"))
    p = cat.to_price(mp)
    assert [t.above_input_tokens for t in p.tiers] == [1000, 5000]
    assert (p.for_input(1000).input, p.for_input(1001).input, p.for_input(5001).input) == (1, 2, 3)
    assert (p.for_input(1001).output, p.for_input(5001).output) == (10, 20)
    assert p.for_input(5001).cache_read == 0.5


def test_providers_resolve_to_their_own_catalogue_entry() -> None:
    t = PriceTable.default()
    # Azure's gpt-4o, found under the provider's type even with a custom provider name
    assert t.lookup(target("azure", "gpt-4o", name="azure-eu")) is not None
    assert t.lookup(target("gemini", "models/gemini-2.5-pro")) == t.lookup(target("gemini", "gemini-2.5-pro"))


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:8000/v1", "http://vllm:8000/v1", ""])
def test_self_hosted_is_never_priced_as_a_hosted_model(base_url: str) -> None:
    # the catalogue prices Llama 3.1 8B at several hosts; a local server is none of them
    t = PriceTable.default()
    assert t.lookup(target("openai_compatible", "meta-llama/Llama-3.1-8B-Instruct", base_url)) is None
    assert t.lookup(target("openai_compatible", "gpt-4o", base_url)) is None


def test_openai_compatible_host_known_to_the_catalogue_is_priced() -> None:
    t = PriceTable.default()
    assert t.lookup(target("openai_compatible", "deepseek-chat", "https://api.deepseek.com/v1")) is not None


def test_overrides_go_on_top_of_the_catalogue() -> None:
    base = PriceTable.default()
    cat_price = base.lookup(target("openai", "gpt-4o"))
    t = base.with_overrides({"gpt-4o": {"input": 2.0},
                             "azure-eu/gpt-4o": {"input": 2.75, "output": 11}})
    p = t.lookup(target("openai", "gpt-4o"))
    assert (p.input, p.output, p.cache_read) == (2.0, cat_price.output, cat_price.cache_read)
    assert t.lookup(target("azure", "gpt-4o", name="azure-eu")).input == 2.75
    assert t.lookup(target("openai", "gpt-4o-mini")) == base.lookup(target("openai", "gpt-4o-mini"))
    # an override of a catalogue model whose inherited rate is below the user-facing
    # per-token guard is still accepted (the guard checks only what the operator wrote)
    cheap = next(n for n in ("gemini-embedding-001", "text-embedding-3-small")
                 if base.lookup(n) is not None)
    assert base.with_overrides({cheap: {"output": 0}}).lookup(cheap) is not None


class _FakeSnap:
    def __init__(self, info):
        self.info = info
        self.calls = 0

    def find_provider_model(self, model, provider, pid, url):
        self.calls += 1
        if model != "m":
            raise LookupError(model)
        return None, self.info


def test_lookups_are_cached_per_model(monkeypatch) -> None:
    snap = _FakeSnap(gtypes.ModelInfo(id="m", match=gtypes.ClauseEquals(equals="m"),
                                      prices=gtypes.ModelPrice(input_mtok=Decimal(1), output_mtok=Decimal(2))))
    c = cat.Catalogue(snap)
    for _ in range(5):
        assert c.find("m", "openai").input == 1
        assert c.find("other", "openai") is None
    assert snap.calls == 2


def test_a_dated_price_change_is_picked_up_at_its_date(monkeypatch) -> None:
    change = dt.date(2030, 1, 1)
    info = gtypes.ModelInfo(id="m", match=gtypes.ClauseEquals(equals="m"), prices=[
        gtypes.ConditionalPrice(prices=gtypes.ModelPrice(input_mtok=Decimal(1), output_mtok=Decimal(2))),
        gtypes.ConditionalPrice(constraint=gtypes.StartDateConstraint(start_date=change),
                                prices=gtypes.ModelPrice(input_mtok=Decimal(5), output_mtok=Decimal(6)))])
    c = cat.Catalogue(_FakeSnap(info))
    midnight = dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp()
    monkeypatch.setattr(cat.time, "time", lambda: midnight - 1)
    assert c.find("m", "openai").input == 1
    monkeypatch.setattr(cat.time, "time", lambda: midnight + 1)
    assert c.find("m", "openai").input == 5


def test_a_time_of_day_price_is_cached_only_until_its_edge(monkeypatch) -> None:
    info = gtypes.ModelInfo(id="m", match=gtypes.ClauseEquals(equals="m"), prices=[
        gtypes.ConditionalPrice(prices=gtypes.ModelPrice(input_mtok=Decimal(1), output_mtok=Decimal(2))),
        gtypes.ConditionalPrice(constraint=gtypes.TimeOfDateConstraint(start_time=dt.time(16, 30),
                                                                       end_time=dt.time(0, 30)),
                                prices=gtypes.ModelPrice(input_mtok=Decimal("0.5"), output_mtok=Decimal(1)))])
    c = cat.Catalogue(_FakeSnap(info))
    day = dt.datetime(2031, 5, 5, tzinfo=dt.UTC)
    for hhmm, expected in (((12, 0), 1), ((16, 31), 0.5), ((23, 59), 0.5), ((0, 31), 1)):
        t = (day + dt.timedelta(hours=hhmm[0], minutes=hhmm[1])).timestamp()
        if hhmm[0] == 0:
            t += 86400
        monkeypatch.setattr(cat.time, "time", lambda t=t: t)
        assert c.find("m", "openai").input == expected, hhmm


def test_catalogue_works_offline() -> None:
    """A fresh process with every socket connection refused still prices (nothing is fetched)."""
    code = textwrap.dedent("""
        import socket
        def refuse(*a, **k):
            raise OSError("network disabled in this test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from aigw.cost.pricing import PriceTable
        from aigw.cost.catalogue import catalogue_info
        t = PriceTable.default()
        assert t.lookup("gpt-4o").input > 0, "no price"
        print(catalogue_info()["as_of"])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    dt.date.fromisoformat(r.stdout.strip())


def test_genai_prices_is_pinned_exactly_to_the_installed_version() -> None:
    from importlib.metadata import version
    pyproject = (ROOT / "pyproject.toml").read_text()
    pins = re.findall(r'"genai-prices==([^"]+)"', pyproject)
    assert pins == [version("genai-prices")]


def test_catalogue_date_is_documented() -> None:
    info = cat.catalogue_info()
    doc = (ROOT / "docs" / "pricing.md").read_text()
    assert f"genai-prices {info['version']}" in doc and info["as_of"] in doc


# --- the reference config ----------------------------------------------------

def _reference() -> dict:
    return yaml.safe_load((ROOT / "kong" / "kong.yml").read_text())


def test_every_model_of_the_reference_config_is_priced() -> None:
    doc = _reference()
    targets = [t for p in doc["services"][0]["plugins"] if p["name"] == "ai-router"
               for t in RouterConfig.from_dict(p["config"], env={}).models.values()]
    assert targets, "the reference config has an ai-router"
    assert unpriced_targets(doc, only_enforced=False) == []


@pytest.mark.parametrize("ptype,model", [("mistral", "mistral-embed"), ("gemini", "gemini-embedding-001")])
def test_embedding_models_once_unpriced_are_priced(ptype: str, model: str) -> None:
    assert PriceTable.default().lookup(target(ptype, model)) is not None


def test_validate_reports_an_unpriced_target_and_the_catalogue(tmp_path, capsys) -> None:
    doc = _reference()
    f = tmp_path / "ok.yml"
    f.write_text(yaml.safe_dump(doc))
    assert validate_main([str(f)]) == 0
    info = cat.catalogue_info()
    assert f"genai-prices {info['version']}, catalogue as of {info['as_of']}" in capsys.readouterr().out
    bad = copy.deepcopy(doc)
    router = next(p for p in bad["services"][0]["plugins"] if p["name"] == "ai-router")
    router["config"]["models"].append({"name": "house", "targets": [{"provider": "openai", "model": "house-x"}]})
    f.write_text(yaml.safe_dump(bad))
    assert validate_main([str(f)]) == 1
    err = capsys.readouterr().err
    assert "openai/house-x" in err and "model_not_priced" in err
