"""Declarative kong.yml (``_format_version: "3.0"``) loading for the stand-in.

Entities follow kong/db/schema/entities/*.lua defaults (services: port 80/443, timeouts 60000 ms,
retries 5; routes: strip_path true, preserve_host false, regex_priority 0; upstream targets:
weight 100, port 8000), nested or top-level with references by name or id, as
kong/db/declarative/ flattens them. Plugin configs are validated and default-filled with the
plugin's Kong-format schema (schema.py), ``{vault://env/NAME}`` references are resolved in
``referenceable`` fields only (kong/pdk/vault.lua + kong/vaults/env/init.lua), and each config
gets the keys kong/runloop/plugins_iterator.lua ``get_plugin_config`` adds.
"""
from __future__ import annotations

import itertools
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from aigw import vault

from . import schema

# Kong's default workspace id is random per database; a fixed one keeps __key__ stable here.
WS_ID = "8c8b6f5c-4f2a-4a4b-9d5e-6b3b1c0d0e01"
_NS = uuid.UUID("0f5f4c3e-7a1b-4c2d-9e8f-a1b2c3d4e5f6")


class ConfigError(Exception):
    """The declarative config cannot be loaded."""


def make_id(kind: str, key: str) -> str:
    """Stable entity id for entities the file gives no id."""
    return str(uuid.uuid5(_NS, f"{kind}:{key}"))


@dataclass
class PluginInfo:
    """What Kong knows about a plugin type: process.lua's {name, PRIORITY, VERSION, schema, phases}."""
    name: str
    priority: int
    version: str | None
    fields: list[dict[str, Any]]
    phases: list[str]
    bundled: bool = False
    server: str | None = None  # pluginserver entry name, for external plugins


@dataclass
class Service:
    id: str
    name: str | None
    protocol: str
    host: str
    port: int
    path: str | None
    connect_timeout: int
    read_timeout: int
    write_timeout: int
    retries: int
    entity: dict[str, Any]


@dataclass
class Route:
    id: str
    name: str | None
    service: Service | None
    paths: list[str]
    methods: list[str]
    hosts: list[str]
    strip_path: bool
    preserve_host: bool
    regex_priority: int
    entity: dict[str, Any]


@dataclass
class Target:
    host: str
    port: int
    weight: int


@dataclass
class Upstream:
    id: str
    name: str
    targets: list[Target]
    entity: dict[str, Any]


@dataclass
class Consumer:
    id: str
    username: str | None
    custom_id: str | None
    groups: list[dict[str, Any]]
    entity: dict[str, Any]
    acls: list[str] = field(default_factory=list)  # ACL groups (consumer `acls: [{group}]`)


@dataclass
class Credential:
    kind: str  # "keyauth_credentials" | "jwt_secrets"
    entity: dict[str, Any]
    consumer: Consumer


@dataclass
class Plugin:
    id: str
    name: str
    info: PluginInfo
    config: dict[str, Any]  # validated, defaults filled, references resolved, Kong's extra keys
    route_id: str | None
    service_id: str | None
    consumer_id: str | None
    enabled: bool

    def scope(self) -> str:
        parts = [f"{k} {v}" for k, v in (("route", self.route_id), ("service", self.service_id),
                                          ("consumer", self.consumer_id)) if v]
        return ", ".join(parts) or "global"


@dataclass
class Config:
    services: list[Service] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    consumers: list[Consumer] = field(default_factory=list)
    credentials: list[Credential] = field(default_factory=list)
    plugins: list[Plugin] = field(default_factory=list)

    def consumer(self, ref: str | None) -> Consumer | None:
        """By id, then username (kong.client.load_consumer(id, search_by_username))."""
        if not ref:
            return None
        for c in self.consumers:
            if c.id == ref:
                return c
        for c in self.consumers:
            if c.username == ref:
                return c
        return None

    def credential(self, kind: str, key: str) -> Credential | None:
        for cred in self.credentials:
            if cred.kind == kind and cred.entity.get("key") == key:
                return cred
        return None


# ---------------------------------------------------------------- vault references

def is_reference(value: Any) -> bool:
    return vault.is_reference(value)


def resolve_reference(ref: str, env: dict[str, str]) -> str:
    """Kong's env vault (aigw/vault.py holds the rules, with Kong's file:line)."""
    return vault.resolve(ref, env)


def _resolve_refs(conf: dict[str, Any], fields: list, env: dict[str, str], where: str) -> None:
    """Resolve references as Kong's ``process_auto_fields`` does when a plugin is selected
    (kong/db/schema/init.lua 3.9.1, 1879-1980 and 2023), with the one walker and resolver of
    aigw/vault.py. ``$refs`` is part of what ``StartInstance`` sends."""

    def resolve(ref: str, path: str, _name: str) -> str:
        try:
            return vault.resolve(ref, env)
        except vault.VaultError as exc:
            # Kong (resolve_reference, init.lua 1693) logs a warning and uses ""; the stand-in
            # refuses to load instead, so a test cannot pass on an empty secret
            raise ConfigError(f"{where}: {path}: cannot resolve vault reference: {exc}") from None

    vault.resolve_fields(conf, fields, resolve)


def drop_nulls(node: Any) -> Any:
    """Kong selects plugins with ``nulls = false``: ``process_auto_fields`` turns every null into
    an absent key, at any depth (kong/db/schema/init.lua 3.9.1, 1926-1928, recursing through
    ``adjust_field_for_context`` 1645-1690)."""
    if isinstance(node, dict):
        return {k: drop_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [drop_nulls(v) for v in node]
    return node


# ---------------------------------------------------------------- loading

def _url_parts(url: str) -> dict[str, Any]:
    u = urlsplit(url)
    out: dict[str, Any] = {"protocol": u.scheme or "http", "host": u.hostname}
    if u.port:
        out["port"] = u.port
    if u.path:
        out["path"] = u.path
    return out


def _service(raw: dict[str, Any], idx: int) -> Service:
    raw = dict(raw)
    if raw.get("url"):
        raw.update(_url_parts(raw.pop("url")))
    protocol = raw.get("protocol", "http")
    if not raw.get("host"):
        raise ConfigError(f"service {raw.get('name') or idx}: host is required")
    sid = raw.get("id") or make_id("service", raw.get("name") or str(idx))
    entity = {
        "id": sid, "name": raw.get("name"), "protocol": protocol, "host": raw["host"],
        "port": int(raw.get("port") or (443 if protocol == "https" else 80)),
        "path": raw.get("path"), "retries": int(raw.get("retries", 5)),
        "connect_timeout": int(raw.get("connect_timeout", 60000)),
        "read_timeout": int(raw.get("read_timeout", 60000)),
        "write_timeout": int(raw.get("write_timeout", 60000)),
        "enabled": raw.get("enabled", True), "tags": raw.get("tags"), "ws_id": WS_ID,
    }
    return Service(sid, entity["name"], protocol, entity["host"], entity["port"], entity["path"],
                   entity["connect_timeout"], entity["read_timeout"], entity["write_timeout"],
                   entity["retries"], entity)


def _route(raw: dict[str, Any], service: Service | None, idx: int) -> Route:
    rid = raw.get("id") or make_id("route", raw.get("name") or str(idx))
    paths = list(raw.get("paths") or [])
    for p in paths:
        if p.startswith("~"):
            try:
                re.compile(pcre_to_python(p[1:]))
            except re.error as exc:
                raise ConfigError(f"route {raw.get('name') or rid}: invalid regex path {p!r}: {exc}") from None
    entity = {
        "id": rid, "name": raw.get("name"), "paths": paths or None,
        "methods": [m.upper() for m in raw.get("methods") or []] or None,
        "hosts": [h.lower() for h in raw.get("hosts") or []] or None,
        "strip_path": raw.get("strip_path", True), "preserve_host": raw.get("preserve_host", False),
        "regex_priority": int(raw.get("regex_priority", 0)),
        "protocols": raw.get("protocols") or ["http", "https"],
        "https_redirect_status_code": 426, "path_handling": raw.get("path_handling", "v0"),
        "request_buffering": True, "response_buffering": True, "tags": raw.get("tags"),
        "service": {"id": service.id} if service else None, "ws_id": WS_ID,
    }
    return Route(rid, entity["name"], service, paths, entity["methods"] or [], entity["hosts"] or [],
                 bool(entity["strip_path"]), bool(entity["preserve_host"]), entity["regex_priority"],
                 entity)


def pcre_to_python(rx: str) -> str:
    """Kong route regexes are PCRE: ``(?<name>...)`` becomes Python's ``(?P<name>...)``."""
    return re.sub(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P<\1>", rx)


def _find(items: list, ref: Any, what: str, where: str) -> Any:
    key = ref.get("id") or ref.get("name") or ref.get("username") if isinstance(ref, dict) else ref
    for it in items:
        if key in (it.id, getattr(it, "name", None), getattr(it, "username", None)):
            return it
    raise ConfigError(f"{where}: unknown {what} {key!r}")


def load(source: str | Path | dict[str, Any], registry: dict[str, PluginInfo],
         env: dict[str, str] | None = None) -> Config:
    """Load and validate a declarative config; raises ConfigError naming the entity and field."""
    env = dict(os.environ if env is None else env)
    if isinstance(source, dict):
        doc = source
    else:
        doc = yaml.safe_load(Path(source).read_text()) or {}
    fmt = str(doc.get("_format_version", ""))
    if not fmt.startswith("3"):
        raise ConfigError(f"_format_version must be \"3.0\", got {fmt!r}")
    cfg = Config()
    pending_plugins: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (raw, implied scope)

    for i, raw_s in enumerate(doc.get("services") or []):
        svc = _service(raw_s, i)
        cfg.services.append(svc)
        for raw_r in raw_s.get("routes") or []:
            route = _route(raw_r, svc, len(cfg.routes))
            cfg.routes.append(route)
            for p in raw_r.get("plugins") or []:
                pending_plugins.append((p, {"route": route.id}))
        for p in raw_s.get("plugins") or []:
            pending_plugins.append((p, {"service": svc.id}))
    for raw_r in doc.get("routes") or []:
        svc = _find(cfg.services, raw_r["service"], "service", f"route {raw_r.get('name')}") \
            if raw_r.get("service") else None
        route = _route(raw_r, svc, len(cfg.routes))
        cfg.routes.append(route)
        for p in raw_r.get("plugins") or []:
            pending_plugins.append((p, {"route": route.id}))

    for raw_u in doc.get("upstreams") or []:
        uid = raw_u.get("id") or make_id("upstream", raw_u["name"])
        targets = []
        for t in raw_u.get("targets") or []:
            host, _, port = str(t["target"]).rpartition(":") if ":" in str(t["target"]) else (t["target"], "", "")
            targets.append(Target(host, int(port or 8000), int(t.get("weight", 100))))
        cfg.upstreams[raw_u["name"]] = Upstream(uid, raw_u["name"], targets, dict(raw_u, id=uid))
    for raw_t in doc.get("targets") or []:
        up = cfg.upstreams.get(raw_t.get("upstream")) if isinstance(raw_t.get("upstream"), str) else None
        if up is None:
            raise ConfigError(f"target {raw_t.get('target')}: unknown upstream")
        host, _, port = str(raw_t["target"]).rpartition(":")
        up.targets.append(Target(host or raw_t["target"], int(port or 8000), int(raw_t.get("weight", 100))))

    groups: dict[str, dict[str, Any]] = {}
    members: dict[str, list[str]] = {}
    for raw_g in doc.get("consumer_groups") or []:
        gid = raw_g.get("id") or make_id("consumer_group", raw_g["name"])
        groups[raw_g["name"]] = {"id": gid, "name": raw_g["name"], "ws_id": WS_ID}
        for m in raw_g.get("consumers") or []:
            members.setdefault(m.get("username") or m.get("id"), []).append(raw_g["name"])
    for i, raw_c in enumerate(doc.get("consumers") or []):
        key = raw_c.get("username") or raw_c.get("custom_id") or str(i)
        cid = raw_c.get("id") or make_id("consumer", key)
        entity = {"id": cid, "username": raw_c.get("username"), "custom_id": raw_c.get("custom_id"),
                  "tags": raw_c.get("tags"), "ws_id": WS_ID}
        names = [g if isinstance(g, str) else g.get("name") for g in raw_c.get("groups") or []]
        names += members.get(raw_c.get("username"), []) + members.get(cid, [])
        cgroups = []
        for n in dict.fromkeys(names):
            groups.setdefault(n, {"id": make_id("consumer_group", n), "name": n, "ws_id": WS_ID})
            cgroups.append(groups[n])
        consumer = Consumer(cid, entity["username"], entity["custom_id"], cgroups, entity,
                            [a["group"] if isinstance(a, dict) else str(a) for a in raw_c.get("acls") or ()])
        cfg.consumers.append(consumer)
        for kind in ("keyauth_credentials", "jwt_secrets"):
            for n, raw_k in enumerate(raw_c.get(kind) or []):
                cfg.credentials.append(_credential(kind, raw_k, consumer, n))
        for p in raw_c.get("plugins") or []:
            pending_plugins.append((p, {"consumer": cid}))
    for kind in ("keyauth_credentials", "jwt_secrets"):
        for n, raw_k in enumerate(doc.get(kind) or []):
            consumer = _find(cfg.consumers, raw_k.get("consumer"), "consumer", kind)
            cfg.credentials.append(_credential(kind, raw_k, consumer, n))

    for p in doc.get("plugins") or []:
        pending_plugins.append((p, {}))
    for raw_p, implied in pending_plugins:
        # one counter for the life of the process, as Kong's shared "plugins_iterator:__seq__"
        # (plugins_iterator.lua 3.9.1 179-188): a reloaded config never repeats a __seq__, so
        # every plugin gets a new instance with its new config (plugin_servers/plugin.lua 258-299)
        cfg.plugins.append(_plugin(raw_p, implied, cfg, registry, env, next(_SEQ)))
    return cfg


_SEQ = itertools.count(1)


def _credential(kind: str, raw: dict[str, Any], consumer: Consumer, n: int) -> Credential:
    key = raw.get("key") or make_id(kind + ":key", f"{consumer.id}:{n}")
    entity = dict(raw, key=key, consumer={"id": consumer.id}, ws_id=WS_ID)
    entity.setdefault("id", make_id(kind, f"{consumer.id}:{key}"))
    if kind == "jwt_secrets":
        entity.setdefault("algorithm", "HS256")
        entity.setdefault("secret", None)
        entity.setdefault("rsa_public_key", None)
    return Credential(kind, entity, consumer)


def _plugin(raw: dict[str, Any], implied: dict[str, str], cfg: Config,
            registry: dict[str, PluginInfo], env: dict[str, str], seq: int) -> Plugin:
    name = raw.get("name")
    scope: dict[str, str | None] = {"route": None, "service": None, "consumer": None}
    for what, items in (("route", cfg.routes), ("service", cfg.services), ("consumer", cfg.consumers)):
        if implied.get(what):
            scope[what] = implied[what]
        elif raw.get(what):
            scope[what] = _find(items, raw[what], what, f"plugin {name!r}").id
    where = f"plugin {name!r} ({_scope_text(scope, cfg)})"
    info = registry.get(name)
    if info is None:
        raise ConfigError(f"{where}: plugin {name!r} not enabled; is it in --plugins-dir?")
    try:
        conf = schema.process(info.fields, raw.get("config") or {})
    except schema.SchemaError as exc:
        raise ConfigError(f"{where}: schema violation ({exc})") from None
    if not info.bundled:  # the bundled re-implementations index their config like Lua tables
        conf = drop_nulls(conf)
    _resolve_refs(conf, info.fields, env, where)
    pid = raw.get("id") or make_id("plugin", f"{name}:{scope['route']}:{scope['service']}:{scope['consumer']}")
    # kong/runloop/plugins_iterator.lua 3.9.1 get_plugin_config (157-190): route_id, service_id,
    # consumer_id and plugin_instance_name are Lua nils when unset, which cjson leaves out
    for key, value in (("route_id", scope["route"]), ("service_id", scope["service"]),
                       ("consumer_id", scope["consumer"]), ("plugin_instance_name", raw.get("instance_name"))):
        if value is not None:
            conf[key] = value
    conf.update({
        "__plugin_id": pid, "__ws_id": WS_ID,
        # kong.db.plugins:cache_key(name, route, service, consumer, nil, ws_id)
        "__key__": ":".join(["plugins", name, scope["route"] or "", scope["service"] or "",
                             scope["consumer"] or "", "", WS_ID]),
        "__seq__": seq,
    })
    return Plugin(pid, name, info, conf, scope["route"], scope["service"], scope["consumer"],
                  bool(raw.get("enabled", True)))


def _scope_text(scope: dict[str, str | None], cfg: Config) -> str:
    parts = []
    for what, items in (("route", cfg.routes), ("service", cfg.services), ("consumer", cfg.consumers)):
        if scope[what]:
            ent = next((x for x in items if x.id == scope[what]), None)
            label = getattr(ent, "name", None) or getattr(ent, "username", None) or scope[what]
            parts.append(f"{what} {label!r}")
    return ", ".join(parts) or "global"
