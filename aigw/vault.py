"""Kong vault references (``{vault://env/NAME}``): one parser, one resolver, one walker.

Used wherever the gateway's tooling must see a config as the plugins will:
``aigw-validate`` (placeholders for unset variables) and the Kong stand-in (a
load error for unset variables).  In production Kong resolves the references
itself before a plugin sees its config; the rules below are Kong 3.9.1's:

* a reference is a string that starts with ``{vault://`` and ends with ``}``
  (kong/pdk/vault.lua 79-91 ``is_reference``);
* its inside is a URL ``<vault>/<resource>[/<key>][?<config>][#<version>]``
  (kong/pdk/vault.lua 122-182 ``parse_reference``): the host names the vault,
  the last path segment is the key (unless the path ends with ``/``), the
  query is the vault's config (``prefix=...``), the fragment a version number;
* the env vault reads the variable ``upper(prefix .. resource)`` with ``-``
  turned into ``_``, plus ``_PREVIOUS`` for version 2
  (kong/vaults/env/init.lua 41-54 ``get``);
* with a key, the secret is a flat JSON object and the key's value, a string,
  is used (kong/pdk/vault.lua 288-304 ``extract_key_from_json_string``);
* only fields the schema marks ``referenceable`` are resolved, in records at
  any depth, array elements and map values, and the record keeps the
  original text under ``$refs`` (kong/db/schema/init.lua 1879-1980, 2023).

Only the env vault is supported here (the one our reference config uses).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from aigw.schema import REFS_KEY

__all__ = ["VaultError", "Reference", "is_reference", "parse_reference", "resolve",
           "resolve_fields", "REFS_KEY"]


class VaultError(LookupError):
    """A reference that cannot be parsed or resolved (the message names no secret value)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Reference:
    vault: str
    resource: str
    key: str | None = None
    config: Mapping[str, str] | None = None
    version: int | None = None


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("{vault://") and value.endswith("}")


def parse_reference(ref: str) -> Reference:
    if not is_reference(ref):
        raise VaultError("not a vault reference")
    url = urlsplit(ref[1:-1])
    if not url.hostname:
        raise VaultError("vault reference is missing the vault name")
    path = url.path[1:]
    if not path:
        raise VaultError("vault reference has an empty path")
    version = None
    if url.fragment:
        if not url.fragment.isdigit():
            raise VaultError("vault reference has an invalid version")
        version = int(url.fragment)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise VaultError("vault reference has an invalid path")
    key = None
    if len(parts) == 1 or path.endswith("/"):
        resource = unquote("/".join(parts))
    else:
        resource, key = unquote("/".join(parts[:-1])), unquote(parts[-1])
    config = {k: v[-1] for k, v in parse_qs(url.query).items()} if url.query else None
    return Reference(url.hostname, resource, key, config, version)


def env_name(ref: Reference) -> str:
    """The environment variable Kong's env vault reads for ``ref``."""
    resource = ((ref.config or {}).get("prefix") or "") + ref.resource
    name = resource.replace("-", "_").upper()
    return name + "_PREVIOUS" if ref.version == 2 else name


def resolve(ref: str, env: Mapping[str, str]) -> str:
    """The value of one reference; VaultError when it cannot be resolved."""
    parsed = parse_reference(ref)
    if parsed.vault != "env":
        raise VaultError(f"vault '{parsed.vault}' is not supported (only env)")
    name = env_name(parsed)
    if name not in env:
        raise VaultError(f"environment variable {name} is not set")
    value = env[name]
    if parsed.key is None:
        return value
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise VaultError(f"environment variable {name} is not a JSON object") from None
    if not isinstance(doc, dict) or parsed.key not in doc:
        raise VaultError(f"environment variable {name} has no JSON key {parsed.key!r}")
    secret = doc[parsed.key]
    if not isinstance(secret, str):
        raise VaultError(f"environment variable {name}: JSON key {parsed.key!r} is not a string")
    return secret


def field_items(fields: Any) -> list[tuple[str, dict[str, Any]]]:
    """Kong lists fields as one-key tables: ``[{name: spec}, ...]``."""
    return [(name, spec) for entry in fields or () for name, spec in entry.items()]


def resolve_fields(conf: dict[str, Any], fields: Any,
                   resolver: Callable[[str, str, str], str]) -> None:
    """Resolve, in place, every reference held by a ``referenceable`` field of ``conf``.

    ``fields`` is the Kong field list (``aigw.schema.kong_fields``);
    ``resolver(reference, field_path, field_name)`` returns the value to use.
    Records that held references get ``$refs`` as Kong sets it: field ->
    reference; arrays of referenceable strings ``[ref or None, ...]``; maps
    ``{key: ref}``.
    """

    def record(value: dict[str, Any], rfields: Any, path: str) -> None:
        refs: dict[str, Any] = {}
        for name, sub in field_items(rfields):
            v = value.get(name)
            if v is None:
                continue
            kind, fpath = sub.get("type"), f"{path}.{name}"
            if kind == "record" and isinstance(v, dict):
                record(v, sub.get("fields", ()), fpath)
            elif kind in ("array", "set") and isinstance(v, list):
                el = sub.get("elements") or {}
                if el.get("type") == "record":
                    for i, x in enumerate(v):
                        if isinstance(x, dict):
                            record(x, el.get("fields", ()), f"{fpath}[{i}]")
                elif el.get("type") == "string" and el.get("referenceable"):
                    found = {i: x for i, x in enumerate(v) if is_reference(x)}
                    for i, x in found.items():
                        v[i] = resolver(x, f"{fpath}[{i}]", name)
                    if found:
                        # a Lua table {[i+1] = ref}; cjson writes it as an array, nulls in the holes
                        refs[name] = [found.get(i) for i in range(max(found) + 1)]
            elif kind == "map" and isinstance(v, dict):
                vs = sub.get("values") or {}
                if vs.get("type") == "record":
                    for k, x in v.items():
                        if isinstance(x, dict):
                            record(x, vs.get("fields", ()), f"{fpath}.{k}")
                elif vs.get("type") == "string" and vs.get("referenceable"):
                    mfound = {k: x for k, x in v.items() if is_reference(x)}
                    for k, x in mfound.items():
                        v[k] = resolver(x, f"{fpath}.{k}", name)
                    if mfound:
                        refs[name] = mfound
            elif kind == "string" and sub.get("referenceable") and is_reference(v):
                refs[name] = v
                value[name] = resolver(v, fpath, name)
        if refs:
            value[REFS_KEY] = refs

    record(conf, fields, "config")
