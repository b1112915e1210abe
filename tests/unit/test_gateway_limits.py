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


# --- the request's batch: queued in access, one commit, one settlement ----------------

class CountingLimiter:
    """A MemoryLimiter that counts its batch calls (each would be one Redis script call)."""

    def __init__(self, fail: bool = False):
        from aigw.limits import MemoryLimiter
        self.inner, self.fail, self.calls = MemoryLimiter(), fail, []

    def reserve_many(self, items):
        from aigw.limits import BackendUnavailable
        self.calls.append(("reserve", len(items)))
        if self.fail:
            raise BackendUnavailable("down")
        return self.inner.reserve_many(items)

    def settle_many(self, settlements):
        self.calls.append(("settle", len(settlements)))
        return self.inner.settle_many(settlements)

    def used(self, rule):
        return self.inner.used(rule)


def _reserver(kind, limit, limiter, **cfg):
    r = Reserver(kind, [ScopedLimit("consumer", limit, "minute", frozenset())], {"__plugin_id": kind, **cfg})
    r.limiter = limiter
    return r


def _deny(code):
    from aigw.errors import GatewayError
    return lambda d: GatewayError(429, "no", code=code)


def test_reserve_queues_and_commit_reserves_both_plugins_in_one_call():
    from aigw.context import Outcome
    from aigw.gateway.limits import commit
    lim = CountingLimiter()
    tok, usd = _reserver("tok", 100, lim), _reserver("usd", 1000, lim)
    c, seen = ctx(), []
    tok.reserve(c, 40, _deny("t"), lambda o: 25, decided=seen.append)
    usd.reserve(c, 300, _deny("u"), lambda o: None)
    assert lim.calls == [] and seen == []        # nothing reached the store in access
    commit(c)
    commit(c)                                    # idempotent
    assert lim.calls == [("reserve", 2)]
    assert [d.remaining for d in seen] == [60]   # ai-tokens' headers come from here
    assert lim.used(tok.rules(c)[0]) == 40 and lim.used(usd.rules(c)[0]) == 300
    c.finish(Outcome(status=200))
    assert lim.calls == [("reserve", 2), ("settle", 2)]
    assert lim.used(tok.rules(c)[0]) == 25 and lim.used(usd.rules(c)[0]) == 0


def test_a_refused_item_refuses_the_batch_with_its_own_error():
    import pytest

    from aigw.errors import GatewayError
    from aigw.gateway.limits import commit
    lim = CountingLimiter()
    tok, usd = _reserver("tok", 100, lim), _reserver("usd", 10, lim)
    c, seen = ctx(), []
    tok.reserve(c, 40, _deny("tok_denied"), lambda o: 40, decided=seen.append)
    usd.reserve(c, 300, _deny("usd_denied"), lambda o: 300)
    with pytest.raises(GatewayError) as exc:
        commit(c)
    assert exc.value.code == "usd_denied" and seen == []
    assert lim.used(tok.rules(c)[0]) == 0        # all or nothing
    from aigw.context import Outcome
    c.finish(Outcome(status=429))
    assert lim.calls == [("reserve", 2)]         # nothing held, nothing to settle


def test_two_backends_are_one_call_each_and_a_refusal_releases_the_other():
    import pytest

    from aigw.errors import GatewayError
    from aigw.gateway.limits import commit
    a, b = CountingLimiter(), CountingLimiter()
    tok, usd = _reserver("tok", 100, a), _reserver("usd", 10, b)
    c = ctx()
    tok.reserve(c, 40, _deny("t"), lambda o: 40)
    usd.reserve(c, 300, _deny("u"), lambda o: 300)
    with pytest.raises(GatewayError):
        commit(c)
    assert a.calls == [("reserve", 1), ("settle", 1)] and b.calls == [("reserve", 1)]
    assert a.used(tok.rules(c)[0]) == 0


def test_an_unavailable_store_is_503_unless_the_plugin_fails_open():
    import pytest

    from aigw.errors import GatewayError
    from aigw.gateway.limits import commit
    c = ctx()
    _reserver("tok", 100, CountingLimiter(fail=True)).reserve(c, 1, _deny("t"), lambda o: 1)
    with pytest.raises(GatewayError) as exc:
        commit(c)
    assert exc.value.status == 503 and exc.value.code == "limits_unavailable"
    c2, seen = ctx(), []
    _reserver("tok", 100, CountingLimiter(fail=True), fail_open=True).reserve(
        c2, 1, _deny("t"), lambda o: 1, decided=seen.append)
    commit(c2)
    assert seen == []


def test_a_request_that_never_reaches_the_relay_touches_no_store():
    from aigw.context import Outcome
    lim = CountingLimiter()
    c = ctx()
    _reserver("tok", 100, lim).reserve(c, 1, _deny("t"), lambda o: 1)
    c.finish(Outcome(status=0, error="not_proxied"))  # the log phase / the sweeper
    assert lim.calls == []
