import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aigw import schema
from aigw.validate import main as validate_main
from aigw.validate import validate_doc

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ["ai-router", "ai-tokens", "ai-redact", "ai-cost", "ai-cache"]
REF = yaml.safe_load((ROOT / "kong" / "kong.yml").read_text())


def _walk_json(node, path=""):
    if node.get("type") == "object" and "properties" in node:
        for k, v in node["properties"].items():
            yield from _walk_json(v, f"{path}.{k}" if path else k)
    elif node.get("type") == "array":
        yield path, node
        yield from _walk_json(node.get("items", {}), path + "[]")
    else:
        yield path, node


def _walk_kong(fields, path=""):
    for f in fields:
        (name, spec), = f.items()
        p = f"{path}.{name}" if path else name
        yield from _walk_kong_field(spec, p)


def _walk_kong_field(spec, p):
    if spec["type"] == "record":
        yield from _walk_kong(spec["fields"], p)
    elif spec["type"] == "array":
        yield p, spec
        yield from _walk_kong_field(spec["elements"], p + "[]")
    else:
        yield p, spec


@pytest.mark.parametrize("name", PLUGINS)
def test_kong_schema_is_generated_from_json_schema(name):
    js = dict(_walk_json(schema.load(name)))
    kg = dict(_walk_kong(schema.kong_fields(name)))
    assert set(js) == set(kg)
    for path, node in js.items():
        k = kg[path]
        if "default" in node:
            assert k["default"] == node["default"], path
        if "enum" in node:
            assert k["one_of"] == node["enum"], path
        assert k.get("referenceable", False) == node.get("x-referenceable", False), path


def test_dump_all_plugins_lists_every_plugin_with_its_schema():
    exe = Path(sys.executable).parent / "kong-python-pluginserver"
    out = subprocess.run([str(exe), "-d", str(ROOT / "plugins"), "--dump-all-plugins"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    dump = {p["Name"]: p for p in json.loads(out)}
    assert set(dump) == set(PLUGINS)
    for name, info in dump.items():
        assert info["Schema"]["fields"][0]["config"]["fields"] == schema.kong_fields(name)
        assert "access" in info["Phases"] and "response" not in info["Phases"]


def test_plugin_info_prints_exactly_one_plugin_as_json():
    exe = Path(sys.executable).parent / "aigw-plugin-info"
    out = subprocess.run([str(exe), "-d", str(ROOT / "plugins"), "ai-cost"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    info = json.loads(out)
    assert isinstance(info, list) and len(info) == 1 and info[0]["Name"] == "ai-cost"
    assert info[0]["Priority"] == 770


def test_validate_fills_defaults_and_names_the_field():
    cfg = schema.validate("ai-tokens", {"limits": [{"scope": "consumer", "tokens": 5, "window": "minute"}]})
    assert cfg["policy"] == "local" and cfg["fail_open"] is False
    with pytest.raises(schema.ConfigInvalid) as e:
        schema.validate("ai-tokens", {"limits": [{"scope": "consumer", "tokens": 5, "window": "week"}]})
    assert "limits[0].window" in str(e.value)


def test_validation_error_never_echoes_the_value():
    with pytest.raises(schema.ConfigInvalid) as e:
        schema.validate("ai-router", {"providers": [{"name": "p", "type": "openai", "base_url": "u",
                                                     "api_key": 12345678}], "models": [{"name": "m", "targets": [{"provider": "p", "model": "x"}]}]})
    assert "12345678" not in str(e.value) and "providers[0].api_key" in str(e.value)


def test_reference_kong_yml_is_valid():
    assert validate_doc(REF) == []


def test_semantic_errors_name_entity_and_field():
    doc = copy.deepcopy(REF)
    svc = doc["services"][0]
    router = next(p for p in svc["plugins"] if p["name"] == "ai-router")
    router["config"]["models"][0]["targets"][0]["provider"] = "nope"
    errs = validate_doc(doc)
    assert len(errs) == 1
    assert "service 'ai'" in errs[0] and "ai-router" in errs[0] and "models[0].targets[0].provider" in errs[0]


def test_cli_exit_status(tmp_path):
    bad = copy.deepcopy(REF)
    next(p for p in bad["services"][0]["plugins"] if p["name"] == "ai-router")["config"]["prices"] = {
        "x": {"input": 0.0000025, "output": 0.00001}}  # per-token prices: unit error
    f = tmp_path / "bad.yml"
    f.write_text(yaml.safe_dump(bad))
    assert validate_main([str(f)]) == 1
    good = tmp_path / "good.yml"
    good.write_text(yaml.safe_dump(REF))
    assert validate_main([str(good)]) == 0


def test_group_configs_require_the_acl_plugin():
    doc = copy.deepcopy(REF)
    svc = doc["services"][0]
    svc["plugins"] = [p for p in svc["plugins"] if p["name"] != "acl"]
    errs = validate_doc(doc)
    # llama-onprem's allow-list uses groups: without acl the groups could be forged
    assert any("ai-router" in e and "acl" in e for e in errs)
