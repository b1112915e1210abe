"""Prometheus metrics: names, buckets, counters and histograms move, /metrics server."""
from __future__ import annotations

import requests

from aigw import metrics
from aigw.metrics import Metrics
from aigw.types import Usage

LABELS = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "gpt-4o",
          "gen_ai_response_model": "gpt-4o-2024-08-06", "gen_ai_provider_name": "openai"}


def value(m: Metrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def record(m: Metrics, status: int = 200, **kw) -> None:
    args = dict(model="gpt-4o", response_model="gpt-4o-2024-08-06", provider="openai",
                consumer="alice", status=status, duration_s=1.5)
    args.update(kw)
    m.record_request(**args)


def test_request_counter_by_status_class_and_outcome() -> None:
    m = Metrics()
    record(m, 200)
    record(m, 200)
    record(m, 429)
    record(m, 502)
    assert value(m, "aigw_requests_total", **LABELS, status_class="2xx", outcome="success") == 2
    assert value(m, "aigw_requests_total", **LABELS, status_class="4xx", outcome="rate_limited") == 1
    assert value(m, "aigw_requests_total", **LABELS, status_class="5xx", outcome="server_error") == 1


def test_duration_histogram_uses_otel_buckets() -> None:
    m = Metrics()
    record(m, 200, duration_s=0.05)
    record(m, 503, duration_s=3.0)
    name = "gen_ai_server_request_duration_seconds"
    ok = dict(LABELS, error_type="")
    assert value(m, f"{name}_bucket", **ok, le="0.04") == 0
    assert value(m, f"{name}_bucket", **ok, le="0.08") == 1
    assert value(m, f"{name}_count", **dict(LABELS, error_type="503")) == 1
    assert value(m, f"{name}_sum", **dict(LABELS, error_type="503")) == 3.0
    les = {s.labels["le"] for fam in m.registry.collect() if fam.name == name
           for s in fam.samples if s.name.endswith("_bucket")}
    assert les == {"0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56", "5.12",
                   "10.24", "20.48", "40.96", "81.92", "+Inf"}


def test_ttft_recorded_only_when_known() -> None:
    m = Metrics()
    record(m, ttft_s=None)
    assert value(m, "gen_ai_server_time_to_first_token_seconds_count", **LABELS) == 0
    record(m, ttft_s=0.07)
    assert value(m, "gen_ai_server_time_to_first_token_seconds_count", **LABELS) == 1
    assert value(m, "gen_ai_server_time_to_first_token_seconds_bucket", **LABELS, le="0.06") == 0
    assert value(m, "gen_ai_server_time_to_first_token_seconds_bucket", **LABELS, le="0.08") == 1


def test_token_usage_by_type() -> None:
    m = Metrics()
    record(m, usage=Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1000,
                          reasoning_tokens=0))
    record(m, usage=Usage(input_tokens=800, output_tokens=100, cache_write_tokens=50,
                          reasoning_tokens=40))
    name = "gen_ai_client_token_usage"
    assert value(m, f"{name}_sum", **LABELS, gen_ai_token_type="input") == 2000
    assert value(m, f"{name}_count", **LABELS, gen_ai_token_type="input") == 2
    assert value(m, f"{name}_sum", **LABELS, gen_ai_token_type="output") == 400
    assert value(m, f"{name}_sum", **LABELS, gen_ai_token_type="cache_read") == 1000
    assert value(m, f"{name}_count", **LABELS, gen_ai_token_type="cache_read") == 1
    assert value(m, f"{name}_sum", **LABELS, gen_ai_token_type="cache_creation") == 50
    assert value(m, f"{name}_count", **LABELS, gen_ai_token_type="reasoning") == 1
    assert value(m, f"{name}_bucket", **LABELS, gen_ai_token_type="input", le="1024.0") == 1
    assert value(m, f"{name}_bucket", **LABELS, gen_ai_token_type="input", le="4096.0") == 2


def test_cost_counter_sums() -> None:
    m = Metrics()
    record(m, cost=0.025)
    record(m, cost=0.5)
    record(m, cost=None)
    assert abs(value(m, "aigw_cost_usd_total", **LABELS) - 0.525) < 1e-12


def test_cache_counter() -> None:
    m = Metrics()
    m.record_cache("hit")
    m.record_cache("hit")
    m.record_cache("miss")
    assert value(m, "aigw_cache_total", status="hit") == 2
    assert value(m, "aigw_cache_total", status="miss") == 1


def test_missing_labels_are_empty_not_none() -> None:
    m = Metrics()
    m.record_request(None, None, None, None, 0, 0.2)
    text = m.render().decode()
    assert "None" not in text
    assert value(m, "aigw_requests_total", gen_ai_operation_name="chat", gen_ai_request_model="",
                 gen_ai_response_model="", gen_ai_provider_name="", status_class="unknown",
                 outcome="error") == 1


def test_render_uses_own_registry() -> None:
    a, b = Metrics(), Metrics()
    record(a, model="only-in-a")
    assert b"only-in-a" in a.render()
    assert b"only-in-a" not in b.render()
    assert b"# TYPE gen_ai_client_token_usage histogram" in a.render()


def test_start_server_serves_default_registry_once() -> None:
    port = metrics.start_server(0)
    assert metrics.start_server(0) == port
    metrics.record_request("m-served", "m-served", "p", "c", 200, 0.1)
    metrics.record_cache("store")
    body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'gen_ai_request_model="m-served"' in body
    assert 'aigw_cache_total{status="store"}' in body


def test_start_server_under_gevent_monkey_patching() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import requests\n"
        "from aigw import metrics\n"
        "port = metrics.start_server(0)\n"
        "srv = metrics._server[2]\n"
        "metrics.record_cache('hit')\n"
        "r = requests.get(f'http://127.0.0.1:{port}/metrics', timeout=5)\n"
        "print(type(srv).__module__, r.status_code, 'aigw_cache_total{status=\"hit\"} 1.0' in r.text)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=60, check=True).stdout.split()
    assert out == ["gevent.pywsgi", "200", "True"]


# --- gen_ai.client.operation.duration, operation name, opt-in consumer label ---

def test_client_operation_duration_only_for_requests_that_reached_a_provider() -> None:
    m = Metrics()
    name = "gen_ai_client_operation_duration_seconds"
    record(m, duration_s=0.3, reached_provider=True)
    record(m, 502, duration_s=2.0, reached_provider=True)
    record(m, 429, duration_s=0.001)  # refused before any provider call
    assert value(m, f"{name}_count", **LABELS, error_type="") == 1
    assert value(m, f"{name}_sum", **LABELS, error_type="502") == 2.0
    assert value(m, f"{name}_count", **LABELS, error_type="429") == 0
    assert value(m, f"{name}_bucket", **LABELS, error_type="", le="0.32") == 1
    assert value(m, "gen_ai_server_request_duration_seconds_count", **LABELS, error_type="429") == 1
    assert b"# TYPE gen_ai_client_operation_duration_seconds histogram" in m.render()


def test_operation_name_is_a_label() -> None:
    m = Metrics()
    record(m, operation="embeddings", usage=Usage(input_tokens=10))
    emb = dict(LABELS, gen_ai_operation_name="embeddings")
    assert value(m, "aigw_requests_total", **emb, status_class="2xx", outcome="success") == 1
    assert value(m, "gen_ai_client_token_usage_sum", **emb, gen_ai_token_type="input") == 10
    assert value(m, "aigw_requests_total", **LABELS, status_class="2xx", outcome="success") == 0


def test_consumer_label_is_off_by_default() -> None:
    m = Metrics(consumer_label=False)
    record(m, consumer="alice")
    assert b"alice" not in m.render() and b"consumer=" not in m.render()


def test_consumer_label_opt_in(monkeypatch) -> None:
    m = Metrics(consumer_label=True)
    record(m, consumer="alice")
    assert value(m, "aigw_requests_total", **LABELS, consumer="alice", status_class="2xx",
                 outcome="success") == 1
    monkeypatch.setenv("AIGW_METRICS_CONSUMER_LABEL", "true")
    assert Metrics().consumer_label is True
    monkeypatch.setenv("AIGW_METRICS_CONSUMER_LABEL", "0")
    assert Metrics().consumer_label is False
    monkeypatch.delenv("AIGW_METRICS_CONSUMER_LABEL")
    assert Metrics().consumer_label is False
