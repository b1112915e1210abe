"""One price table per route: ai-router's prices steer cost routing and are what ai-cost charges."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from aigw import schema
from aigw.context import STORE, Outcome
from aigw.gateway.cost import CostRuntime
from aigw.gateway.router import RouterRuntime
from aigw.pipeline import Exchange
from aigw.plugin_base import kong_plugin
from aigw.routing import Needs, RouterConfig
from aigw.types import Usage
from aigw.validate import validate_doc

ROOT = Path(__file__).resolve().parents[2]
CHEAP = {"input": 0.01, "output": 0.02}


def _router_cfg(prices=None) -> dict:
    cfg = {"providers": [{"name": "openai", "type": "openai", "api_key": "k"}],
           "models": [{"name": "m", "strategy": "cost", "targets": [
               {"provider": "openai", "model": "gpt-4o-mini"}, {"provider": "openai", "model": "gpt-4o"}]}]}
    if prices is not None:
        cfg["prices"] = prices
    return cfg


def _first(router: RouterConfig) -> str:
    spec = router.models["m"]
    return router.plan(spec, Needs(prompt_tokens=100, max_output=100), sticky_key=None).targets[0].model


def test_router_override_changes_the_cost_routing_pick():
    assert _first(RouterConfig.from_dict(_router_cfg(), env={})) == "gpt-4o-mini"  # catalogue order
    steered = RouterConfig.from_dict(_router_cfg({"openai/gpt-4o": CHEAP}), env={})
    assert _first(steered) == "gpt-4o"
    assert steered.prices.lookup(steered.models["m"].targets[1]).input == CHEAP["input"]


def test_ai_cost_charges_by_the_routers_table():
    router = RouterRuntime(schema.validate("ai-router", _router_cfg({"openai/gpt-4o": CHEAP})))
    cost = CostRuntime(schema.validate("ai-cost", {}))
    # the request state ai-cost reads: what ai-router's request side sets
    ctx = STORE.create(api="chat", path="/", headers={}, raw_body=b"", consumer=None)
    ctx.prices, ctx.plan = router.prices, list(router.routing.models["m"].targets)
    ctx.provide(router.call)
    cost.request(ctx)
    usage = Usage(input_tokens=1000, output_tokens=1000)
    target = ctx.plan[1]
    ex = Exchange(outcome=Outcome(target=target), usage=usage)
    cost.response(ctx, ex)
    assert ex.outcome.cost_usd == pytest.approx((1000 * CHEAP["input"] + 1000 * CHEAP["output"]) / 1e6)
    assert ex.outcome.cost_usd == router.prices.cost(target, usage)



def test_ai_cost_prices_are_refused_with_the_same_message_at_startup_and_in_aigw_validate():
    doc = yaml.safe_load((ROOT / "kong" / "kong.yml").read_text())
    svc = next(s for s in doc["services"] if any(p["name"] == "ai-cost" for p in s.get("plugins") or ()))
    cost = next(p for p in svc["plugins"] if p["name"] == "ai-cost")
    cost["config"]["prices"] = {"openai/gpt-4o": CHEAP}
    plugin_cls, *_ = kong_plugin("ai-cost", CostRuntime, 770)
    with pytest.raises(schema.ConfigInvalid) as at_start:
        plugin_cls(copy.deepcopy(cost["config"]))
    assert "moved to ai-router's config.prices" in str(at_start.value)
    errors = validate_doc(doc)
    assert errors == [f"plugin service '{svc['name']}': {at_start.value}"]


def test_reference_config_keeps_its_override_in_the_router():
    doc = yaml.safe_load((ROOT / "kong" / "kong.yml").read_text())
    assert validate_doc(doc) == []
    router = next(p for s in doc["services"] for p in s.get("plugins") or () if p["name"] == "ai-router")
    rc = RouterConfig.from_dict(schema.validate("ai-router", router["config"]),
                                env={"OPENAI_API_KEY": "x"})
    llama = next(t for m in rc.models.values() for t in m.targets if t.model.startswith("meta-llama/"))
    assert rc.prices.lookup(llama).input == 0.05
