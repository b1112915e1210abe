"""Load generator for bench/run.py, run as its own process (so its CPU is not the gateway's).

    python bench/load.py SPEC.json   # writes the results as JSON on stdout

SPEC: ``{"targets": [{"name", "url", "headers", "body", "stream"}], "mode": "open"|"closed",
"rate": 200, "requests": 500, "rounds": 10, "concurrency": 16, "duration": 5, "warmup": 20,
"max_requests": 0}``

- open loop (latency): the requests of a round are scheduled on a fixed timeline
  (``rate`` per second); a free worker takes the next slot, waits for its time and
  sends. Latency is measured from the *scheduled* time, so a slow gateway cannot
  hide its queueing (no coordinated omission).
- closed loop (throughput): ``concurrency`` workers send back to back for ``duration`` s.

Targets are interleaved round by round (A B B A A B ...), so drift on the machine
hits every target alike. Every worker keeps one keep-alive connection per target.
For streams the client also records the time to the first content token.
"""
from __future__ import annotations

import http.client
import queue
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import orjson


class Target:
    def __init__(self, spec: dict[str, Any]):
        self.name: str = spec["name"]
        u = urlsplit(spec["url"])
        self.host, self.port, self.path = u.hostname or "127.0.0.1", u.port or 80, u.path or "/"
        self.body: bytes = spec["body"].encode() if isinstance(spec["body"], str) else spec["body"]
        self.headers = {**spec.get("headers", {}), "Content-Length": str(len(self.body))}
        self.stream = bool(spec.get("stream"))
        self.latency: list[float] = []
        self.ttft: list[float] = []
        self.errors: dict[str, int] = {}
        self.done = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def first_token(buf: bytes) -> bool:
    """True once an SSE event with non-empty content (or a tool call) arrived."""
    for event in buf.split(b"\n\n")[:-1]:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                continue
            try:
                c = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                continue
            for ch in c.get("choices") or ():
                d = ch.get("delta") or {}
                if d.get("content") or d.get("tool_calls"):
                    return True
    return False


class Worker:
    def __init__(self) -> None:
        self.conns: dict[str, http.client.HTTPConnection] = {}

    def send(self, t: Target, start: float) -> None:
        """One request; latency from ``start`` (the scheduled time) to the last byte."""
        conn = self.conns.get(t.name)
        if conn is None:
            conn = self.conns[t.name] = http.client.HTTPConnection(t.host, t.port, timeout=30)
        try:
            conn.request("POST", t.path, body=t.body, headers=t.headers)
            resp = conn.getresponse()
            ttft = None
            if t.stream:
                buf = b""
                while True:
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    if ttft is None:
                        buf += chunk
                        if first_token(buf):
                            ttft = time.perf_counter() - start
            else:
                resp.read()
            end = time.perf_counter()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self.conns.pop(t.name, None)
            t.error(type(exc).__name__)
            return
        if resp.status != 200:
            t.error(str(resp.status))
            return
        t.latency.append(end - start)
        if ttft is not None:
            t.ttft.append(ttft)
        t.done += 1

    def close(self) -> None:
        for c in self.conns.values():
            c.close()


def open_loop(t: Target, rate: float, n: int, workers: list[Worker]) -> None:
    slots: queue.Queue[float | None] = queue.Queue()
    t0 = time.perf_counter() + 0.01
    for i in range(n):
        slots.put(t0 + i / rate)

    def run(w: Worker) -> None:
        while True:
            try:
                at = slots.get_nowait()
            except queue.Empty:
                return
            delay = at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            w.send(t, at)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def closed_loop(t: Target, duration: float, workers: list[Worker], max_requests: int = 0) -> float:
    stop = time.perf_counter() + duration
    before = t.done
    budget = iter(range(max_requests)) if max_requests else None

    def run(w: Worker) -> None:
        while time.perf_counter() < stop:
            if budget is not None and next(budget, None) is None:
                return
            w.send(t, time.perf_counter())

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return (t.done - before) / (time.perf_counter() - t0)


def main(spec: dict[str, Any]) -> dict[str, Any]:
    targets = [Target(s) for s in spec["targets"]]
    mode = spec.get("mode", "open")
    conc = int(spec.get("concurrency", 16))
    workers = [Worker() for _ in range(conc)]
    for t in targets:  # warm connections (not recorded)
        for i in range(int(spec.get("warmup", 20))):
            workers[i % conc].send(t, time.perf_counter())
        t.latency.clear(), t.ttft.clear()
        t.done = 0
    rates: dict[str, list[float]] = {t.name: [] for t in targets}
    for r in range(int(spec.get("rounds", 1))):
        order = targets if r % 2 == 0 else targets[::-1]  # A B | B A | A B ...
        for t in order:
            if mode == "open":
                open_loop(t, float(spec["rate"]), int(spec["requests"]), workers)
            else:
                rates[t.name].append(closed_loop(t, float(spec["duration"]), workers,
                                                 int(spec.get("max_requests", 0))))
    for w in workers:
        w.close()
    return {t.name: {"latency_s": t.latency, "ttft_s": t.ttft, "errors": t.errors, "ok": t.done,
                     "rps": rates[t.name]} for t in targets}


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        result = main(orjson.loads(f.read()))
    sys.stdout.buffer.write(orjson.dumps(result))
