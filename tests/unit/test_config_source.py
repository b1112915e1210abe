"""One source per concept: JSON Schema for config rules and defaults, one provider registry."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from aigw import schema
from aigw.cost import catalogue, pricing
from aigw.gateway.cost import CostRuntime
from aigw.gateway.router import RouterRuntime
from aigw.plugin_base import kong_plugin
from aigw.providers import ADAPTERS
from aigw.providers.registry import PROVIDERS, TYPES
from aigw.relay import observe
from aigw.routing import ConfigError, RouterConfig, default_retry_statuses
from aigw.validate import validate_doc

ROOT = Path(__file__).resolve().parents[2]


def _minimal() -> dict:
    return {"providers": [{"name": "o", "type": "openai", "api_key": "k"}],
            "models": [{"name": "m", "targets": [{"provider": "o", "model": "x"},
                                                 {"provider": "o", "model": "y"}]}]}


# -- the provider registry -------------------------------------------------------------

def test_schema_type_enum_is_the_registry():
    enum = schema.load("ai-router")["properties"]["providers"]["items"]["properties"]["type"]["enum"]
    assert list(enum) == list(TYPES)


def test_adapters_catalogue_ids_and_log_names_come_from_the_registry():
    assert {name: type(a) for name, a in ADAPTERS.items()} == {n: p.adapter for n, p in PROVIDERS.items()}
    assert all(a.type == name for name, a in ADAPTERS.items())
    assert {n: p.catalogue_id for n, p in PROVIDERS.items() if p.catalogue_id} == catalogue.PROVIDER_IDS
    assert {n: p.otel_name for n, p in PROVIDERS.items()} == observe.PROVIDER_NAMES
    assert tuple(n for n, p in PROVIDERS.items() if p.default_base_url) == pricing._FIRST_PARTY


def test_registry_default_base_url_and_required_fields_apply(monkeypatch):
    cfg = _minimal()
    assert RouterConfig.from_dict(cfg, env={}).providers["o"].base_url == PROVIDERS["openai"].default_base_url
    monkeypatch.setitem(PROVIDERS, "openai", copy.copy(PROVIDERS["openai"]))
    object.__setattr__(PROVIDERS["openai"], "default_base_url", "https://elsewhere.example/v1")
    assert RouterConfig.from_dict(cfg, env={}).providers["o"].base_url == "https://elsewhere.example/v1"
    object.__setattr__(PROVIDERS["openai"], "required", ("region",))
    with pytest.raises(ConfigError) as e:
        RouterConfig.from_dict(cfg, env={})
    assert e.value.field == "providers[0].region"


def test_target_provider_must_serve_the_model_capabilities():
    cfg = _minimal()
    cfg["providers"].append({"name": "a", "type": "anthropic", "api_key": "k"})
    cfg["models"][0] = {"name": "e", "capabilities": ["embeddings"],
                        "targets": [{"provider": "o", "model": "emb"}, {"provider": "a", "model": "c"}]}
    with pytest.raises(ConfigError) as e:
        RouterConfig.from_dict(cfg, env={})
    assert e.value.field == "models[0].targets[1].provider"
    assert "embeddings" in str(e.value)


# -- defaults come from the schema ---------------------------------------------------

@pytest.fixture
def schema_copy(tmp_path, monkeypatch):
    """A copy of schemas/ that the test may edit; the process reads it instead."""
    dst = tmp_path / "schemas"
    shutil.copytree(schema.schemas_dir(), dst)
    monkeypatch.setenv("AIGW_SCHEMAS_DIR", str(dst))
    schema.load.cache_clear()
    schema._validator.cache_clear()
    yield dst
    schema.load.cache_clear()
    schema._validator.cache_clear()


def _edit(dst: Path, name: str, fn) -> None:
    path = dst / f"{name}.json"
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))
    schema.load.cache_clear()
    schema._validator.cache_clear()


def test_every_router_default_comes_from_the_schema(schema_copy):
    before = RouterConfig.from_dict(_minimal(), env={})
    spec = before.models["m"]
    assert (before.max_attempts, before.breaker_failures, before.breaker_cooldown) == (3, 5, 30.0)
    assert before.retry_on_status == {429, 500, 502, 503, 504} == default_retry_statuses()
    assert (spec.strategy, spec.sticky, spec.capabilities) == ("weighted", "consumer",
                                                                {"chat", "stream", "tools"})
    assert before.providers["o"].connect_timeout == 5.0

    def change(doc):
        p = doc["properties"]
        p["failover"]["properties"]["max_attempts"]["default"] = 7
        p["failover"]["properties"]["on_status"]["default"] = [503]
        p["circuit_breaker"]["properties"]["failures"]["default"] = 9
        p["circuit_breaker"]["properties"]["cooldown"]["default"] = 11
        p["max_body_bytes"]["default"] = 4096
        prov = p["providers"]["items"]["properties"]
        prov["timeouts"]["properties"]["connect"]["default"] = 1234
        prov["timeouts"]["properties"]["total"]["default"] = 9000
        model = p["models"]["items"]["properties"]
        model["strategy"]["default"] = "priority"
        model["sticky"]["default"] = "none"
        model["capabilities"]["default"] = ["chat", "vision"]
        model["targets"]["items"]["properties"]["weight"]["default"] = 4

    _edit(schema_copy, "ai-router", change)
    after = RouterConfig.from_dict(_minimal(), env={})
    spec = after.models["m"]
    assert (after.max_attempts, after.breaker_failures, after.breaker_cooldown) == (7, 9, 11.0)
    assert after.retry_on_status == {503} == default_retry_statuses()
    assert after.max_body_bytes == 4096
    assert (spec.strategy, spec.sticky, spec.capabilities) == ("priority", "none", {"chat", "vision"})
    assert [t.weight for t in spec.targets] == [4, 4]
    p = after.providers["o"]
    assert (p.connect_timeout, p.first_byte_timeout, p.total_timeout) == (1.234, 30.0, 9.0)
    rt = RouterRuntime(schema.validate("ai-router", _minimal()))
    assert rt.failover_status == {503} and rt.max_body == 4096


def test_router_and_cost_runtime_defaults_come_from_the_schema(schema_copy):
    def change(doc):
        doc["properties"]["default_max_output"]["default"] = 77
        doc["properties"]["unpriced"]["default"] = "allow"

    def change_router(doc):
        doc["properties"]["allow_anonymous"]["default"] = True
        doc["properties"]["required_plugins"]["default"] = ["ai-cost"]

    _edit(schema_copy, "ai-cost", change)
    _edit(schema_copy, "ai-router", change_router)
    cost = CostRuntime(schema.validate("ai-cost", {}))
    assert (cost.default_max_output, cost.cfg["unpriced"]) == (77, "allow")
    router = RouterRuntime(schema.validate("ai-router", _minimal()))
    assert router.allow_anonymous is True and router.required_plugins == {"ai-cost"}


def test_a_rule_added_to_the_schema_is_enforced_by_the_router(schema_copy):
    cfg = _minimal()
    RouterConfig.from_dict(cfg, env={})
    _edit(schema_copy, "ai-router",
          lambda d: d["properties"]["models"]["items"]["properties"]["name"].update(maxLength=0))
    with pytest.raises(ConfigError) as e:
        RouterConfig.from_dict(cfg, env={})
    assert e.value.field == "models[0].name"


# -- the same message at start-up and in aigw-validate ---------------------------------

def _doc_with(router_cfg: dict) -> dict:
    doc = yaml.safe_load((ROOT / "kong" / "kong.yml").read_text())
    for svc in doc["services"]:
        for p in svc.get("plugins") or ():
            if p["name"] == "ai-router":
                p["config"] = router_cfg
                return doc
    raise AssertionError("kong.yml has no ai-router")


@pytest.mark.parametrize("breakage", [
    ("schema: enum", lambda c: c["providers"][0].update(type="openia")),
    ("schema: unknown field", lambda c: c["models"][0]["targets"][0].update(wieght=2)),
    ("schema: range", lambda c: c.update(failover={"on_status": [200]})),
    ("schema: pattern", lambda c: c["models"][0].update(sticky="cookie")),
    ("code: reference", lambda c: c["models"][0]["targets"][0].update(provider="nope")),
    ("code: per type", lambda c: c["providers"].append({"name": "az", "type": "azure",
                                                        "base_url": "https://a.example"})),
])
def test_startup_and_aigw_validate_report_the_same_message(breakage):
    _, breaks = breakage
    cfg = _minimal()
    breaks(cfg)
    plugin_cls, *_ = kong_plugin("ai-router", RouterRuntime, 769, anchor=True)
    with pytest.raises(schema.ConfigInvalid) as at_start:
        plugin_cls(copy.deepcopy(cfg))  # what StartInstance runs (fails before the relay starts)
    errors = validate_doc(_doc_with(cfg))
    assert len(errors) == 1, errors
    assert errors[0].endswith(": " + str(at_start.value)), (errors[0], str(at_start.value))
    assert str(at_start.value).startswith("ai-router: config.")
