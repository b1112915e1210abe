"""Issue 13: the relay under load and faults (connection reuse, no double sends,
upstream anomalies, provider errors caused by the request)."""
from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .conftest import add_model, plugin_config


def _limits_off(doc):
    """Load tests send hundreds of requests: raise the demo token limits and budgets."""
    plugin_config(doc, "ai-tokens")["limits"] = [{"scope": "consumer", "tokens": 10 ** 12, "window": "minute"}]
    plugin_config(doc, "ai-cost")["budgets"] = [{"scope": "consumer", "usd": 10 ** 9, "period": "day"}]


def _stream_text(r: requests.Response) -> str:
    out = []
    for line in r.iter_lines():
        if line.startswith(b"data: {"):
            c = json.loads(line[6:])
            for ch in c.get("choices") or ():
                out.append((ch.get("delta") or {}).get("content") or "")
    return "".join(out)


def test_concurrent_mixed_load_sends_each_request_once(make_gateway, mock):
    """Streams and non-streams interleaved on shared pooled upstream connections, through
    failover models: every request succeeds and reaches the provider exactly once (a
    connection reused before its previous stream was read to the end used to fail after the
    request was sent, and the failover then sent it a second time)."""
    def edit(doc):
        _limits_off(doc)
        add_model(doc, "fo-load", [{"provider": "openai", "model": "gpt-load-a"},
                                   {"provider": "mistral", "model": "mistral-load-b"}], strategy="priority")
        add_model(doc, "single-load", [{"provider": "openai", "model": "gpt-load-c"}])
    gw = make_gateway(edit)
    run = uuid.uuid4().hex[:8]
    n = 400

    def call(i: int):
        s = sessions[i % len(sessions)]
        stream = i % 2 == 0
        marker = f"m{run}x{i}"
        body = {"model": "fo-load" if i % 3 else "single-load", "stream": stream, "temperature": 0.7,
                "messages": [{"role": "user", "content": f"REPLY:ok {marker} " + "word " * 30}]}
        r = s.post(gw.url + "/v1/chat/completions", headers=gw.headers(), json=body,
                   stream=stream, timeout=30)
        text = _stream_text(r) if stream else (r.json()["choices"][0]["message"]["content"]
                                               if r.status_code == 200 else r.text)
        return r.status_code, marker, text, r.headers.get("x-ai-attempts")

    sessions = [requests.Session() for _ in range(16)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(n)))
    bad = [r for r in results if r[0] != 200 or r[1] not in r[2] or r[3] != "1"]
    assert not bad, bad[:5]
    seen: dict[str, int] = {}
    for rec in mock.requests():
        body = rec.get("body")
        if isinstance(body, dict):
            text = json.dumps(body)
            for part in text.split(f"m{run}x")[1:]:
                key = part.split(" ", 1)[0]
                seen[key] = seen.get(key, 0) + 1
    assert len(seen) == n and set(seen.values()) == {1}, {k: v for k, v in seen.items() if v != 1}
