"""aigw.tracing: the OTEL_* switch, the off path (no SDK, traceparent passed through),
and hooks that never fail a request."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from aigw import tracing


@pytest.mark.parametrize("env,on", [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "console,otlp"}, True),
])
def test_enabled_follows_the_standard_variables(env, on) -> None:
    assert tracing.enabled(env) is on


def test_off_never_imports_the_sdk_and_passes_traceparent_through() -> None:
    code = textwrap.dedent("""
        import os, sys
        for k in list(os.environ):
            if k.startswith("OTEL_"):
                del os.environ[k]
        from types import SimpleNamespace
        from aigw import tracing
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        up = SimpleNamespace(headers={}, url="http://x")
        t = tracing.begin(None, {"HTTP_TRACEPARENT": tp, "HTTP_TRACESTATE": "a=1"})
        t.provider_call(None, up)
        t.attempt_failed("connect", None)
        t.finish(None, None)
        assert up.headers == {"traceparent": tp, "tracestate": "a=1"}, up.headers
        assert tracing.begin(None, {}) is tracing.OFF
        up2 = SimpleNamespace(headers={}, url="http://x")
        for bad in ("garbage", "00-" + "0" * 31 + "-b7ad6b7169203331-01", "ff-" + tp[3:], tp + "\\r\\nX: y"):
            tracing.begin(None, {"HTTP_TRACEPARENT": bad}).provider_call(None, up2)
        assert up2.headers == {}, up2.headers
        assert not [m for m in sys.modules if m.startswith("opentelemetry")], "SDK imported while off"
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_unsupported_protocol_turns_tracing_off(monkeypatch, caplog) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    tracing.reset()
    try:
        assert tracing.begin(None, {}) is tracing.OFF
        assert "grpc" in caplog.text
    finally:
        tracing.reset()


def test_a_broken_hook_never_raises(monkeypatch, caplog) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    tracing.reset()
    try:
        ctx = SimpleNamespace(api="chat", stream=False, id="r1", model=SimpleNamespace(name="m"))
        t = tracing.begin(ctx, {})
        assert isinstance(t, tracing.RequestTrace)
        t.provider_call(object(), SimpleNamespace(headers={}, url="http://x"))  # no .model: fails inside
        t.finish(ctx, object())                                                  # no outcome fields
        assert "tracing: provider_call failed" in caplog.text and "tracing: finish failed" in caplog.text
    finally:
        tracing.reset()
