"""One place that turns a plugin's Redis settings into a redis-py client.

Three deployments, chosen by which fields are set in the plugin's ``redis``
record (the field names follow Kong's: ``kong/tools/redis/schema.lua`` at tag
3.9.1 for host, port, username, password, database, ssl, ssl_verify,
and Kong Enterprise's Redis settings, as documented for
rate-limiting-advanced, for sentinel_* and cluster_*):

* **standalone**: ``host``/``port``, or the plugin's older ``redis_url``
  (used when the ``redis`` record names no host and no nodes);
* **sentinel**: ``sentinel_master`` + ``sentinel_nodes`` — the master is looked
  up from the Sentinels on every new connection, so after a failover new
  connections go to the promoted master; a connection still open to a
  demoted master gets ``READONLY`` and is dropped by redis-py;
* **cluster**: ``cluster_nodes`` — redis-py's ``RedisCluster`` follows
  ``MOVED``/``ASK`` redirections and refreshes the slot map after a failover.

Multi-key Lua scripts in a cluster need every key in one hash slot:
:func:`key_prefix` wraps the key prefix in a hash tag (``{aigw:}``) in cluster
mode, so all of one gateway's limiter keys share one slot.  Standalone and
Sentinel keys keep their plain prefix (existing counters stay valid).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import redis
from redis._parsers import Encoder
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.connection import BlockingConnectionPool
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

__all__ = ["RedisSettings", "connect", "key_prefix", "DEFAULT_URL"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"


class _Common(TypedDict):
    """The settings every deployment takes from the ``redis`` record."""

    database: int
    username: str | None
    password: str | None
    ssl: bool
    ssl_verify: bool
    timeout: float


@dataclass(frozen=True)
class RedisSettings:
    mode: str = "standalone"  # standalone | sentinel | cluster
    url: str | None = DEFAULT_URL  # standalone from redis_url (None: host/port below)
    host: str = "127.0.0.1"
    port: int = 6379
    database: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    ssl_verify: bool = False
    sentinel_master: str | None = None
    sentinel_nodes: tuple[tuple[str, int], ...] = ()
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    timeout: float = 0.5  # seconds, connect and per command

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], default_timeout_ms: int = 500) -> RedisSettings:
        """Settings from a plugin config (``redis`` record, ``redis_url``, ``redis_timeout_ms``)."""
        timeout = (cfg.get("redis_timeout_ms") or default_timeout_ms) / 1000.0
        rec = cfg.get("redis") or {}
        sentinel_nodes = tuple((str(n["host"]), int(n.get("port") or 26379))
                               for n in rec.get("sentinel_nodes") or [])
        cluster_nodes = tuple((str(n["ip"]), int(n.get("port") or 6379))
                              for n in rec.get("cluster_nodes") or [])
        common: _Common = {
            "database": int(rec.get("database") or 0), "username": rec.get("username") or None,
            "password": rec.get("password") or None, "ssl": bool(rec.get("ssl")),
            "ssl_verify": bool(rec.get("ssl_verify")), "timeout": timeout}
        if cluster_nodes and (sentinel_nodes or rec.get("sentinel_master")):
            raise ValueError("redis: set cluster_nodes or sentinel_*, not both")
        if cluster_nodes:
            if common["database"]:
                raise ValueError("redis.database: Redis Cluster has only database 0")
            return cls(mode="cluster", url=None, cluster_nodes=cluster_nodes, **common)
        if sentinel_nodes or rec.get("sentinel_master"):
            if not sentinel_nodes or not rec.get("sentinel_master"):
                raise ValueError("redis: sentinel_master and sentinel_nodes go together")
            if (rec.get("sentinel_role") or "master") != "master":
                raise ValueError("redis.sentinel_role: only 'master' (limits and the cache write)")
            return cls(mode="sentinel", url=None, sentinel_master=str(rec["sentinel_master"]),
                       sentinel_nodes=sentinel_nodes,
                       sentinel_username=rec.get("sentinel_username") or None,
                       sentinel_password=rec.get("sentinel_password") or None, **common)
        if rec.get("host"):
            return cls(mode="standalone", url=None, host=str(rec["host"]),
                       port=int(rec.get("port") or 6379), **common)
        return cls(mode="standalone", url=cfg.get("redis_url") or DEFAULT_URL, timeout=timeout)

    def key(self) -> tuple[object, ...]:
        """Hashable identity (clients are shared per settings)."""
        return tuple(getattr(self, f) for f in self.__dataclass_fields__)


def _retry(fail_fast: bool) -> Retry:
    # fail_fast (the cache): one try, a miss is cheaper than a wait.  Limits: a few quick
    # retries ride over a dropped connection; the limiter's Lua script is idempotent per
    # reservation id, so a retried reserve never counts twice.
    return Retry(NoBackoff(), 0) if fail_fast else Retry(ExponentialBackoff(cap=0.2, base=0.02), 2)


def _tls(s: RedisSettings) -> dict[str, Any]:
    if not s.ssl:
        return {}
    return {"ssl": True, "ssl_cert_reqs": "required" if s.ssl_verify else "none",
            "ssl_check_hostname": bool(s.ssl_verify)}


# Connections per client (per Redis settings; shared by every plugin instance that uses
# them). redis-py's default pool refuses the 101st concurrent command with
# MaxConnectionsError; with a few hundred requests in flight on a busy event loop (each
# connection is held until its greenlet gets to read the reply) that refusal became 503
# limits_unavailable, though Redis itself was answering (docs/redis.md "Busy event loop").
# So the pool blocks instead: a command waits for a free connection. That wait measures
# this process's own load, not the store, so it is bounded separately and generously.
POOL_SIZE = 128
POOL_WAIT = 10.0  # seconds a command may wait for a free connection (nothing hangs)


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's master lookup on every new connection, with the blocking pool's waiting."""


def _tls_connection(s: RedisSettings) -> dict[str, Any]:
    tls = _tls(s)
    if tls:
        tls.pop("ssl")
        tls["connection_class"] = redis.SSLConnection
    return tls


def connect(s: RedisSettings, *, fail_fast: bool = False) -> Any:
    """A client for ``s`` (``redis.Redis`` or ``redis.cluster.RedisCluster``); no I/O yet."""
    conn: dict[str, Any] = dict(socket_timeout=s.timeout, socket_connect_timeout=s.timeout,
                                retry=_retry(fail_fast), health_check_interval=0)
    pool = dict(max_connections=POOL_SIZE, timeout=POOL_WAIT)
    if s.mode == "standalone" and s.url:
        return redis.Redis(connection_pool=BlockingConnectionPool.from_url(s.url, **pool, **conn))
    if s.mode == "standalone":
        return redis.Redis(connection_pool=BlockingConnectionPool(
            host=s.host, port=s.port, db=s.database, username=s.username, password=s.password,
            **_tls_connection(s), **pool, **conn))
    if s.mode == "sentinel":
        sentinel_kwargs = {"socket_timeout": s.timeout, "socket_connect_timeout": s.timeout,
                           "username": s.sentinel_username, "password": s.sentinel_password,
                           **_tls(s)}
        sentinel = Sentinel(list(s.sentinel_nodes), sentinel_kwargs=sentinel_kwargs)
        return sentinel.master_for(s.sentinel_master, connection_pool_class=_BlockingSentinelPool,
                                   db=s.database, username=s.username, password=s.password,
                                   **_tls(s), **pool, **conn)
    conn.pop("health_check_interval")

    def factory() -> RedisCluster:
        # RedisCluster builds each node's pool itself (no blocking pool to pass): it gets a
        # larger cap instead, so a burst is not refused at 100 connections per node
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in s.cluster_nodes],
                            username=s.username, password=s.password, **_tls(s), **conn,
                            reinitialize_steps=1,
                            max_connections=8 * POOL_SIZE)
    return LazyCluster(factory)


class LazyCluster:
    """A ``RedisCluster`` built on first use, whose failures are ``redis.ConnectionError``.

    ``RedisCluster()`` connects in its constructor: built at config time, a cluster that
    is down would fail the plugin's start.  And redis-py raises
    ``RedisClusterException`` (not a ``RedisError``) when no node answers; callers catch
    ``RedisError``, so it is translated here.
    """

    def __init__(self, factory: Callable[[], RedisCluster]) -> None:
        self._factory = factory
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()

    def _get(self) -> RedisCluster:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._factory()
                    except RedisClusterException as exc:
                        raise redis.ConnectionError(type(exc).__name__) from None
        return self._client

    def get_encoder(self) -> Encoder:  # Script() needs it before any connection exists
        return Encoder("utf-8", "strict", False)

    def register_script(self, script: str) -> Script:
        # Script is annotated for Redis | RedisCluster but only calls get_encoder(), evalsha()
        # and script_load() on its client (redis/commands/core.py), which this proxy has
        return Script(self, script)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._get(), name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except RedisClusterException as exc:
                raise redis.ConnectionError(type(exc).__name__) from None
        return call


def key_prefix(prefix: str, client: Any) -> str:
    """``prefix`` as a hash tag for a cluster client (one slot for every key), else as is."""
    if isinstance(client, LazyCluster) and "{" not in prefix:
        return "{" + prefix + "}"
    return prefix
