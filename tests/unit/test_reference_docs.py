"""The plugin reference pages (docs/plugins/*.md) stay in step with schemas/*.json."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from aigw.validate import validate_doc

ROOT = Path(__file__).resolve().parents[2]


def _load_checker():
    path = ROOT / "docs" / "plugins" / "check_reference.py"
    spec = importlib.util.spec_from_file_location("aigw_check_reference", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


cr = _load_checker()
PLUGINS = cr.PLUGINS


@pytest.mark.parametrize("plugin", PLUGINS)
def test_every_schema_field_is_documented(plugin):
    assert cr.missing_fields(plugin) == [], (
        f"add these fields to docs/plugins/{plugin}.md: run "
        "`python docs/plugins/check_reference.py --write` and describe them")


@pytest.mark.parametrize("plugin", PLUGINS)
def test_no_documented_field_is_gone_from_the_schema(plugin):
    assert cr.stale_fields(plugin) == []


@pytest.mark.parametrize("plugin", PLUGINS)
def test_every_field_has_a_description(plugin):
    assert cr.undescribed_fields(plugin) == []


@pytest.mark.parametrize("plugin", PLUGINS)
def test_generated_columns_match_the_schema(plugin):
    assert cr.table_is_current(plugin), (
        f"types/defaults in docs/plugins/{plugin}.md differ from schemas/{plugin}.json: "
        "run `python docs/plugins/check_reference.py --write`")


@pytest.mark.parametrize("plugin", PLUGINS)
def test_yaml_examples_are_valid_configs(plugin):
    """Full kong.yml examples and every complete entity of this plugin pass aigw-validate."""
    docs = cr.yaml_examples(plugin)
    full = [d for d in docs if isinstance(d, dict) and "_format_version" in d]
    assert full, f"{plugin}.md needs an 'Enable on a route' kong.yml example"
    for doc in full:
        assert validate_doc(doc) == []
    entities = cr.example_configs(plugin)
    assert len(entities) >= 2, f"{plugin}.md needs config examples"
    for entity in entities:
        # group-scoped examples run with Kong's acl plugin (groups come from it)
        acl = {"name": "acl", "config": {"deny": ["blocked"]}}
        assert validate_doc({"_format_version": "3.0", "plugins": [entity, acl]}) == [], entity


def test_schema_walk_covers_nested_records_arrays_and_maps():
    fields = {f.path: f for f in cr.schema_fields(cr.load_schema("ai-router"))}
    assert "models[].targets[].weight" in fields
    assert fields["models[].targets[].weight"].default == "`1`"
    assert fields["providers[].timeouts.connect"].allowed == "1 to 600000"
    assert fields["providers"].required and not fields["default_model"].required
    cost = {f.path for f in cr.schema_fields(cr.load_schema("ai-cost"))}
    assert {"prices", "prices.<model>.input", "budgets[].usd"} <= cost


def _copy_tree(tmp_path: Path, plugin: str) -> Path:
    for sub in ("schemas", "docs/plugins"):
        (tmp_path / sub).mkdir(parents=True)
    shutil.copy(ROOT / "schemas" / f"{plugin}.json", tmp_path / "schemas")
    shutil.copy(ROOT / "docs" / "plugins" / f"{plugin}.md", tmp_path / "docs" / "plugins")
    return tmp_path


def test_a_field_added_to_the_schema_is_reported_missing(tmp_path):
    root = _copy_tree(tmp_path, "ai-cache")
    path = root / "schemas" / "ai-cache.json"
    schema = json.loads(path.read_text())
    schema["properties"]["semantic"]["properties"]["model"] = {"type": "string"}
    schema["properties"]["vary"] = {"type": "array", "items": {"type": "string"}}
    path.write_text(json.dumps(schema))
    assert sorted(cr.missing_fields("ai-cache", root)) == ["semantic.model", "vary"]
    assert not cr.table_is_current("ai-cache", root)


def test_write_adds_rows_keeps_descriptions_and_flags_todo(tmp_path):
    root = _copy_tree(tmp_path, "ai-tokens")
    path = root / "schemas" / "ai-tokens.json"
    schema = json.loads(path.read_text())
    schema["properties"]["limits"]["items"]["properties"]["burst"] = {"type": "integer", "default": 0}
    path.write_text(json.dumps(schema))
    before = cr.documented_fields("ai-tokens", root)
    assert cr.write_table("ai-tokens", root)
    after = cr.documented_fields("ai-tokens", root)
    assert cr.missing_fields("ai-tokens", root) == []
    assert cr.undescribed_fields("ai-tokens", root) == ["limits[].burst"]
    assert {k: v for k, v in after.items() if k in before} == before
    assert cr.table_is_current("ai-tokens", root)


def test_a_removed_schema_field_is_reported_stale(tmp_path):
    root = _copy_tree(tmp_path, "ai-cost")
    path = root / "schemas" / "ai-cost.json"
    schema = json.loads(path.read_text())
    del schema["properties"]["headers"]
    path.write_text(json.dumps(schema))
    assert cr.stale_fields("ai-cost", root) == ["headers"]
