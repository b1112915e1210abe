"""aigw/gateway/limits.py: which counters an instance uses, and what a request reserves."""
from __future__ import annotations

from types import SimpleNamespace

from aigw.context import RequestContext
from aigw.gateway.limits import (
    Reserver,
    ScopedLimit,
    counter_id,
    output_choices,
    rule_label,
    worst_case_tokens,
)
from aigw.tokens.counting import Count


def ctx(**kw) -> RequestContext:
    c = RequestContext(id="r1", api="chat", path="/v1/chat/completions", headers={}, raw_body=b"",
                       consumer={"username": "alice"})
    c.model = SimpleNamespace(name="m", max_output=kw.pop("spec_max", None))
    c.prompt_count = Count(kw.pop("prompt", 10), False, "o200k_base")
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_counter_is_the_plugin_instance_unless_named():
    a = counter_id({"__plugin_id": "aaa-1", "route_id": "r1"}, "tok")
    b = counter_id({"__plugin_id": "bbb-2", "route_id": "r2"}, "tok")
    assert a == "i.aaa-1" and b == "i.bbb-2"
    assert counter_id({"__plugin_id": "aaa-1", "counter": "team"}, "tok") == "n.team"
    assert counter_id({"__plugin_id": "bbb-2", "counter": "team"}, "tok") == "n.team"
    # a name cannot break the key structure
    assert counter_id({"counter": "a:b*c d"}, "tok") == "n.a_b_c_d"


def test_counter_without_kong_id_is_derived_from_attachment_and_limits():
    lim = [{"scope": "global", "tokens": 5, "window": "minute"}]
    r1 = counter_id({"route_id": "r1", "limits": lim}, "tok")
    assert r1 == counter_id({"route_id": "r1", "limits": lim}, "tok")  # stable (every node agrees)
    assert r1.startswith("d.")
    assert r1 != counter_id({"route_id": "r2", "limits": lim}, "tok")
    assert r1 != counter_id({"route_id": "r1", "limits": lim}, "usd")


def test_rule_keys_name_the_counter():
    limits = [ScopedLimit("global", 100, "minute", frozenset())]
    a = Reserver("tok", limits, {"__plugin_id": "p1"}).rules(ctx())
    b = Reserver("tok", limits, {"__plugin_id": "p2"}).rules(ctx())
    assert [r.key for r in a] == ["tok:i.p1:global:*:minute"]
    assert [r.key for r in b] == ["tok:i.p2:global:*:minute"]
    assert rule_label(a[0]) == "global:*:minute"


def test_output_choices_takes_n_and_best_of():
    assert output_choices({}) == 1
    assert output_choices({"n": 16}) == 16
    assert output_choices({"n": 2, "best_of": 5}) == 5
    assert output_choices({"n": True}) == 1  # bool is not a count
    assert output_choices(None) == 1


def test_worst_case_multiplies_output_by_choices():
    c = ctx(max_output=100, canonical={"n": 4})
    assert worst_case_tokens(c, 1024) == (10, 400, 100)
    # no max_tokens: the smaller of the model's max_output and the default, per choice
    assert worst_case_tokens(ctx(canonical={"n": 3}, spec_max=500), 1024) == (10, 1500, 500)
    assert worst_case_tokens(ctx(canonical={}), 1024) == (10, 1024, 1024)
    assert worst_case_tokens(ctx(canonical={}), 0) == (10, 0, 0)  # 0 and no model max: nothing
    # embeddings reserve no output
    assert worst_case_tokens(ctx(api="embeddings", canonical={}), 1024) == (10, 0, 0)


def test_the_cap_is_set_only_where_a_limit_reserved_and_is_the_smallest():
    from aigw.limits import MemoryLimiter
    limits = [ScopedLimit("global", 10**9, "minute", frozenset())]
    c = ctx(canonical={})
    tokens = Reserver("tok", limits, {"__plugin_id": "t"})
    tokens.limiter = MemoryLimiter()
    cost = Reserver("usd", limits, {"__plugin_id": "u"})
    cost.limiter = MemoryLimiter()
    unlimited = Reserver("tok", [], {"__plugin_id": "x"})

    def denied(_):
        raise AssertionError

    unlimited.reserve(c, 10, denied, lambda o: None, per_choice=50)
    assert c.output_cap is None          # measure-only: nothing reserved, nothing capped
    tokens.reserve(c, 1034, denied, lambda o: None, per_choice=1024)
    assert c.output_cap == 1024
    cost.reserve(c, 266, denied, lambda o: None, per_choice=256)
    assert c.output_cap == 256
    tokens.reserve(c, 2058, denied, lambda o: None, per_choice=2048)
    assert c.output_cap == 256
