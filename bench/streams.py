"""Concurrent-streams load client for bench/peers.py, run as its own process.

    python bench/streams.py SPEC.json   # results as JSON on stdout

SPEC: ``{"url", "headers", "body", "concurrency": 200, "per_worker": 1, "timeout": 60,
"ramp_s": 1.0}``.

``concurrency`` greenlets (gevent, one connection each) each send ``per_worker`` stream
requests back to back; their starts are spread evenly over ``ramp_s`` seconds (clients
do not all connect in the same millisecond), so all are open together after the ramp
(a stream lasts 50 x 20 ms). ``timeout`` is the socket timeout of every read.

For every stream the client records:

- TTFB: from sending the request to the first byte of the response body;
- the arrival time of every complete SSE event (``\\n\\n``-terminated); the gaps between
  consecutive events of a stream are what a user sees as smooth or bunched output
  (events that arrive in one read get the same time, so bunching shows as 0 gaps
  followed by a long one);
- errors: a status other than 200, a connection error or timeout, or a stream that ends
  without ``data: [DONE]``.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import http.client
import itertools
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import gevent
import orjson


def one_stream(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str],
               out: dict[str, Any]) -> bool:
    """Send one stream request; False when the connection must be replaced."""
    t0 = time.perf_counter()
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        resp.read()
        out["errors"][str(resp.status)] = out["errors"].get(str(resp.status), 0) + 1
        return True
    ttfb = None
    buf = b""
    times: list[float] = []
    done = False
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        now = time.perf_counter()
        if ttfb is None:
            ttfb = now - t0
        buf += chunk
        parts = buf.split(b"\n\n")
        buf = parts.pop()
        for ev in parts:
            if ev.strip():
                times.append(now)
                if b"[DONE]" in ev:
                    done = True
    if not done:
        out["errors"]["no_done"] = out["errors"].get("no_done", 0) + 1
        return False
    out["ttfb_s"].append(ttfb)
    out["gaps_s"].extend(b - a for a, b in itertools.pairwise(times))
    out["events"].append(len(times))
    out["total_s"].append(time.perf_counter() - t0)
    return True


def main(spec: dict[str, Any]) -> dict[str, Any]:
    u = urlsplit(spec["url"])
    host, port, path = u.hostname or "127.0.0.1", u.port or 80, u.path
    body = spec["body"].encode() if isinstance(spec["body"], str) else spec["body"]
    headers = {**spec.get("headers", {}), "Content-Length": str(len(body))}
    timeout = float(spec.get("timeout", 60))
    out: dict[str, Any] = {"ttfb_s": [], "gaps_s": [], "events": [], "total_s": [], "errors": {}}

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        for _ in range(int(spec.get("per_worker", 1))):
            try:
                if not one_stream(conn, path, body, headers, out):
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=timeout)
            except (OSError, http.client.HTTPException) as exc:
                kind = type(exc).__name__
                out["errors"][kind] = out["errors"].get(kind, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.close()

    t0 = time.perf_counter()
    conc = int(spec["concurrency"])
    ramp = float(spec.get("ramp_s", 0.0))
    gevent.joinall([gevent.spawn_later(ramp * i / conc, worker) for i in range(conc)])
    out["seconds"] = time.perf_counter() - t0
    return out


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        result = main(orjson.loads(f.read()))
    sys.stdout.buffer.write(orjson.dumps(result))
