"""Kong-format schema validation and default filling for plugin configs.

Follows kong/db/schema/init.lua: field types string, integer, number, boolean, array, set, map,
record (plus json/foreign/any accepted as-is); ``handle_missing_field`` rules (a default is
copied; a non-required field without default becomes null; a required record is expanded to
get its nested defaults); messages from ``validation_errors`` ("required field missing",
"unknown field", "expected a string", "value should be between %d and %d", ...).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

Fields = Iterable[dict[str, dict[str, Any]]]


class SchemaError(Exception):
    """A config that does not validate; ``errors`` is a list of (field path, message)."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{p}: {m}" for p, m in errors))


def field_items(fields: Fields) -> list[tuple[str, dict[str, Any]]]:
    """Kong lists fields as one-key tables: ``[{name: spec}, ...]``."""
    out: list[tuple[str, dict[str, Any]]] = []
    for entry in fields or ():
        for name, spec in entry.items():
            out.append((name, spec))
    return out


def process(fields: Fields, value: Any, path: str = "config") -> dict[str, Any]:
    """Validate ``value`` against a record's fields and return it with defaults filled."""
    errors: list[tuple[str, str]] = []
    out = _record(fields, {} if value is None else value, path, errors)
    if errors:
        raise SchemaError(errors)
    return out


def _missing(spec: dict[str, Any], path: str, errors: list[tuple[str, str]]) -> Any:
    if "default" in spec and spec["default"] is not None:
        return copy.deepcopy(spec["default"])
    if spec.get("required") is not True:
        return None
    if spec.get("type") == "record":
        return _record(spec.get("fields", ()), {}, path, errors)
    errors.append((path, "required field missing"))
    return None


def _record(fields: Fields, value: Any, path: str, errors: list[tuple[str, str]]) -> Any:
    if not isinstance(value, dict):
        errors.append((path, "expected a record"))
        return value
    items = field_items(fields)
    known = {name for name, _ in items}
    out: dict[str, Any] = {}
    for name, spec in items:
        fpath = f"{path}.{name}"
        if value.get(name) is None:
            out[name] = _missing(spec, fpath, errors)
        else:
            out[name] = _value(spec, value[name], fpath, errors)
    for name in value:
        if name not in known:
            errors.append((f"{path}.{name}", "unknown field"))
    return out


def _is_int(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


def _value(spec: dict[str, Any], v: Any, path: str, errors: list[tuple[str, str]]) -> Any:
    kind = spec.get("type")
    n_err = len(errors)
    if kind == "string":
        if not isinstance(v, str):
            errors.append((path, "expected a string"))
            return v
        # "empty strings are not accepted by default" (kong/db/schema/init.lua 3.9.1, 990-993)
        len_min = spec.get("len_min", 1)
        if len(v) < len_min:
            errors.append((path, f"length must be at least {len_min}"))
        if "len_max" in spec and len(v) > spec["len_max"]:
            errors.append((path, f"length must be at most {spec['len_max']}"))
        if "starts_with" in spec and not v.startswith(spec["starts_with"]):
            errors.append((path, f"should start with: {spec['starts_with']}"))
    elif kind == "integer":
        if not _is_int(v):
            errors.append((path, "expected an integer"))
            return v
        v = int(v)
    elif kind == "number":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            errors.append((path, "expected a number"))
            return v
    elif kind == "boolean":
        if not isinstance(v, bool):
            errors.append((path, "expected a boolean"))
            return v
    elif kind in ("array", "set"):
        if not isinstance(v, list):
            errors.append((path, "expected an array" if kind == "array" else "expected a set"))
            return v
        elements = spec.get("elements") or {}
        v = [_value(elements, e, f"{path}[{i}]", errors) if elements else e for i, e in enumerate(v)]
        if kind == "set":
            deduped: list[Any] = []
            for e in v:
                if e not in deduped:
                    deduped.append(e)
            v = deduped
        if "len_min" in spec and len(v) < spec["len_min"]:
            errors.append((path, f"length must be at least {spec['len_min']}"))
        if "len_max" in spec and len(v) > spec["len_max"]:
            errors.append((path, f"length must be at most {spec['len_max']}"))
    elif kind == "map":
        if not isinstance(v, dict):
            errors.append((path, "expected a map"))
            return v
        keys, values = spec.get("keys") or {}, spec.get("values") or {}
        v = {(_value(keys, k, f"{path}.{k}", errors) if keys else k):
             (_value(values, x, f"{path}.{k}", errors) if values else x) for k, x in v.items()}
    elif kind == "record":
        return _record(spec.get("fields", ()), v, path, errors)
    if len(errors) > n_err:
        return v
    if "one_of" in spec and v not in spec["one_of"]:
        errors.append((path, "expected one of: " + ", ".join(str(x) for x in spec["one_of"])))
    if "between" in spec and isinstance(v, (int, float)):
        lo, hi = spec["between"]
        if not lo <= v <= hi:
            errors.append((path, f"value should be between {lo} and {hi}"))
    if "gt" in spec and isinstance(v, (int, float)) and not v > spec["gt"]:
        errors.append((path, f"value must be greater than {spec['gt']}"))
    return v


def referenceable_paths(fields: Fields, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], bool]]:
    """Paths of fields marked ``referenceable`` (bool: the field is an array of strings)."""
    out: list[tuple[tuple[str, ...], bool]] = []
    for name, spec in field_items(fields):
        here = prefix + (name,)
        kind = spec.get("type")
        if kind == "record":
            out.extend(referenceable_paths(spec.get("fields", ()), here))
        elif spec.get("referenceable"):
            out.append((here, False))
        elif kind in ("array", "set") and (spec.get("elements") or {}).get("referenceable"):
            out.append((here, True))
    return out
