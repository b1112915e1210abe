"""OpenTelemetry traces end to end: official OpenAI SDK -> stand-in -> plugin server -> relay
-> mock provider, spans exported by the real opentelemetry-sdk OTLP/HTTP exporter to a local
receiver that decodes the protobuf (opentelemetry-proto).

The client sends a W3C traceparent; the request span must be its child, each provider
attempt a child of the request span, and the provider must see a traceparent of the same
trace naming the attempt span.
"""
from __future__ import annotations

import gzip
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .conftest import Gateway, add_model, free_port, reference_config, remove_plugin
from .test_cost import mock_usage


class OTLPReceiver:
    """A minimal OTLP/HTTP traces endpoint: POST /v1/traces, protobuf body."""

    def __init__(self):
        self.spans: list[dict] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                with outer.lock:
                    outer.paths.append(self.path)
                    for rs in req.resource_spans:
                        res = {a.key: _value(a.value) for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            for s in ss.spans:
                                outer.spans.append({
                                    "name": s.name, "kind": s.kind, "trace_id": s.trace_id.hex(),
                                    "span_id": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                                    "attrs": {a.key: _value(a.value) for a in s.attributes},
                                    "events": [e.name for e in s.events], "status": s.status.code,
                                    "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                                    "resource": res})
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def trace(self, trace_id: str, n: int, timeout: float = 10.0) -> list[dict]:
        """Wait until at least ``n`` spans of ``trace_id`` arrived."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                got = [s for s in self.spans if s["trace_id"] == trace_id]
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{len(got)} of {n} spans of trace {trace_id} arrived")


def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
STATUS_ERROR = 2


@pytest.fixture(scope="module")
def receiver():
    with OTLPReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def traced(mock, receiver):
    doc = reference_config(free_port())
    remove_plugin(doc, "ai-cache")  # every request reaches the provider
    add_model(doc, "fo", [{"provider": "openai", "model": "gpt-fault-500"},
                          {"provider": "anthropic", "model": "claude-backup"}], strategy="priority")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "aigw-e2e",
           "OTEL_BSP_SCHEDULE_DELAY": "50"}
    with Gateway(mock, doc, env=env) as g:
        yield g


def _traceparent() -> tuple[str, str, str]:
    tid, sid = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{tid}-{sid}-01", tid, sid


def _log_line(gw, tid: str, timeout: float = 5.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in gw.standin.logs().splitlines():
            if '"aigw.request"' in line and tid in line:
                return json.loads(line[line.index("{"):])
        time.sleep(0.05)
    raise AssertionError("no log line for the trace")


def _mock_request(mock, tid: str) -> dict:
    for r in reversed(mock.requests()):
        if tid in (r["headers"].get("traceparent") or ""):
            return r
    raise AssertionError(f"the provider saw no traceparent of trace {tid}")


def test_spans_with_genai_attributes_and_client_trace(traced, receiver, mock):
    tp, tid, client_span = _traceparent()
    prompt = "REPLY:traced through the gateway"
    p, c = mock_usage(prompt, prompt[6:])
    client = traced.openai(default_headers={"traceparent": tp})
    out = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])
    assert out.usage.prompt_tokens == p

    spans = receiver.trace(tid, 2)
    [server] = [s for s in spans if s["kind"] == SERVER]
    [attempt] = [s for s in spans if s["kind"] == CLIENT]
    assert server["parent"] == client_span                      # child of the client's span
    assert attempt["parent"] == server["span_id"]               # provider attempt: child span
    assert server["name"] == "chat gpt-4o-mini"
    a = server["attrs"]
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (p, c)
    assert a["gen_ai.provider.name"] == "openai" and a["http.response.status_code"] == 200
    assert attempt["attrs"]["gen_ai.request.model"] == "gpt-4o-mini"
    assert attempt["attrs"]["server.address"] == "127.0.0.1"
    assert attempt["attrs"]["gen_ai.usage.output_tokens"] == c
    assert server["start"] <= attempt["start"] <= attempt["end"] <= server["end"]
    assert server["resource"]["service.name"] == "aigw-e2e"
    assert receiver.paths and all(p == "/v1/traces" for p in receiver.paths)
    # nothing of the prompt or the key leaves in a span
    blob = json.dumps(spans)
    assert "traced through" not in blob and "Bearer" not in blob
    # the provider saw the same trace, with the attempt span as parent
    seen = _mock_request(mock, tid)["headers"]["traceparent"]
    assert seen == f"00-{tid}-{attempt['span_id']}-01"
    # the request's log line names the trace and the request span
    line = _log_line(traced, tid)
    assert line["span_id"] == server["span_id"] and line["gen_ai.request.model"] == "gpt-4o-mini"


def test_stream_records_time_to_first_token(traced, receiver):
    tp, tid, _ = _traceparent()
    client = traced.openai(default_headers={"traceparent": tp})
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "REPLY:first token please"}]))
    assert chunks[-1].usage is not None
    spans = receiver.trace(tid, 2)
    [server] = [s for s in spans if s["kind"] == SERVER]
    ttft = server["attrs"]["gen_ai.server.time_to_first_token"]
    assert 0 < ttft <= (server["end"] - server["start"]) / 1e9
    assert "aigw.first_token" in server["events"]
    assert server["attrs"]["aigw.stream"] is True
    assert server["attrs"]["gen_ai.usage.output_tokens"] == 3


def test_failover_attempts_are_child_spans(traced, receiver, mock):
    tp, tid, _ = _traceparent()
    r = requests.post(traced.url + "/v1/chat/completions", headers={**traced.headers(), "traceparent": tp},
                      json={"model": "fo", "messages": [{"role": "user", "content": "REPLY:fail over"}]})
    assert r.status_code == 200 and r.headers["x-ai-attempts"] == "2"
    spans = receiver.trace(tid, 3)
    [server] = [s for s in spans if s["kind"] == SERVER]
    attempts = sorted((s for s in spans if s["kind"] == CLIENT), key=lambda s: s["start"])
    assert [s["parent"] for s in attempts] == [server["span_id"]] * 2
    first, second = attempts
    assert first["attrs"]["gen_ai.request.model"] == "gpt-fault-500"
    assert first["status"] == STATUS_ERROR and first["attrs"]["error.type"] == "500"
    assert first["end"] <= second["start"]
    assert second["attrs"]["gen_ai.provider.name"] == "anthropic"
    assert server["attrs"]["gen_ai.response.model"] == "claude-backup"
    assert server["attrs"]["aigw.attempts"] == 2
    # each attempt's provider call carried its own span id in the client's trace
    calls = [q for q in mock.requests() if tid in (q["headers"].get("traceparent") or "")]
    assert [q["headers"]["traceparent"].split("-")[2] for q in calls] == [s["span_id"] for s in attempts]


def test_a_malformed_client_traceparent_starts_a_new_trace(traced, receiver, mock):
    mark = secrets.token_hex(4)
    r = requests.post(traced.url + "/v1/chat/completions",
                      headers={**traced.headers(), "traceparent": f"00-zz{mark}-nonsense-01"},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"REPLY:{mark}"}]})
    assert r.status_code == 200
    seen = next(q for q in reversed(mock.requests()) if mark in str(q.get("body")))
    tp = seen["headers"]["traceparent"]
    tid = tp.split("-")[1]
    assert len(tid) == 32 and "zz" not in tp
    [server] = [s for s in receiver.trace(tid, 2) if s["kind"] == SERVER]
    assert server["parent"] == ""  # a root span: the bad header was ignored


def test_tracing_off_passes_the_client_traceparent_through(gateway, mock):
    """The shipped config with no OTEL_* set: no export, the provider still joins the trace."""
    tp, tid, _ = _traceparent()
    r = requests.post(gateway.url + "/v1/chat/completions", headers={**gateway.headers(), "traceparent": tp,
                                                                     "tracestate": "vendor=1"},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"REPLY:off {tid}"}]})
    assert r.status_code == 200
    h = _mock_request(mock, tid)["headers"]
    assert h["traceparent"] == tp and h["tracestate"] == "vendor=1"
