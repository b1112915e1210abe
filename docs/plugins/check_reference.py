"""Keep the plugin reference pages in step with the JSON Schemas.

Each page ``docs/plugins/<plugin>.md`` holds a field table between the markers
``<!-- fields:begin -->`` and ``<!-- fields:end -->``.  The Type, Required,
Default and Allowed values columns are generated from ``schemas/<plugin>.json``;
the Description column is written by hand in the page and kept on rewrite.

    python docs/plugins/check_reference.py            # check all five pages
    python docs/plugins/check_reference.py --write    # regenerate the tables

Field paths: nested records are dotted (``failover.max_attempts``), elements
of an array of records get ``[]`` (``providers[].timeouts.connect``), and the
values of a map of records get ``.<key>`` (``prices.<model>.input``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ("ai-router", "ai-tokens", "ai-redact", "ai-cost", "ai-cache")
BEGIN = "<!-- fields:begin -->"
END = "<!-- fields:end -->"
TODO = "TODO: describe this field."
HEADER = ("| Field | Type | Required | Default | Allowed values | Description |\n"
          "|---|---|---|---|---|---|")
# placeholder for the key of a map whose values are records; default "<key>"
MAP_KEY_NAMES = {"prices": "<model>"}

_ROW_PATH = re.compile(r"^\|\s*`([^`]+)`\s*\|")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


@dataclass(frozen=True)
class Field:
    path: str
    type: str
    required: bool
    default: str
    allowed: str


# ------------------------------------------------------------------ schema side

def load_schema(plugin: str, root: Path = ROOT) -> dict[str, Any]:
    return json.loads((root / "schemas" / f"{plugin}.json").read_text())


def schema_fields(schema: dict[str, Any]) -> list[Field]:
    """Every configurable field of a plugin schema, parents before children."""
    out: list[Field] = []
    _walk_properties(schema, "", out)
    return out


def _walk_properties(node: dict[str, Any], prefix: str, out: list[Field]) -> None:
    required = set(node.get("required", ()))
    for name, sub in (node.get("properties") or {}).items():
        path = f"{prefix}{name}"
        out.append(_field(path, sub, name in required))
        _walk_children(sub, path, out)


def _walk_children(node: dict[str, Any], path: str, out: list[Field]) -> None:
    kind = node.get("type")
    if kind == "object" and "properties" in node:
        _walk_properties(node, path + ".", out)
    elif kind == "object" and isinstance(node.get("additionalProperties"), dict):
        values = node["additionalProperties"]
        if values.get("type") == "object" and "properties" in values:
            key = MAP_KEY_NAMES.get(path.rsplit(".", 1)[-1].removesuffix("[]"), "<key>")
            _walk_properties(values, f"{path}.{key}.", out)
    elif kind == "array" and isinstance(node.get("items"), dict):
        items = node["items"]
        if items.get("type") == "object" and "properties" in items:
            _walk_properties(items, path + "[].", out)


def _type_name(node: dict[str, Any]) -> str:
    kind = node.get("type", "any")
    if kind == "object" and "properties" in node:
        return "record"
    if kind == "object":
        values = node.get("additionalProperties")
        inner = _type_name(values) if isinstance(values, dict) else "string"
        return f"map of string → {inner}"
    if kind == "array":
        items = node.get("items")
        return f"array of {_type_name(items) if isinstance(items, dict) else 'string'}"
    return str(kind)


def _allowed(node: dict[str, Any]) -> str:
    """Enum values or range, looking into array items and map values too."""
    parts: list[str] = []
    if "enum" in node:
        parts.append(", ".join(f"`{_json(v)}`" for v in node["enum"]))
    lo, hi = node.get("minimum"), node.get("maximum")
    if lo is not None and hi is not None:
        parts.append(f"{_json(lo)} to {_json(hi)}")
    elif lo is not None:
        parts.append(f"≥ {_json(lo)}")
    elif hi is not None:
        parts.append(f"≤ {_json(hi)}")
    if "minLength" in node:
        parts.append("non-empty" if node["minLength"] == 1 else f"length ≥ {node['minLength']}")
    if "minItems" in node:
        parts.append(f"at least {node['minItems']} item(s)")
    if "pattern" in node:  # checked when the plugin starts and by aigw-validate (not by Kong)
        parts.append(f"matches `{node['pattern']}`")
    inner = None
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        inner = node["items"]
    elif node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        inner = node["additionalProperties"]
    if inner is not None and "properties" not in inner:
        sub = _allowed(inner)
        if sub:
            parts.append(f"each: {sub}")
    return "; ".join(parts)


def _field(path: str, node: dict[str, Any], required: bool) -> Field:
    kind = _type_name(node)
    flags = [f for f, key in (("referenceable", "x-referenceable"), ("encrypted", "x-encrypted"))
             if node.get(key)]
    if flags:
        kind += " (" + ", ".join(flags) + ")"
    default = f"`{_json(node['default'])}`" if "default" in node else ""
    return Field(path, kind, required, default, _allowed(node))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False).replace(", ", ",").replace(",", ", ")


# -------------------------------------------------------------------- page side

def page_path(plugin: str, root: Path = ROOT) -> Path:
    return root / "docs" / "plugins" / f"{plugin}.md"


def _table_block(text: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return ""
    return text[start + len(BEGIN):end]


def documented_fields(plugin: str, root: Path = ROOT) -> dict[str, str]:
    """Field path → description, as written in the page's field table."""
    page = page_path(plugin, root)
    if not page.exists():
        return {}
    out: dict[str, str] = {}
    for line in _table_block(page.read_text()).splitlines():
        m = _ROW_PATH.match(line.strip())
        if m is None:
            continue
        cells = [c.strip() for c in _CELL_SPLIT.split(line.strip().strip("|"))]
        out[m.group(1)] = cells[-1] if len(cells) > 1 else ""
    return out


def missing_fields(plugin: str, root: Path = ROOT) -> list[str]:
    """Schema field paths that have no row in the page's field table."""
    documented = documented_fields(plugin, root)
    return [f.path for f in schema_fields(load_schema(plugin, root)) if f.path not in documented]


def stale_fields(plugin: str, root: Path = ROOT) -> list[str]:
    """Rows in the page's field table for fields the schema no longer has."""
    known = {f.path for f in schema_fields(load_schema(plugin, root))}
    return [p for p in documented_fields(plugin, root) if p not in known]


def undescribed_fields(plugin: str, root: Path = ROOT) -> list[str]:
    """Rows whose description is empty or still the TODO placeholder."""
    return [p for p, d in documented_fields(plugin, root).items() if not d or d == TODO]


def render_table(plugin: str, descriptions: dict[str, str], root: Path = ROOT) -> str:
    rows = [HEADER]
    for f in schema_fields(load_schema(plugin, root)):
        desc = descriptions.get(f.path) or TODO
        cells = [f"`{f.path}`", f.type, "yes" if f.required else "no", f.default or "—",
                 f.allowed or "—", desc]
        rows.append("| " + " | ".join(c.replace("|", "\\|") if i < 5 else c
                                       for i, c in enumerate(cells)) + " |")
    return "\n".join(rows)


def table_is_current(plugin: str, root: Path = ROOT) -> bool:
    """True when the generated columns of the page's table match the schema."""
    page = page_path(plugin, root)
    if not page.exists():
        return False
    want = render_table(plugin, documented_fields(plugin, root), root)
    return _table_block(page.read_text()).strip() == want.strip()


def write_table(plugin: str, root: Path = ROOT) -> bool:
    """Regenerate the page's table in place, keeping descriptions; True if changed."""
    page = page_path(plugin, root)
    text = page.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{page}: markers {BEGIN} / {END} not found")
    table = render_table(plugin, documented_fields(plugin, root), root)
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    new = text[:start] + "\n" + table + "\n" + text[end:]
    if new != text:
        page.write_text(new)
    return new != text


_YAML_BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.M | re.S)


def yaml_examples(plugin: str, root: Path = ROOT) -> list[Any]:
    """The parsed ```yaml blocks of the page."""
    return [yaml.safe_load(m.group(1)) for m in _YAML_BLOCK.finditer(page_path(plugin, root).read_text())]


def example_configs(plugin: str, root: Path = ROOT) -> list[dict[str, Any]]:
    """Every complete ``{name: <plugin>, config: {...}}`` entity in the page's YAML examples."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("name") == plugin and isinstance(node.get("config"), dict):
                found.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for doc in yaml_examples(plugin, root):
        walk(doc)
    return found


def problems(plugin: str, root: Path = ROOT) -> list[str]:
    out = [f"{plugin}: field not documented: {p}" for p in missing_fields(plugin, root)]
    out += [f"{plugin}: documented field not in schema: {p}" for p in stale_fields(plugin, root)]
    out += [f"{plugin}: field without description: {p}" for p in undescribed_fields(plugin, root)]
    if not out and not table_is_current(plugin, root):
        out.append(f"{plugin}: field table is out of date with the schema (run with --write)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="regenerate the field tables in place")
    ap.add_argument("plugins", nargs="*", default=list(PLUGINS))
    args = ap.parse_args(argv)
    found: list[str] = []
    for plugin in args.plugins:
        if args.write and write_table(plugin):
            print(f"rewrote the field table of {page_path(plugin).relative_to(ROOT)}")
        found += problems(plugin)
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
