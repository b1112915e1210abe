"""Issue 18: Redis round trips per request on the reference route, all five plugins.

Counted on the Redis server itself: a MONITOR connection sees every command a client sends
(a command = a round trip: the gateway sends no pipelines), and the commands a Lua script
runs inside the server are shown as ``[... lua]`` and left out. The gateway gets its own key
prefix, so only its commands are counted. Before issue 18 the limits alone took 4 script
calls per request (token reserve, USD reserve, token settle, USD settle).
"""
from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections import Counter

import pytest
import requests

pytestmark = pytest.mark.redis

_LINE = re.compile(r'^\+\d+\.\d+ \[\d+ (?P<client>[^\]]+)\] "(?P<cmd>[^"]+)"(?P<args>.*)$')


class Monitor:
    """The commands Redis receives from clients (not from scripts) that mention ``prefix``."""

    def __init__(self, prefix: str, host: str = "127.0.0.1", port: int = 6379):
        self.prefix = prefix.encode()
        self.sock = socket.create_connection((host, port), timeout=0.2)
        self.sock.sendall(b"MONITOR\r\n")
        self.commands: list[str] = []
        self._stop = threading.Event()
        self._buf = b""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            self._buf += data
            *lines, self._buf = self._buf.split(b"\r\n")
            for raw in lines:
                if self.prefix not in raw:
                    continue
                m = _LINE.match(raw.decode("utf-8", "replace"))
                if m and m["client"] != "lua":
                    self.commands.append(m["cmd"].lower())

    def count(self) -> int:
        return len(self.commands)

    def wait_quiet(self, quiet: float = 1.0, timeout: float = 10.0) -> None:
        """Until no command arrived for ``quiet`` seconds (settlements run after the body)."""
        deadline, last, since = time.time() + timeout, -1, time.time()
        while time.time() < deadline:
            n = self.count()
            if n != last:
                last, since = n, time.time()
            elif time.time() - since >= quiet:
                return
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _chat(gw, i: int, stream: bool = False, text: str | None = None, **extra) -> requests.Response:
    body = {"model": "chat", **extra,
            "messages": [{"role": "user", "content": text or f"round trip probe {uuid.uuid4().hex} {i}"}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), json=body, timeout=30)


def _watch(prefix: str) -> Monitor:
    mon = Monitor(prefix)
    mon.wait_quiet(0.5)
    mon.commands.clear()
    return mon


def test_reference_route_makes_two_round_trips_per_request(make_gateway):
    prefix = f"aigw-test-rt:{uuid.uuid4().hex[:8]}:"
    gw = make_gateway(env={"AIGW_REDIS_PREFIX": prefix})
    assert _chat(gw, -1).status_code == 200   # warm-up: connections, script load
    mon = _watch(prefix)
    try:
        n = 6
        for i in range(n):
            r = _chat(gw, i, stream=bool(i % 2))
            assert r.status_code == 200, r.text
            assert r.headers.get("x-ratelimit-remaining-tokens")  # ai-tokens' decision, after the commit
        mon.wait_quiet()
        per_request = Counter(mon.commands)
    finally:
        mon.close()
    print(f"Redis commands for {n} requests: {dict(per_request)}")
    limits = per_request["evalsha"] + per_request["eval"]
    # one reservation before the provider call, one settlement after it, for tokens and USD
    assert limits == 2 * n, per_request
    # these requests (no temperature: not deterministic) are not cached: nothing else
    assert sum(per_request.values()) <= 2 * n, per_request


def test_a_cacheable_miss_adds_the_caches_own_two_and_a_hit_reserves_nothing(make_gateway):
    """ai-cache keeps its own lookup (access phase) and store (after a 200): they are not in
    the limiter's script (docs/redis.md says why); a hit makes no reservation at all."""
    prefix = f"aigw-test-rt:{uuid.uuid4().hex[:8]}:"
    gw = make_gateway(env={"AIGW_REDIS_PREFIX": prefix})
    assert _chat(gw, -1, temperature=0).status_code == 200
    mon = _watch(prefix)
    try:
        text = f"cache probe {uuid.uuid4().hex}"
        miss = _chat(gw, 0, text=text, temperature=0)
        assert miss.status_code == 200 and miss.headers["x-cache-status"] == "Miss"
        mon.wait_quiet()
        on_miss = Counter(mon.commands)
        mon.commands.clear()
        hit = _chat(gw, 0, text=text, temperature=0)
        assert hit.status_code == 200 and hit.headers["x-cache-status"] == "Hit", on_miss
        mon.wait_quiet()
        on_hit = Counter(mon.commands)
    finally:
        mon.close()
    print(f"Redis commands: cache miss {dict(on_miss)}, cache hit {dict(on_hit)}")
    assert on_miss["evalsha"] == 2 and sum(on_miss.values()) == 4, on_miss
    assert on_hit["evalsha"] == 0 and sum(on_hit.values()) == 1, on_hit
