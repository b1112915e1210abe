"""The instance registry picks the config Kong picks (plugins_iterator.lua 3.9.1 lookup_cfg)."""
from __future__ import annotations

import itertools

import pytest

from aigw import instances
from aigw.instances import Registry


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def cfg(pid: str, seq: int = 1, route: str | None = None, service: str | None = None,
        consumer: str | None = None) -> dict:
    c = {"__plugin_id": pid, "__seq__": seq}
    for k, v in (("route_id", route), ("service_id", service), ("consumer_id", consumer)):
        if v is not None:
            c[k] = v
    return c


SCOPES = {
    "rsc": ("R", "S", "C"), "rc": ("R", None, "C"), "sc": (None, "S", "C"), "rs": ("R", "S", None),
    "c": (None, None, "C"), "r": ("R", None, None), "s": (None, "S", None), "g": (None, None, None),
}
KONG_ORDER = ["rsc", "rc", "sc", "rs", "c", "r", "s", "g"]  # plugins_iterator.lua 199-207


@pytest.mark.parametrize("present", [set(c) for n in range(1, 5) for c in itertools.combinations(KONG_ORDER, n)])
def test_the_most_specific_scope_wins_in_kongs_order(present):
    reg = Registry(Clock())
    for name in present:
        r, s, c = SCOPES[name]
        reg.register("ai-tokens", 771, cfg(name, route=r, service=s, consumer=c), plugin=name)
    expected = next(n for n in KONG_ORDER if n in present)
    assert reg.pick("ai-tokens", "R", "S", "C").plugin == expected


def test_scopes_of_other_routes_services_and_consumers_never_apply():
    reg = Registry(Clock())
    reg.register("ai-cost", 770, cfg("other-route", route="R2"), plugin="r2")
    reg.register("ai-cost", 770, cfg("other-consumer", consumer="C2"), plugin="c2")
    reg.register("ai-cost", 770, cfg("other-service", service="S2"), plugin="s2")
    assert reg.pick("ai-cost", "R", "S", "C") is None
    reg.register("ai-cost", 770, cfg("global"), plugin="g")
    assert reg.pick("ai-cost", "R", "S", "C").plugin == "g"
    assert reg.pick("ai-cost", "R2", "S", None).plugin == "r2"
    # an unknown consumer (anonymous) only gets the unscoped configs
    assert reg.pick("ai-cost", "R", "S", None).plugin == "g"


def test_a_later_config_of_a_plugin_replaces_the_earlier_one_never_the_reverse():
    reg = Registry(Clock())
    reg.register("ai-redact", 780, cfg("p1", seq=5), plugin="v5")
    reg.register("ai-redact", 780, cfg("p1", seq=9), plugin="v9")
    reg.register("ai-redact", 780, cfg("p1", seq=7), plugin="v7-late-worker")
    assert reg.pick("ai-redact", None, None, None).plugin == "v9"


def test_a_deleted_plugin_stops_applying_once_no_event_of_it_is_seen():
    clock = Clock()
    reg = Registry(clock)
    gone = reg.register("ai-tokens", 771, cfg("route-one", route="R"), plugin="route")
    live = reg.register("ai-tokens", 771, cfg("global-one"), plugin="global")
    assert reg.pick("ai-tokens", "R", None, None).plugin == "route"
    clock.t += instances.STALE_AFTER - 1
    reg.touch(live)
    assert reg.pick("ai-tokens", "R", None, None).plugin == "route"
    clock.t += 2  # the route's plugin was deleted in Kong: no event for STALE_AFTER seconds
    reg.touch(live)
    assert reg.pick("ai-tokens", "R", None, None).plugin == "global"
    # an event of it again (it was only idle): it is back
    reg.touch(gone)
    assert reg.pick("ai-tokens", "R", None, None).plugin == "route"


def test_pipeline_is_in_stage_order_and_scoped_reports_what_ids_are_needed():
    reg = Registry(Clock())
    reg.register("ai-cost", 770, cfg("a"), plugin="cost")
    reg.register("ai-redact", 780, cfg("b"), plugin="redact")
    reg.register("ai-cache", 772, cfg("c"), plugin="cache")
    assert reg.scoped() == set()
    got = reg.pipeline(["ai-cost", "ai-cache", "ai-redact", "ai-missing"], None, None, None)
    assert [i.plugin for i in got] == ["redact", "cache", "cost"]
    reg.register("ai-tokens", 771, cfg("d", service="S"), plugin="tokens")
    assert reg.scoped() == {"service"}
    reg.register("ai-tokens", 771, cfg("e", route="R"), plugin="tokens-r")
    assert reg.scoped() == {"route", "service"}
