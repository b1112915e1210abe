"""`aigw-validate FILE...`: check a declarative kong.yml the way the gateway will.

For every ai-* plugin entity (global, service, route or consumer scope) the
config is checked against ``schemas/<plugin>.json`` (the same schema Kong
gets) and then built by the plugin's runtime, which checks what a schema
cannot (unknown provider references, duplicate aliases, price units, invalid
patterns).  Every ai-router target that an ai-cost with budgets and
``unpriced: reject`` would refuse (402 model_not_priced) is an error too.
Errors name the entity and the field.  Exit status 1 on any error.  The
output names the price catalogue and its date.
Run it in your own CI; when decK is installed, also run ``deck validate``.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from . import schema, vault
from .cost.catalogue import catalogue_info
from .gateway import cache, cost, redact, router, tokens
from .routing import RouterConfig

OUR_PLUGINS = ("ai-router", "ai-tokens", "ai-redact", "ai-cost", "ai-cache")
# plugin name -> the runtime its StartInstance builds from the checked config
_RUNTIMES: dict[str, Callable[[dict[str, Any]], object]] = {
    "ai-router": router.RouterRuntime, "ai-tokens": tokens.TokensRuntime,
    "ai-redact": redact.RedactRuntime, "ai-cost": cost.CostRuntime, "ai-cache": cache.CacheRuntime,
}


def iter_plugins(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, plugin entity) for every plugin in a 3.0 declarative config."""
    for where, p, _ in _iter_scoped(doc):
        yield where, p


def _iter_scoped(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], set[str]]]:
    """(where, plugin, names of the plugins that also apply to the same requests)."""
    glob = {p.get("name") for p in doc.get("plugins") or ()}
    for p in doc.get("plugins") or ():
        yield "global", p, glob
    for s in doc.get("services") or ():
        sname = s.get("name") or s.get("id") or "?"
        at_service = glob | {p.get("name") for p in s.get("plugins") or ()}
        routes = s.get("routes") or ()
        # a service-level plugin is covered by X only if X is global, on the service, or on every route
        on_all_routes = set.intersection(*[{p.get("name") for p in r.get("plugins") or ()} for r in routes]) \
            if routes else set()
        for p in s.get("plugins") or ():
            yield f"service '{sname}'", p, at_service | on_all_routes
        for r in routes:
            at_route = at_service | {p.get("name") for p in r.get("plugins") or ()}
            for p in r.get("plugins") or ():
                yield f"route '{r.get('name') or r.get('id') or '?'}' (service '{sname}')", p, at_route
    for r in doc.get("routes") or ():
        at_route = glob | {p.get("name") for p in r.get("plugins") or ()}
        for p in r.get("plugins") or ():
            yield f"route '{r.get('name') or r.get('id') or '?'}'", p, at_route
    for c in doc.get("consumers") or ():
        for p in c.get("plugins") or ():
            yield f"consumer '{c.get('username') or c.get('id') or '?'}'", p, glob


def _resolved(name: str, config: Any) -> Any:
    """A copy of ``config`` with its vault references resolved as Kong resolves them before
    a plugin sees its config (aigw/vault.py: referenceable fields only, Kong's env vault
    rules); an unset variable becomes a placeholder of the right shape so the rest of the
    config can still be checked."""
    cfg = copy.deepcopy(config or {})
    if not isinstance(cfg, dict):
        return cfg  # the schema reports it

    def resolver(ref: str, _path: str, field: str) -> str:
        try:
            return vault.resolve(ref, os.environ)
        except vault.VaultError:
            if field == "redis_url":
                return "redis://vault-reference.invalid:6379/0"
            if field.endswith("url"):
                return "http://vault-reference.invalid"
            return "vault-reference"

    vault.resolve_fields(cfg, schema.kong_fields(name), resolver)
    return cfg


def checked(name: str, config: Any) -> dict[str, Any]:
    """The config a plugin's StartInstance gets and validates: references resolved, then the
    schema (defaults filled).  ConfigInvalid names the field."""
    return schema.validate(name, _resolved(name, config))


def validate_doc(doc: Any) -> list[str]:
    if not isinstance(doc, dict):
        return ["the file is not a YAML mapping"]
    errors: list[str] = []
    if str(doc.get("_format_version", "")) not in ("3.0", "2.1"):
        errors.append("_format_version: must be \"3.0\"")
    for where, p, applied in _iter_scoped(doc):
        name = p.get("name")
        if name not in OUR_PLUGINS:
            continue
        try:
            rt = _RUNTIMES[name](checked(name, p.get("config")))
            if getattr(rt, "needs_groups", False) and "acl" not in applied:
                errors.append(f"plugin {where}: {name}: uses consumer groups, which come from Kong's acl "
                              "plugin (X-Consumer-Groups); enable acl on the same requests or clients "
                              "could forge their groups")
        except schema.ConfigInvalid as e:
            errors.append(f"plugin {where}: {e}")
        except Exception as e:  # semantic errors name their field in the message
            errors.append(f"plugin {where}: {name}: config.{getattr(e, 'field', '')}{': ' if getattr(e, 'field', '') else ''}{e}")
    return errors


def _by_service(doc: dict[str, Any], name: str) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(service name or None for global/service-less, plugin) for every ``name`` plugin."""
    for p in doc.get("plugins") or ():
        if p.get("name") == name:
            yield None, p
    for s in doc.get("services") or ():
        sname = s.get("name") or s.get("id") or "?"
        for p in list(s.get("plugins") or ()) + [q for r in s.get("routes") or () for q in r.get("plugins") or ()]:
            if p.get("name") == name:
                yield sname, p
    for r in doc.get("routes") or ():
        for p in r.get("plugins") or ():
            if p.get("name") == name:
                yield None, p


def unpriced_targets(doc: dict[str, Any], only_enforced: bool = True) -> list[str]:
    """``provider/model`` of every ai-router target that an ai-cost on the same service (or a
    global one) cannot price.  ``only_enforced``: only ai-cost instances that would refuse
    it (budgets with ``unpriced: reject``)."""
    out: list[str] = []
    costs = []
    for svc, p in _by_service(doc, "ai-cost"):
        try:
            cfg = checked("ai-cost", p.get("config"))
            rt = cost.CostRuntime(cfg)
        except Exception:
            continue  # reported by validate_doc
        if only_enforced and not (cfg.get("budgets") and cfg["unpriced"] == "reject"):
            continue
        costs.append((svc, rt))
    for svc, p in _by_service(doc, "ai-router"):
        try:
            routes = RouterConfig.from_dict(checked("ai-router", p.get("config")))
        except Exception:
            continue
        for csvc, _rt in costs:
            if svc is not None and csvc is not None and svc != csvc:
                continue
            for spec in routes.models.values():
                for t in spec.targets:
                    # the router's table is the one ai-cost charges by (ctx.prices)
                    if routes.prices.lookup(t) is None and t.key not in out:
                        out.append(t.key)
    return out


def catalogue_line() -> str:
    info = catalogue_info()
    return f"prices: {info['name']} {info['version']}, catalogue as of {info['as_of']}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="aigw-validate", description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args(argv)
    bad = 0
    for f in args.files:
        try:
            doc = yaml.safe_load(f.read_text())
        except (OSError, yaml.YAMLError) as e:
            print(f"{f}: cannot read: {type(e).__name__}: {e}", file=sys.stderr)
            bad += 1
            continue
        errs = validate_doc(doc)
        if not errs:
            errs = [f"ai-router target '{key}' has no price and ai-cost enforces budgets with "
                    "unpriced: reject (every request to it would get 402 model_not_priced); "
                    "add it to ai-router prices" for key in unpriced_targets(doc)]
        for err in errs:
            print(f"{f}: {err}", file=sys.stderr)
        bad += bool(errs)
        if not errs:
            print(f"{f}: ok ({catalogue_line()})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
