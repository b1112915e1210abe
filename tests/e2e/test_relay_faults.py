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


def _log_events(gw) -> list[dict]:
    import orjson
    out = []
    for line in gw.standin.logs().splitlines():
        if '"aigw.request"' in line and "{" in line:
            out.append(orjson.loads(line[line.index("{"):]))
    return out


def _wait_event(gw, marker_model: str, n: int = 1, timeout: float = 5.0) -> list[dict]:
    import time
    deadline = time.time() + timeout
    while True:
        evs = [e for e in _log_events(gw) if e.get("gen_ai.request.model") == marker_model]
        if len(evs) >= n or time.time() > deadline:
            return evs
        time.sleep(0.05)


def _received(mock, marker: str) -> list[dict]:
    return [r for r in mock.requests() if marker in json.dumps(r.get("body"))]


@pytest.fixture
def faulty(make_gateway, mock):
    """A gateway with models whose first target misbehaves and a healthy fallback."""
    def edit(doc):
        _limits_off(doc)
        router = plugin_config(doc, "ai-router")
        router["circuit_breaker"] = {"failures": 2, "cooldown": 60}
        router["providers"].append({"name": "deadport", "type": "openai", "base_url": "http://127.0.0.1:9/v1",
                                    "api_key": "{vault://env/openai-api-key}",
                                    "timeouts": {"connect": 1000, "first_byte": 5000, "total": 10000}})
        fb = {"provider": "mistral", "model": "mistral-fallback"}
        for name, model in [("drop-fo", "gpt-fault-drop"), ("empty-fo", "gpt-fault-empty"),
                            ("early-fo", "gpt-fault-early-done"), ("serr-fo", "gpt-fault-stream-error-400"),
                            ("inv-fo", "gpt-fault-invalid-500"), ("c422-fo", "gpt-fault-422")]:
            add_model(doc, name, [{"provider": "openai", "model": model}, fb], strategy="priority")
        add_model(doc, "dead-fo", [{"provider": "deadport", "model": "gpt-dead"}, fb], strategy="priority")
        add_model(doc, "empty-only", [{"provider": "openai", "model": "gpt-fault-empty"}])
        add_model(doc, "early-only", [{"provider": "openai", "model": "gpt-fault-early-done"}])
    return make_gateway(edit)


def _post(gw, model: str, marker: str, stream: bool, **kw):
    return requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=30, stream=stream,
                         json={"model": model, "stream": stream, "temperature": 0.7,
                               "messages": [{"role": "user", "content": f"REPLY:fine {marker}"}], **kw})


@pytest.mark.parametrize("stream", [False, True])
def test_failure_after_send_is_not_failed_over(faulty, mock, stream):
    """The provider read the request and dropped the connection: it may have processed it,
    so the gateway answers 502 and does not send it to the fallback target."""
    marker = f"drop-{uuid.uuid4().hex[:8]}"
    r = _post(faulty, "drop-fo", marker, stream)
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == "upstream_failed" and "not retried" in err["message"]
    got = _received(mock, marker)
    assert [g["body"]["model"] for g in got] == ["gpt-fault-drop"]  # sent once, never to the fallback


def test_connect_failure_fails_over(faulty, mock):
    """Connection refused: the request provably never left, so the next target gets it."""
    marker = f"dead-{uuid.uuid4().hex[:8]}"
    for stream in (False, True):
        r = _post(faulty, "dead-fo", marker, stream)
        assert r.status_code == 200, r.text
        assert r.headers["x-ai-provider"] == "mistral"
        assert r.headers["x-ai-attempt-log"].startswith("deadport/gpt-dead=connect")
    assert len(_received(mock, marker)) == 2


@pytest.mark.parametrize("model,first", [("empty-fo", "gpt-fault-empty"), ("early-fo", "gpt-fault-early-done")])
def test_stream_with_no_output_is_a_failed_attempt(faulty, mock, model, first):
    """200 and then only [DONE] (or a role chunk and [DONE]): nothing was produced, so the
    attempt failed and the fallback answers."""
    marker = f"e-{uuid.uuid4().hex[:8]}"
    r = _post(faulty, model, marker, True)
    assert r.status_code == 200
    assert r.headers["x-ai-provider"] == "mistral"
    assert f"openai/{first}=empty" in r.headers["x-ai-attempt-log"]
    assert _stream_text(r) == f"fine {marker}"


@pytest.mark.parametrize("model", ["empty-only", "early-only"])
def test_stream_with_no_output_and_no_fallback_is_502_and_not_charged(faulty, model):
    marker = f"e-{uuid.uuid4().hex[:8]}"
    r = _post(faulty, model, marker, True)
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == "upstream_failed" and "no output" in err["message"]
    [ev] = _wait_event(faulty, model)
    assert ev["http.response.status_code"] == 502
    assert ev["aigw.cost_usd"] is None and ev.get("gen_ai.usage.output_tokens") is None


def test_stream_error_event_caused_by_the_request_is_relayed(faulty, mock):
    """llama.cpp answers an over-long streamed prompt 200 and then an ``error:`` line with
    code 400: the client gets the provider's 400 and message; no failover, breaker untouched."""
    for _i in range(3):  # more than the breaker's 2 failures
        marker = f"s-{uuid.uuid4().hex[:8]}"
        r = _post(faulty, "serr-fo", marker, True)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "provider_error" and "exceeds the available context size" in err["message"]
        assert err["type"] == "invalid_request_error"
        assert r.headers["x-ai-attempt-log"] == "openai/gpt-fault-stream-error-400=error:400"
        assert len(_received(mock, marker)) == 1


@pytest.mark.parametrize("model,status", [("inv-fo", 400), ("c422-fo", 422)])
def test_provider_validation_errors_are_relayed_not_retried(faulty, mock, model, status):
    """A 500 whose body says invalid_request_error, or a 422: relayed with the provider's
    status and message, never failed over, not counted against the circuit breaker."""
    for stream in (False, True, False, True):  # 4 > the breaker's 2 failures
        marker = f"v-{uuid.uuid4().hex[:8]}"
        r = _post(faulty, model, marker, stream)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["code"] == "provider_error" and err["type"] == "invalid_request_error"
        assert r.headers["x-ai-attempts"] == "1"
        assert len(_received(mock, marker)) == 1
    # the breaker stayed closed: the target is still tried first
    assert r.headers["x-ai-attempt-log"].startswith("openai/")
