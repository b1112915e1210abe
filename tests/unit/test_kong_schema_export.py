"""Issue 11 item 7: every constraint of schemas/*.json is either exported to the Kong schema
(so Kong refuses a bad config at config time, as the Admin API / decK / POST /config would) or
listed as start-time only. Compared statically and by mutating the reference configs."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aigw import schema
from aigw_dev.standin import schema as kong_schema

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ["ai-cache", "ai-cost", "ai-redact", "ai-router", "ai-tokens"]
DOC_ONLY = {"description", "title", "$schema", "x-referenceable", "x-encrypted"}


def _spec_fields(spec: dict[str, Any]) -> dict[str, Any]:
    return dict(kong_schema.field_items(spec.get("fields", ())))


def _pairs(js: dict[str, Any], kong: dict[str, Any], path: str) -> Iterator[tuple[str, dict, dict]]:
    yield path, js, kong
    if js.get("type") == "object" and "properties" in js:
        kf = _spec_fields(kong)
        for name, sub in js["properties"].items():
            yield from _pairs(sub, kf[name], f"{path}.{name}")
    elif js.get("type") == "object" and isinstance(js.get("additionalProperties"), dict):
        yield from _pairs(js["additionalProperties"], kong["values"], f"{path}.*")
    elif js.get("type") == "array":
        yield from _pairs(js.get("items", {}), kong["elements"], f"{path}[]")


def _all_pairs(name: str):
    root = schema.load(name)
    return list(_pairs(root, {"type": "record", "fields": schema.kong_fields(name)}, "config"))


@pytest.mark.parametrize("name", PLUGINS)
def test_every_constraint_is_exported_or_start_time_only(name):
    for path, js, kong in _all_pairs(name):
        for kw, value in js.items():
            if kw in DOC_ONLY:
                continue
            if kw in schema.START_TIME_ONLY:
                continue  # listed (docs/standin.md "Schema constraints")
            assert kw in schema.EXPORTED, f"{name} {path}: {kw} neither exported nor start-time only"
            if kw == "minimum":
                assert kong["between"][0] == value, (path, kong)
            elif kw == "maximum":
                assert kong["between"][1] == value, (path, kong)
            elif kw == "exclusiveMinimum":
                assert kong["gt"] == value, (path, kong)
            elif kw in ("minLength", "minItems"):
                assert kong["len_min"] == value, (path, kong)
            elif kw in ("maxLength", "maxItems"):
                assert kong["len_max"] == value, (path, kong)
            elif kw == "enum":
                assert kong["one_of"] == value, (path, kong)
            elif kw == "required" and isinstance(value, list):
                kf = _spec_fields(kong)
                assert all(kf[r].get("required") is True for r in value), (path, value)
            elif kw == "additionalProperties" and value is False:
                assert kong["type"] == "record", path  # Kong records refuse unknown fields


def _reference(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "kong" / "kong.yml").read_text())
    for svc in doc["services"]:
        for p in svc.get("plugins") or []:
            if p["name"] == name:
                return p.get("config") or {}
    return {}


def _locate(conf: Any, path: str):
    """Parent container and key of ``path`` in ``conf`` (first element of arrays, any map key)."""
    parts = path.removeprefix("config").replace("[]", ".[]").strip(".").split(".")
    node, parent, key = conf, None, None
    for part in parts:
        if part == "[]":
            if not isinstance(node, list) or not node:
                return None
            parent, key, node = node, 0, node[0]
        elif part == "*":
            if not isinstance(node, dict) or not node:
                return None
            k = next(iter(node))
            parent, key, node = node, k, node[k]
        else:
            if not isinstance(node, dict) or part not in node:
                return None
            parent, key, node = node, part, node[part]
    return parent, key


def _violations(js: dict[str, Any]):
    if "minimum" in js:
        yield "minimum", js["minimum"] - 1
    if "maximum" in js:
        yield "maximum", js["maximum"] + 1
    if "minItems" in js:
        yield "minItems", []
    if "minLength" in js and js["minLength"] > 0:
        yield "minLength", ""
    if "enum" in js:
        yield "enum", "not-a-choice-xyz" if js.get("type") == "string" else -123456


@pytest.mark.parametrize("name", PLUGINS)
def test_kong_and_the_plugin_refuse_the_same_bad_values(name):
    base = _reference(name)
    fields = schema.kong_fields(name)
    kong_schema.process(fields, copy.deepcopy(base))  # the reference config passes both
    schema.validate(name, base)
    checked = 0
    for path, js, _ in _all_pairs(name):
        for _kw, bad in _violations(js):
            conf = copy.deepcopy(base)
            where = _locate(conf, path)
            if where is None:
                continue
            parent, key = where
            parent[key] = bad
            with pytest.raises(schema.ConfigInvalid):
                schema.validate(name, conf)
            with pytest.raises(kong_schema.SchemaError):
                kong_schema.process(fields, conf)
            checked += 1
    assert checked > 0
