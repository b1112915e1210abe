"""``aigw-spend``: the current spend per consumer, group and global budget, read from Redis.

ai-cost with ``policy: redis`` keeps one sliding log per budget counter
(``aigw/limits.py``, ``aigw/data/limiter.lua``)::

    {prefix}usd:<counter>:<scope>:<subject>:<period>:log    sorted set  request id -> reserve time (ms)
    {prefix}usd:<counter>:<scope>:<subject>:<period>:amt    hash        request id -> micro-USD
    {prefix}usd:<counter>:<scope>:<subject>:<period>:total  string      running sum

``<counter>`` names the ai-cost plugin instance (``i.<plugin id>``) or the shared
counter its config names (``n.<name>``); see aigw/gateway/limits.py ``counter_id``.

``:total`` still holds entries older than the window until the next request on
that counter purges them, so this tool sums the amounts of the log entries
inside the window by Redis server time instead (read only: it never purges).
In-flight requests count with their reserved worst case until they finish.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import orjson
import redis

__all__ = ["PERIODS", "Spend", "read_spend", "main"]

# Budget periods and their sliding windows in seconds (as aigw.gateway.limits.WINDOWS).
PERIODS = {"day": 86400, "month": 30 * 86400}
_GLOB_SPECIAL = "\\*?[]"


@dataclass(frozen=True)
class Spend:
    counter: str      # i.<plugin id> (one ai-cost instance) or n.<name> (a shared counter)
    scope: str        # consumer | group | global
    subject: str      # consumer or group name; "*" for global
    period: str       # day | month
    micro_usd: int
    requests: int     # entries in the window (finished or in flight)

    @property
    def usd(self) -> float:
        return self.micro_usd / 1_000_000


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in s)


def _parse_key(key: str, prefix: str) -> tuple[str, str, str, str] | None:
    """``{prefix}usd:<counter>:<scope>:<subject>:<period>:log`` -> (counter, scope, subject, period)."""
    if not key.startswith(prefix + "usd:") or not key.endswith(":log"):
        return None
    head, _, period = key[len(prefix) + 4:-4].rpartition(":")
    counter, _, rest = head.partition(":")
    scope, _, subject = rest.partition(":")
    if not counter or not scope or not subject or period not in PERIODS:
        return None
    return counter, scope, subject, period


def read_spend(client: redis.Redis, prefix: str = "aigw:", consumer: str | None = None) -> list[Spend]:
    """Spend inside each budget counter's window, sorted by scope, subject, period."""
    sec, usec = client.time()
    now_ms = int(sec) * 1000 + int(usec) // 1000
    found: list[tuple[str, tuple[str, str, str, str]]] = []
    for raw in client.scan_iter(match=_glob_escape(prefix) + "usd:*:log", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        parsed = _parse_key(key, prefix)
        if parsed is None:
            continue
        if consumer is not None and (parsed[1], parsed[2]) != ("consumer", consumer):
            continue
        found.append((key, parsed))
    # two pipelined round trips for all counters (ids in the window, then their amounts)
    pipe = client.pipeline(transaction=False)
    for key, (_, _, _, period) in found:
        cutoff = now_ms - PERIODS[period] * 1000  # the limiter purges scores <= cutoff
        pipe.zrangebyscore(key, f"({cutoff}", "+inf")
    id_lists = pipe.execute() if found else []
    pipe = client.pipeline(transaction=False)
    for (key, _), ids in zip(found, id_lists, strict=True):
        if ids:
            pipe.hmget(key[:-4] + ":amt", ids)
    amount_lists = iter(pipe.execute() if any(id_lists) else [])
    out: list[Spend] = []
    for (_, (counter, scope, subject, period)), ids in zip(found, id_lists, strict=True):
        amounts = next(amount_lists) if ids else []
        vals = [int(a) for a in amounts if a is not None]  # None: released meanwhile
        if vals:
            out.append(Spend(counter, scope, subject, period, sum(vals), len(vals)))
    out.sort(key=lambda s: (s.counter, s.scope, s.subject, list(PERIODS).index(s.period)))
    return out


def _table(rows: Sequence[Spend]) -> str:
    head = ("counter", "scope", "subject", "period", "spend_usd", "requests")
    lines = [head] + [(s.counter, s.scope, s.subject, s.period, f"{s.usd:.6f}", str(s.requests))
                      for s in rows]
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in
                               enumerate(zip(r, widths, strict=True))).rstrip() for r in lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="aigw-spend",
        description="Current spend per ai-cost budget counter (policy: redis), in USD per period.")
    ap.add_argument("--redis-url", default=os.environ.get("AIGW_REDIS_URL", "redis://127.0.0.1:6379/0"),
                    help="Redis of the gateways (default: $AIGW_REDIS_URL or redis://127.0.0.1:6379/0)")
    ap.add_argument("--prefix", default=os.environ.get("AIGW_REDIS_PREFIX", "aigw:"),
                    help="the gateways' AIGW_REDIS_PREFIX (default: $AIGW_REDIS_PREFIX or aigw:)")
    ap.add_argument("--consumer", help="only this consumer's own counters")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)
    try:
        client = redis.Redis.from_url(args.redis_url, socket_timeout=5, socket_connect_timeout=5)
        rows = read_spend(client, args.prefix, args.consumer)
    except (redis.RedisError, OSError) as exc:
        print(f"aigw-spend: cannot read Redis: {type(exc).__name__}", file=sys.stderr)
        return 2
    if args.json:
        data = [{**asdict(s), "usd": s.usd} for s in rows]
        sys.stdout.write(orjson.dumps({"prefix": args.prefix, "spend": data}).decode() + "\n")
    elif rows:
        print(_table(rows))
    else:
        print("no spend recorded" + (f" for consumer {args.consumer}" if args.consumer else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
