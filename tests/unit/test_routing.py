"""ai-router core: resolution, allow-lists, plans per strategy, filters, breaker, config errors."""
from __future__ import annotations

import copy
import random
from collections import Counter
from typing import Any

import pytest

from aigw.cost.pricing import PriceTable
from aigw.routing import CircuitBreaker, ConfigError, ModelSpec, Needs, RouterConfig, sticky_key


def base_config() -> dict[str, Any]:
    return {
        "providers": [
            {"name": "openai", "type": "openai", "api_key": "sk-test"},
            {"name": "azure-eu", "type": "azure", "base_url": "https://eu.example.com/",
             "api_version": "2024-10-21", "timeouts": {"connect": 1000, "first_byte": 2500}},
            {"name": "anthropic", "type": "anthropic", "api_key": "k"},
            {"name": "local", "type": "openai_compatible", "base_url": "http://127.0.0.1:8000/v1"},
        ],
        "models": [
            {"name": "gpt-4o", "aliases": ["chat-default"],
             "capabilities": ["chat", "stream", "tools", "vision"],
             "context_window": 128000, "max_output": 16384,
             "targets": [
                 {"provider": "openai", "model": "gpt-4o", "weight": 90, "variant": "A",
                  "tags": ["zdr"]},
                 {"provider": "azure-eu", "model": "gpt-4o-deploy", "weight": 10, "variant": "B",
                  "tags": ["eu"]},
             ]},
            {"name": "cheap", "strategy": "cost", "context_window": 1000000,
             "targets": [
                 {"provider": "anthropic", "model": "claude-opus-4"},
                 {"provider": "local", "model": "llama-3-70b", "tags": ["onprem"]},
                 {"provider": "openai", "model": "gpt-4o-mini"},
                 {"provider": "openai", "model": "gpt-4o", "tags": ["zdr"]},
             ]},
            {"name": "ordered", "strategy": "priority", "sticky": "none",
             "targets": [
                 {"provider": "local", "model": "a"},
                 {"provider": "openai", "model": "b"},
                 {"provider": "anthropic", "model": "c"},
                 {"provider": "azure-eu", "model": "d"},
             ]},
            {"name": "gold-only", "allow": {"consumers": ["alice"], "groups": ["gold"]},
             "targets": [{"provider": "openai", "model": "gpt-4.1"}]},
            {"name": "embed", "capabilities": ["embeddings"],
             "targets": [{"provider": "openai", "model": "text-embedding-3-small"}]},
        ],
        "default_model": "chat-default",
        "failover": {"max_attempts": 3},
        "data_class_policy": {"pii": ["onprem", "zdr"], "secret": []},
    }


@pytest.fixture
def router() -> RouterConfig:
    return RouterConfig.from_dict(base_config(), env={})


def keys(plan) -> list[str]:
    return [t.key for t in plan.targets]


# --- parsing ----------------------------------------------------------------

def test_provider_fields_parsed(router: RouterConfig) -> None:
    azure = router.providers["azure-eu"]
    assert azure.base_url == "https://eu.example.com"
    assert (azure.connect_timeout, azure.first_byte_timeout, azure.total_timeout) == (1.0, 2.5, 300.0)
    openai = router.providers["openai"]
    assert openai.base_url == "https://api.openai.com/v1"
    assert openai.api_key == "sk-test"
    assert router.max_attempts == 3
    assert router.retry_on_status == {429, 500, 502, 503, 504}


def test_api_key_env_read_from_env() -> None:
    cfg = base_config()
    cfg["providers"][2] = {"name": "anthropic", "type": "anthropic", "api_key_env": "ANT_KEY"}
    router = RouterConfig.from_dict(cfg, env={"ANT_KEY": "from-env"})
    assert router.providers["anthropic"].api_key == "from-env"


def test_kong_nulls_count_as_absent() -> None:
    cfg = base_config()
    cfg["providers"][0].update({"api_key_env": None, "api_version": None, "headers": None,
                                "timeouts": None})
    cfg["models"][0].update({"strategy": None, "sticky": None, "allow": None, "tags": None})
    cfg.update({"failover": None, "circuit_breaker": None, "max_body_bytes": None})
    router = RouterConfig.from_dict(cfg, env={})
    spec = router.models["gpt-4o"]
    assert (spec.strategy, spec.sticky, spec.allow_consumers) == ("weighted", "consumer", None)
    assert router.max_body_bytes == 1048576
    assert router.make_breaker().failures == 5


def test_defaults_for_capabilities_and_weight(router: RouterConfig) -> None:
    spec = router.models["ordered"]
    assert spec.capabilities == {"chat", "stream", "tools"}
    assert [t.weight for t in spec.targets] == [1, 1, 1, 1]


def _set(cfg: dict, path: list, value: Any) -> None:
    node = cfg
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


@pytest.mark.parametrize("path,value,field", [
    (["models", 0, "targets", 1, "provider"], "nope", "models[0].targets[1].provider"),
    (["providers", 1, "name"], "openai", "providers[1].name"),
    (["providers", 1, "api_version"], None, "providers[1].api_version"),
    (["providers", 0, "type"], "sagemaker", "providers[0].type"),
    (["providers", 3, "base_url"], None, "providers[3].base_url"),
    (["providers", 3, "base_url"], "ftp://x", "providers[3].base_url"),
    (["providers", 0, "api_key_env"], "OPENAI_KEY", "providers[0].api_key_env"),
    (["providers", 2, "timeouts"], {"connect": 0}, "providers[2].timeouts.connect"),
    (["models", 1, "name"], "gpt-4o", "models[1].name"),
    (["models", 1, "aliases"], ["chat-default"], "models[1].aliases[0]"),
    (["models", 1, "aliases"], ["embed"], "models[4].name"),  # later entry is named
    (["models", 0, "strategy"], "fastest", "models[0].strategy"),
    (["models", 0, "sticky"], "cookie", "models[0].sticky"),
    (["models", 0, "capabilities"], ["chat", "telepathy"], "models[0].capabilities[1]"),
    (["models", 0, "max_output"], 200000, "models[0].max_output"),
    (["models", 0, "targets", 0, "weight"], -1, "models[0].targets[0].weight"),
    (["models", 0, "targets", 0, "wieght"], 5, "models[0].targets[0].wieght"),
    (["models", 0, "targets"], [], "models[0].targets"),
    (["models", 0, "targets", 1, "model"], "gpt-4o", "models[0].targets[1]"),
    (["models", 3, "allow"], {"consumers": "alice"}, "models[3].allow.consumers"),
    (["default_model"], "gpt-5", "default_model"),
    (["failover", "max_attempts"], 0, "failover.max_attempts"),
    (["failover", "on_status"], [200], "failover.on_status[0]"),
    (["data_class_policy", "pii"], "zdr", "data_class_policy.pii"),
    (["models"], [], "models"),
])
def test_config_error_names_field(path: list, value: Any, field: str) -> None:
    cfg = base_config()
    if path == ["models", 0, "targets", 1, "model"]:
        cfg["models"][0]["targets"][1]["provider"] = "openai"  # same key twice
    _set(cfg, path, value)
    with pytest.raises(ConfigError) as err:
        RouterConfig.from_dict(cfg, env={})
    assert err.value.field == field
    assert str(err.value).startswith(f"ai-router: config.{field}:")  # the format of a schema error


def test_all_zero_weights_rejected_for_weighted() -> None:
    cfg = base_config()
    for t in cfg["models"][0]["targets"]:
        t["weight"] = 0
    with pytest.raises(ConfigError) as err:
        RouterConfig.from_dict(cfg, env={})
    assert err.value.field == "models[0].targets"


def test_config_error_does_not_leak_api_key() -> None:
    cfg = base_config()
    cfg["providers"][0]["api_key_env"] = "X"  # conflicts with api_key
    with pytest.raises(ConfigError) as err:
        RouterConfig.from_dict(cfg, env={})
    assert "sk-test" not in str(err.value)


# --- resolution and allow-lists --------------------------------------------

def test_resolve_name_alias_default(router: RouterConfig) -> None:
    assert router.resolve("gpt-4o").name == "gpt-4o"
    assert router.resolve("chat-default").name == "gpt-4o"
    assert router.resolve(None).name == "gpt-4o"
    assert router.resolve("").name == "gpt-4o"
    assert router.resolve("cheap").name == "cheap"
    assert router.resolve("gpt-5") is None


def test_resolve_without_default() -> None:
    cfg = base_config()
    del cfg["default_model"]
    assert RouterConfig.from_dict(cfg, env={}).resolve(None) is None


def test_allow_lists(router: RouterConfig) -> None:
    gold = router.models["gold-only"]
    assert router.allowed(gold, "alice", [])
    assert router.allowed(gold, ("bob", "alice"), [])  # username or id
    assert router.allowed(gold, "bob", ["silver", "gold"])
    assert not router.allowed(gold, "bob", ["silver"])
    assert not router.allowed(gold, None, [])
    assert router.allowed(router.models["gpt-4o"], None, [])


def test_empty_allow_means_nobody() -> None:
    cfg = base_config()
    cfg["models"][3]["allow"] = {"consumers": [], "groups": []}
    router = RouterConfig.from_dict(cfg, env={})
    assert not router.allowed(router.models["gold-only"], "alice", ["gold"])


def test_visible_models(router: RouterConfig) -> None:
    assert [m.name for m in router.visible_models("bob", [])] == ["gpt-4o", "cheap", "ordered", "embed"]
    assert "gold-only" in [m.name for m in router.visible_models(None, ["gold"])]


# --- weighted strategy ------------------------------------------------------

def _weighted_router(weights: list[int]) -> tuple[RouterConfig, ModelSpec]:
    cfg = base_config()
    providers = ["openai", "azure-eu", "anthropic", "local"]
    cfg["models"][0]["targets"] = [{"provider": providers[i], "model": "m", "weight": w}
                                   for i, w in enumerate(weights)]
    cfg["failover"]["max_attempts"] = len(weights)
    router = RouterConfig.from_dict(cfg, env={})
    return router, router.models["gpt-4o"]


@pytest.mark.parametrize("weights", [[90, 10], [50, 30, 20], [1, 1, 1, 1]])
def test_weighted_split_over_sticky_keys(weights: list[int]) -> None:
    router, spec = _weighted_router(weights)
    n = 10_000
    firsts = Counter(router.plan(spec, Needs(), sticky_key=f"consumer-{i}").targets[0].key
                     for i in range(n))
    total = sum(weights)
    for target, w in zip(spec.targets, weights, strict=True):
        assert abs(firsts[target.key] / n - w / total) < 0.02, (target.key, firsts)


def test_weighted_is_sticky_per_key(router: RouterConfig) -> None:
    spec = router.models["gpt-4o"]
    for i in range(200):
        first = {keys(router.plan(spec, Needs(), sticky_key=f"user-{i}"))[0] for _ in range(5)}
        assert len(first) == 1


def test_weighted_random_without_sticky_key(router: RouterConfig) -> None:
    spec = router.models["gpt-4o"]
    random.seed(7)
    firsts = Counter(keys(router.plan(spec, Needs(), sticky_key=None))[0] for _ in range(4000))
    assert abs(firsts["openai/gpt-4o"] / 4000 - 0.9) < 0.03
    assert firsts["azure-eu/gpt-4o-deploy"] > 0


def test_weighted_failover_in_weight_order() -> None:
    router, spec = _weighted_router([10, 0, 60, 30])
    for i in range(300):
        ks = keys(router.plan(spec, Needs(), sticky_key=f"k{i}"))
        assert len(ks) == 4
        rest = [k for k in ["anthropic/m", "local/m", "openai/m", "azure-eu/m"] if k != ks[0]]
        assert ks[1:] == rest
        assert ks[0] != "azure-eu/m"  # weight 0: failover only


def test_variant_is_exposed(router: RouterConfig) -> None:
    plan = router.plan(router.models["gpt-4o"], Needs(), sticky_key="x")
    assert {t.variant for t in plan.targets} == {"A", "B"}


# --- cost and priority strategies -------------------------------------------

def test_cost_picks_cheapest_unpriced_last(router: RouterConfig) -> None:
    plan = router.plan(router.models["cheap"], Needs(prompt_tokens=1000, max_output=500),
                       sticky_key="a")
    assert keys(plan) == ["openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-opus-4"]


def test_cost_uses_price_overrides(router: RouterConfig) -> None:
    prices = PriceTable.default().with_overrides({"local/llama-3-70b": {"input": 0.01, "output": 0.01}})
    plan = router.plan(router.models["cheap"], Needs(prompt_tokens=1000, max_output=500),
                       sticky_key="a", prices=prices)
    assert keys(plan)[0] == "local/llama-3-70b"


def test_cost_picks_cheapest_capable_under_data_class(router: RouterConfig) -> None:
    plan = router.plan(router.models["cheap"], Needs(prompt_tokens=1000, max_output=500),
                       sticky_key="a", data_classes=["pii"])
    assert keys(plan) == ["openai/gpt-4o", "local/llama-3-70b"]
    assert plan.rejected == {"anthropic/claude-opus-4": "data_class",
                             "openai/gpt-4o-mini": "data_class"}


def test_cost_follows_price_tiers() -> None:
    cfg = base_config()
    cfg["providers"].append({"name": "google", "type": "gemini",
                             "base_url": "https://generativelanguage.googleapis.com"})
    cfg["models"][1]["targets"] = [{"provider": "openai", "model": "gpt-4.1"},
                                   {"provider": "google", "model": "gemini-2.5-pro"}]
    router = RouterConfig.from_dict(cfg, env={})
    spec = router.models["cheap"]
    # 10k prompt: gemini 1.25 < gpt-4.1 2.00; 300k prompt: gemini's long tier 2.50 > 2.00
    assert keys(router.plan(spec, Needs(prompt_tokens=10000, max_output=1), sticky_key=None))[0] \
        == "google/gemini-2.5-pro"
    assert keys(router.plan(spec, Needs(prompt_tokens=300000, max_output=1), sticky_key=None))[0] \
        == "openai/gpt-4.1"


def test_priority_keeps_declared_order_and_caps(router: RouterConfig) -> None:
    plan = router.plan(router.models["ordered"], Needs(), sticky_key="a")
    assert keys(plan) == ["local/a", "openai/b", "anthropic/c"]


# --- filters ----------------------------------------------------------------

def test_context_window_filter(router: RouterConfig) -> None:
    spec = router.models["gpt-4o"]
    # 120000 + spec max_output 16384 > 128000
    plan = router.plan(spec, Needs(prompt_tokens=120000), sticky_key="a")
    assert plan.targets == []
    assert set(plan.rejected.values()) == {"context_window"}
    err = plan.error()
    assert (err.status, err.code) == (400, "context_length_exceeded")
    assert "136384" in err.message
    # an explicit smaller max_output fits
    assert router.plan(spec, Needs(prompt_tokens=120000, max_output=8000), sticky_key="a").targets


def test_capability_filter(router: RouterConfig) -> None:
    plan = router.plan(router.models["ordered"], Needs(vision=True, tools=True), sticky_key=None)
    assert plan.targets == [] and plan.missing == {"vision"}
    assert set(plan.rejected) == {"local/a", "openai/b", "anthropic/c", "azure-eu/d"}
    err = plan.error()
    assert (err.status, err.code) == (400, "unsupported_capability")
    assert "vision" in err.message
    assert router.plan(router.models["gpt-4o"], Needs(vision=True), sticky_key="a").targets


def test_embeddings_capability(router: RouterConfig) -> None:
    embed = router.models["embed"]
    assert router.plan(embed, Needs(capability="embeddings"), sticky_key=None).targets
    assert not router.plan(embed, Needs(), sticky_key=None).targets
    assert not router.plan(router.models["gpt-4o"], Needs(capability="embeddings"),
                           sticky_key=None).targets


def test_data_class_filter(router: RouterConfig) -> None:
    spec = router.models["gpt-4o"]
    for i in range(50):
        plan = router.plan(spec, Needs(), sticky_key=f"u{i}", data_classes=["pii"])
        assert keys(plan) == ["openai/gpt-4o"]
        assert plan.rejected == {"azure-eu/gpt-4o-deploy": "data_class"}
    # a class absent from the policy is unrestricted
    assert len(router.plan(spec, Needs(), sticky_key="a", data_classes=["public"]).targets) == 2


def test_data_class_empty_list_allows_nobody(router: RouterConfig) -> None:
    plan = router.plan(router.models["gpt-4o"], Needs(), sticky_key="a",
                       data_classes=["pii", "secret"])
    assert plan.targets == []
    err = plan.error()
    assert (err.status, err.code) == (403, "data_class_not_allowed")
    assert "secret" in err.message


def test_model_tags_count_for_data_classes() -> None:
    cfg = base_config()
    cfg["models"][2]["tags"] = ["onprem"]
    router = RouterConfig.from_dict(cfg, env={})
    plan = router.plan(router.models["ordered"], Needs(), sticky_key=None, data_classes=["pii"])
    assert len(plan.targets) == 3 and plan.rejected == {}


# --- circuit breaker ---------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=3, cooldown=30, clock=clock)
    b.record_failure("k")
    b.record_failure("k")
    b.record_success("k")  # resets the streak
    b.record_failure("k")
    b.record_failure("k")
    assert b.allow("k") and b.state("k") == "closed"
    b.record_failure("k")
    assert not b.allow("k") and b.state("k") == "open"
    assert b.allow("other")


def test_breaker_half_open_single_trial() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=1, cooldown=30, clock=clock)
    b.record_failure("k")
    clock.now += 29.9
    assert not b.allow("k")
    clock.now += 0.2
    assert b.state("k") == "half_open"
    assert b.allow("k")        # the one trial
    assert not b.allow("k")    # others wait for its result
    b.record_failure("k")      # trial failed: open again for a full cooldown
    clock.now += 29
    assert not b.allow("k")
    clock.now += 2
    assert b.allow("k")
    b.record_success("k")
    assert b.allow("k") and b.allow("k") and b.state("k") == "closed"


def test_breaker_lost_trial_frees_after_cooldown() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=1, cooldown=10, clock=clock)
    b.record_failure("k")
    clock.now += 10
    assert b.allow("k")
    clock.now += 5
    assert not b.allow("k")
    clock.now += 5
    assert b.allow("k")


def test_plan_moves_open_targets_last(router: RouterConfig) -> None:
    clock = Clock()
    breaker = router.make_breaker(clock=clock)
    for _ in range(5):
        breaker.record_failure("local/a")
    plan = router.plan(router.models["ordered"], Needs(), sticky_key=None, breaker=breaker)
    assert keys(plan) == ["openai/b", "anthropic/c", "azure-eu/d"]
    assert plan.rejected == {"local/a": "circuit_open"}


def test_plan_total_outage_still_tries(router: RouterConfig) -> None:
    breaker = router.make_breaker(clock=Clock())
    spec = router.models["gpt-4o"]
    for t in spec.targets:
        for _ in range(5):
            breaker.record_failure(t.key)
    plan = router.plan(spec, Needs(), sticky_key="a", breaker=breaker)
    assert sorted(keys(plan)) == ["azure-eu/gpt-4o-deploy", "openai/gpt-4o"]
    assert set(plan.rejected.values()) == {"circuit_open"}
    assert plan.error() is None


def test_max_attempts_cap() -> None:
    cfg = copy.deepcopy(base_config())
    cfg["failover"]["max_attempts"] = 1
    router = RouterConfig.from_dict(cfg, env={})
    assert keys(router.plan(router.models["ordered"], Needs(), sticky_key=None)) == ["local/a"]


# --- sticky key helper ---------------------------------------------------------

def test_sticky_key_modes() -> None:
    cfg = base_config()
    cfg["models"][1]["sticky"] = "header:X-Session-Id"
    router = RouterConfig.from_dict(cfg, env={})
    assert sticky_key(router.models["gpt-4o"], "alice", {}) == "alice"
    assert sticky_key(router.models["gpt-4o"], None, {}) is None
    assert sticky_key(router.models["ordered"], "alice", {}) is None
    hdr = router.models["cheap"]
    assert sticky_key(hdr, "alice", {"x-session-id": ["s1", "s2"]}) == "s1"
    assert sticky_key(hdr, "alice", {"X-Session-ID": "s9"}) == "s9"
    assert sticky_key(hdr, "alice", {}) is None
