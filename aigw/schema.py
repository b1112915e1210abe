"""One source of truth for plugin configuration: the JSON Schemas in ``schemas/``.

* ``kong_fields(name)`` converts ``schemas/<name>.json`` into the Kong schema
  field list a kong-pdk plugin module exports as ``Schema`` (and that
  ``--dump-all-plugins`` / ``aigw-plugin-info`` print for Kong).
* ``validate(name, config)`` checks a config with jsonschema, fills the
  JSON Schema defaults, and raises ``ConfigInvalid`` naming the field path.

Conversion rules (Kong schema vocabulary: kong/db/schema/init.lua):
object+properties -> record, object+additionalProperties -> map(string -> ...),
array -> array(elements), enum -> one_of, minimum+maximum -> between,
minLength -> len_min, ``x-referenceable`` -> referenceable (Kong resolves
``{vault://...}`` references in those fields before the plugin sees them).
"""
from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.protocols import Validator

_HERE = Path(__file__).resolve().parent


class ConfigInvalid(ValueError):
    """A plugin config failed validation; ``str()`` names the field path."""

    def __init__(self, plugin: str, path: str, message: str):
        super().__init__(f"{plugin}: config.{path}: {message}" if path else f"{plugin}: config: {message}")
        self.plugin = plugin
        self.path = path
        self.detail = message

    @property
    def field(self) -> str:
        """The field path, e.g. ``models[2].targets[0].provider`` (same as ``path``)."""
        return self.path


def schemas_dir() -> Path:
    env = os.environ.get("AIGW_SCHEMAS_DIR")
    if env:
        return Path(env)
    # installed wheel: package data aigw/schemas/ (pyproject.toml maps the top-level schemas/ there);
    # checkout or editable install: the repository's schemas/ beside aigw/
    for cand in (_HERE / "schemas", _HERE.parent / "schemas"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError("schemas/ directory not found; set AIGW_SCHEMAS_DIR")


_REGISTERED: dict[str, dict[str, Any]] = {}


def register(name: str, doc: dict[str, Any]) -> None:
    """The schema of a plugin that ships it beside its code instead of in ``schemas/``."""
    _REGISTERED[name] = doc
    load.cache_clear()
    _validator.cache_clear()


@functools.cache
def load(name: str) -> dict[str, Any]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    schema: dict[str, Any] = orjson.loads((schemas_dir() / f"{name}.json").read_bytes())
    return schema


def _convert(node: dict[str, Any], required: bool = False) -> dict[str, Any]:
    t = node.get("type")
    out: dict[str, Any]
    if t == "object" and "properties" in node:
        req = set(node.get("required", ()))
        out = {"type": "record",
               "fields": [{k: _convert(v, k in req)} for k, v in node["properties"].items()]}
    elif t == "object":
        vals = node.get("additionalProperties")
        out = {"type": "map", "keys": {"type": "string"},
               "values": _convert(vals) if isinstance(vals, dict) else {"type": "string"}}
    elif t == "array":
        out = {"type": "array", "elements": _convert(node.get("items", {"type": "string"}))}
        _lengths(node, out, "minItems", "maxItems")
    elif t in ("string", "integer", "number", "boolean"):
        out = {"type": t}
        if "enum" in node:
            out["one_of"] = list(node["enum"])
        if "minimum" in node or "maximum" in node:
            # Kong has no lone minimum/maximum: ``between`` with the other end at 2^53, the
            # largest integer a Lua number holds exactly (its message formats both ends with %d)
            out["between"] = [node.get("minimum", -KONG_NUMBER_LIMIT), node.get("maximum", KONG_NUMBER_LIMIT)]
        if "exclusiveMinimum" in node:
            out["gt"] = node["exclusiveMinimum"]
        if t == "string":
            _lengths(node, out, "minLength", "maxLength")
    else:
        raise ValueError(f"unsupported JSON Schema node for Kong conversion: {node!r:.80}")
    if "default" in node:
        out["default"] = node["default"]
    if node.get("x-referenceable"):
        out["referenceable"] = True
    if node.get("x-encrypted"):
        out["encrypted"] = True
    if required:
        out["required"] = True
    return out


KONG_NUMBER_LIMIT = 2 ** 53

# JSON Schema keyword -> the Kong validator that enforces it at config time
# (kong/db/schema/init.lua 3.9.1 Schema.validators 213-300; make_length_validator 162-174 counts
# the elements of arrays). Keywords not listed here cannot be exported: the plugins check them
# only when Kong starts an instance (StartInstance fails, every request on that config gets 500).
EXPORTED = {"minimum": "between", "maximum": "between", "exclusiveMinimum": "gt", "minLength": "len_min",
            "maxLength": "len_max", "minItems": "len_min", "maxItems": "len_max", "enum": "one_of",
            "required": "required", "type": "type", "additionalProperties": "record/map",
            "properties": "record", "items": "elements", "default": "default"}
# checked at StartInstance only (jsonschema, aigw/schema.py validate) and by aigw-validate:
# ai-router uses ``pattern`` (provider names, base_url, sticky); cross-field rules (unknown
# provider of a target, duplicate names, ...) are checked
# by the core's config parsers (aigw/routing.py ConfigError, ...) at StartInstance too
START_TIME_ONLY = {"pattern": "Lua patterns are not regular expressions",
                   "uniqueItems": "no Kong validator for arrays (a Kong 'set' silently de-duplicates)",
                   "exclusiveMaximum": "Kong has gt but no lt"}


def _lengths(node: dict[str, Any], out: dict[str, Any], lo: str, hi: str) -> None:
    if lo in node:
        out["len_min"] = node[lo]
    if hi in node:
        out["len_max"] = node[hi]


def kong_fields(name: str) -> list[dict[str, Any]]:
    """The ``Schema`` list for a kong-pdk plugin module (the config record's fields)."""
    fields: list[dict[str, Any]] = _convert(load(name))["fields"]
    return fields


# keys Kong adds to every plugin config before handing it to the plugin
# (kong/runloop/plugins_iterator.lua 3.9.1 get_plugin_config, 157-190: route_id, service_id,
# consumer_id, plugin_instance_name when set; __plugin_id, __ws_id, __key__, __seq__ always)
KONG_ADDED_KEYS = frozenset({"route_id", "service_id", "consumer_id", "plugin_instance_name"})
# the original ``{vault://...}`` text of the resolved fields of a record, kept by Kong in that
# record at any depth (kong/db/schema/init.lua 3.9.1, 1880 and 2023 ``data["$refs"] = refs``)
REFS_KEY = "$refs"


def _with_defaults(cls: type[Validator]) -> type[Validator]:
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator: Validator, properties: dict[str, Any], instance: Any,
                     schema: dict[str, Any]) -> Iterator[ValidationError]:
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    extended: type[Validator] = validators.extend(cls, {"properties": set_defaults})
    return extended


_DefaultingValidator = _with_defaults(Draft202012Validator)


@functools.cache
def _validator(name: str) -> Validator:
    return _DefaultingValidator(load(name))


def _path(err: ValidationError) -> str:
    parts: list[str] = []
    for p in err.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else ("." + str(p) if parts else str(p)))
    rule = err.schema  # the (sub)schema that failed: an object for additionalProperties
    if (err.validator == "additionalProperties" and isinstance(err.instance, dict)
            and isinstance(rule, Mapping)):
        # name the unknown field itself, not the object holding it
        known = set(rule.get("properties") or ())
        extra = sorted(k for k in err.instance if k not in known)
        if extra and rule.get("additionalProperties") is False:
            parts.append("." + extra[0] if parts else extra[0])
    return "".join(parts)


def defaults(name: str, *path: str) -> dict[str, Any]:
    """The defaults of the object at ``path`` in ``schemas/<name>.json``, as a new dict.

    For an optional object the config leaves out: Kong hands it over as null
    (kong/db/schema/init.lua 3.9.1 handle_missing_field, 1037-1073: a non-required field
    without a default becomes null, its nested defaults are not expanded), so
    the code fills it from here.  ``"[]"`` in ``path`` steps into array items:
    ``defaults("ai-router", "providers", "[]", "timeouts")``.
    """
    node = load(name)
    for step in path:
        node = node["items"] if step == "[]" else node["properties"][step]
    out: dict[str, Any] = {}
    _validator_for(node).validate(out)
    return out


def default(name: str, *path: str) -> Any:
    """The ``default`` of one field, e.g. ``default("ai-router", "failover", "on_status")``."""
    node = load(name)
    for step in path:
        node = node["items"] if step == "[]" else node["properties"][step]
    return copy.deepcopy(node["default"])


def _validator_for(node: dict[str, Any]) -> Validator:
    return _DefaultingValidator(node)


def validate(name: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """Validate and default a config (a copy; Kong's own keys ``__*`` are kept)."""
    cfg = copy.deepcopy(config or {})
    internal = {k: cfg.pop(k) for k in list(cfg) if k.startswith("__") or k in KONG_ADDED_KEYS}
    # Kong sends null for unset optional fields: drop them so defaults apply
    _drop_nulls(cfg)
    _drop_refs(cfg)
    errors = sorted(_validator(name).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise ConfigInvalid(name, _path(e), _safe_message(e))
    cfg.update(internal)
    return cfg


def _safe_message(err: ValidationError) -> str:
    # never echo a (possibly secret) value back: describe the rule that failed
    v = err.validator
    if v == "required":
        return err.message.replace("'", '"')
    if v == "additionalProperties":
        return err.message
    if v == "enum":
        return f"must be one of {err.validator_value}"
    if v == "type":
        return f"must be of type {err.validator_value}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
             "maxLength", "minItems", "maxItems", "pattern", "uniqueItems"):
        return f"violates {v}={err.validator_value}"
    return f"invalid ({v})"


def _drop_nulls(node: Any) -> None:
    if isinstance(node, dict):
        for k in [k for k, v in node.items() if v is None]:
            del node[k]
        for v in node.values():
            _drop_nulls(v)
    elif isinstance(node, list):
        for v in node:
            _drop_nulls(v)


def _drop_refs(node: Any) -> None:
    """Remove Kong's ``$refs`` bookkeeping (resolved values are already in place)."""
    if isinstance(node, dict):
        node.pop(REFS_KEY, None)
        for v in node.values():
            _drop_refs(v)
    elif isinstance(node, list):
        for v in node:
            _drop_refs(v)
