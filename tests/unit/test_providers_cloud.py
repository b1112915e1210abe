"""bedrock and vertex beyond the golden fixtures: stream faults, request errors, config
validation, and the credentials edge (aigw.cloud_auth): SigV4 and google-auth tokens."""
from __future__ import annotations

import datetime
import threading

import orjson
import pytest
from botocore.credentials import Credentials

from aigw import cloud_auth
from aigw.errors import GatewayError
from aigw.providers import NotSupported, ProviderProtocolError, UpstreamStreamError, get_adapter
from aigw.routing import ConfigError, RouterConfig
from aigw.types import ProviderConfig
from aigw_dev.mock.bedrock_api import verify_sigv4
from aigw_dev.mock.eventstream import event, exception, frame

MSGS = [{"role": "user", "content": "hi"}]
BEDROCK = ProviderConfig(name="aws", type="bedrock",
                         base_url="https://bedrock-runtime.eu-west-1.amazonaws.com",
                         region="eu-west-1")
VERTEX = ProviderConfig(name="gcp", type="vertex", base_url="https://aiplatform.googleapis.com",
                        region="global", project="acme")


@pytest.fixture(autouse=True)
def _clean():
    cloud_auth.reset()
    yield
    cloud_auth.reset()


# -- ConverseStream decoding ------------------------------------------------------

def _start():
    return event("messageStart", {"role": "assistant"})


def test_exception_frame_raises_with_chunks_before_it():
    dec = get_adapter("bedrock").chat_stream("m")
    raw = _start() + event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}}) \
        + exception("throttlingException", "Too many tokens, please wait.")
    with pytest.raises(UpstreamStreamError) as exc:
        dec.feed(raw)
    assert exc.value.status == 502
    assert "throttlingException" in exc.value.message and "Too many tokens" in exc.value.message
    assert exc.value.chunks[-1]["choices"][0]["delta"] == {"content": "x"}


def test_error_frame_with_headers_only():
    raw = frame({":message-type": "error", ":error-code": "InternalFailure",
                 ":error-message": "boom"}, b"")
    with pytest.raises(UpstreamStreamError, match="InternalFailure: boom"):
        get_adapter("bedrock").chat_stream("m").feed(raw)


@pytest.mark.parametrize("corrupt", ["prelude", "message"])
def test_corrupted_frame_is_a_protocol_error(corrupt):
    raw = bytearray(_start())
    raw[9 if corrupt == "prelude" else len(raw) - 6] ^= 0xFF
    with pytest.raises(ProviderProtocolError):
        get_adapter("bedrock").chat_stream("m").feed(bytes(raw))


def test_non_json_event_payload_is_a_protocol_error():
    raw = frame({":message-type": "event", ":event-type": "contentBlockDelta"}, b"{nope")
    with pytest.raises(ProviderProtocolError):
        get_adapter("bedrock").chat_stream("m").feed(raw)


def test_stream_cut_before_message_stop_is_not_done():
    dec = get_adapter("bedrock").chat_stream("m")
    out = dec.feed(_start() + event("contentBlockDelta",
                                    {"contentBlockIndex": 0, "delta": {"text": "par"}}))
    out += dec.feed(_start()[:10])  # half a frame, then the connection drops
    out += dec.close()
    assert not dec.done and dec.usage is None
    assert [c["choices"][0]["delta"] for c in out] == [{"role": "assistant", "content": ""},
                                                       {"content": "par"}]


def test_stream_without_metadata_is_done_at_close():
    dec = get_adapter("bedrock").chat_stream("m")
    dec.feed(_start() + event("messageStop", {"stopReason": "end_turn"}))
    assert not dec.done
    dec.close()
    assert dec.done and dec.finish_reason == "stop" and dec.usage is None


def test_guardrail_stop_reason_is_content_filter():
    resp = {"output": {"message": {"role": "assistant", "content": [{"text": "blocked"}]}},
            "stopReason": "guardrail_intervened"}
    out = get_adapter("bedrock").chat_response(orjson.dumps(resp), "m")
    assert out["choices"][0]["finish_reason"] == "content_filter"


# -- request translation errors ---------------------------------------------------

@pytest.mark.parametrize("body, param", [
    ({"messages": MSGS, "n": 2}, "n"),
    ({"messages": MSGS, "tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": "none"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/cat.png"}}]}]}, "messages"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]},
     "messages"),
    ({"messages": [{"role": "assistant", "tool_calls": [
        {"id": "1", "function": {"name": "f", "arguments": "[1]"}}]}]}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages"),
])
def test_bedrock_client_mistakes_are_400(body, param):
    with pytest.raises(GatewayError) as exc:
        get_adapter("bedrock").chat_request(body, "m", BEDROCK, stream=False)
    assert exc.value.status == 400 and exc.value.param == param


@pytest.mark.parametrize("type_, provider", [("bedrock", BEDROCK), ("vertex", VERTEX)])
def test_no_embeddings(type_, provider):
    with pytest.raises(NotSupported):
        get_adapter(type_).embeddings_request({"input": "x"}, "m", provider)


def test_bedrock_model_ids_are_escaped_in_the_path():
    arn = "arn:aws:bedrock:eu-west-1:123:inference-profile/eu.anthropic.claude-3-7-sonnet-v1:0"
    req = get_adapter("bedrock").chat_request({"messages": MSGS}, arn, BEDROCK, stream=True)
    assert req.url == ("https://bedrock-runtime.eu-west-1.amazonaws.com/model/"
                       "arn%3Aaws%3Abedrock%3Aeu-west-1%3A123%3Ainference-profile%2F"
                       "eu.anthropic.claude-3-7-sonnet-v1%3A0/converse-stream")


def test_vertex_url_and_publisher():
    a = get_adapter("vertex")
    assert a.chat_request({"messages": MSGS}, "claude-opus-4@20250514", VERTEX, stream=False).url \
        == ("https://aiplatform.googleapis.com/v1/projects/acme/locations/global/publishers/"
            "anthropic/models/claude-opus-4@20250514:rawPredict")
    assert a.chat_request({"messages": MSGS}, "gemini-2.0-flash", VERTEX, stream=True).url \
        == ("https://aiplatform.googleapis.com/v1/projects/acme/locations/global/publishers/"
            "google/models/gemini-2.0-flash:streamGenerateContent?alt=sse")
    body = orjson.loads(a.chat_request({"messages": MSGS, "n": 1}, "claude-x", VERTEX,
                                       stream=False).body)
    assert "model" not in body and body["anthropic_version"] == "vertex-2023-10-16"
    with pytest.raises(NotSupported):  # Anthropic rules apply to Claude on Vertex
        a.chat_request({"messages": MSGS, "n": 3}, "claude-x", VERTEX, stream=False)


# -- config validation --------------------------------------------------------------

def _router(provider: dict) -> RouterConfig:
    return RouterConfig.from_dict({"providers": [provider], "models": [
        {"name": "m", "targets": [{"provider": provider["name"], "model": "x"}]}]})


@pytest.mark.parametrize("provider, field", [
    ({"name": "a", "type": "bedrock", "base_url": "https://b"}, "region"),
    ({"name": "a", "type": "vertex", "base_url": "https://v", "region": "us-east5"}, "project"),
    ({"name": "a", "type": "vertex", "base_url": "https://v", "project": "p"}, "region"),
    ({"name": "a", "type": "vertex", "base_url": "https://v", "project": "p", "region": "r",
      "api_key": "k"}, "api_key"),
    ({"name": "a", "type": "vertex", "base_url": "https://v", "project": "p", "region": "r",
      "credentials_file": "/f", "credentials_json": "{}"}, "credentials_json"),
    ({"name": "a", "type": "openai", "base_url": "https://o", "region": "r"}, "region"),
    ({"name": "a", "type": "bedrock", "base_url": "https://b", "region": "r", "project": "p"},
     "project"),
])
def test_cloud_provider_config_errors(provider, field):
    with pytest.raises(ConfigError) as exc:
        _router(provider)
    assert exc.value.field.endswith(field)


def test_cloud_provider_config_ok():
    cfg = _router({"name": "a", "type": "vertex", "base_url": "https://v", "project": "p",
                   "region": "r", "credentials_file": "/k.json"})
    assert cfg is not None


# -- SigV4 ------------------------------------------------------------------------

def test_sigv4_signature_verifies_and_covers_body_url_and_headers():
    cloud_auth.set_aws_credentials(lambda: Credentials("AKIDX", "s3cr3t", "session-tok"))
    req = cloud_auth.authorize(BEDROCK, get_adapter("bedrock").chat_request(
        {"messages": MSGS}, "anthropic.claude-v2:1", BEDROCK, stream=False))
    h = req.headers
    assert h["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDX/")
    assert "/eu-west-1/bedrock/aws4_request" in h["authorization"]
    assert h["x-amz-security-token"] == "session-tok"
    hdrs = dict(h, host="bedrock-runtime.eu-west-1.amazonaws.com")
    assert verify_sigv4("POST", req.url, hdrs, req.body, "s3cr3t") is None
    assert verify_sigv4("POST", req.url, hdrs, req.body, "other") is not None
    assert verify_sigv4("POST", req.url, hdrs, req.body + b" ", "s3cr3t") is not None
    assert verify_sigv4("POST", req.url.replace("converse", "converse-stream"), hdrs, req.body,
                        "s3cr3t") is not None
    assert verify_sigv4("POST", req.url, dict(hdrs, **{"content-type": "text/plain"}), req.body,
                        "s3cr3t") is not None


def test_sigv4_old_date_is_rejected():
    cloud_auth.set_aws_credentials(lambda: Credentials("AKIDX", "s"))
    req = cloud_auth.authorize(BEDROCK, get_adapter("bedrock").chat_request(
        {"messages": MSGS}, "m", BEDROCK, stream=False))
    old = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1))
    hdrs = dict(req.headers, host="h", **{"x-amz-date": old.strftime("%Y%m%dT%H%M%SZ")})
    assert verify_sigv4("POST", req.url, hdrs, req.body, "s") == "Signature expired"


def test_bedrock_api_key_is_a_bearer_token_not_a_signature():
    p = ProviderConfig(name="aws", type="bedrock", base_url="https://b", region="r",
                       api_key="bedrock-api-key-1")
    req = cloud_auth.authorize(p, get_adapter("bedrock").chat_request(
        {"messages": MSGS}, "m", p, stream=False))
    assert req.headers["authorization"] == "Bearer bedrock-api-key-1"
    assert "x-amz-date" not in req.headers


def test_no_aws_credentials_is_a_credentials_error(monkeypatch, tmp_path):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with pytest.raises(cloud_auth.CredentialsError, match="no AWS credentials"):
        cloud_auth.authorize(BEDROCK, get_adapter("bedrock").chat_request(
            {"messages": MSGS}, "m", BEDROCK, stream=False))


def test_aws_credentials_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    req = cloud_auth.authorize(BEDROCK, get_adapter("bedrock").chat_request(
        {"messages": MSGS}, "m", BEDROCK, stream=False))
    assert "Credential=AKIDENV/" in req.headers["authorization"]
    hdrs = dict(req.headers, host="bedrock-runtime.eu-west-1.amazonaws.com")
    assert verify_sigv4("POST", req.url, hdrs, req.body, "envsecret") is None


# -- google-auth tokens --------------------------------------------------------------

class FakeCredentials:
    """A google.auth.credentials.Credentials stand-in: counts refreshes."""

    def __init__(self, lifetime: int = 3600, fail: bool = False):
        self.token = None
        self.expiry = None
        self.refreshes = 0
        self.lifetime = lifetime
        self.fail = fail
        self.lock = threading.Lock()

    @property
    def valid(self) -> bool:
        return self.token is not None and self.expiry > datetime.datetime.now(datetime.UTC)

    def refresh(self, request) -> None:
        import google.auth.exceptions
        if self.fail:
            raise google.auth.exceptions.RefreshError("invalid_grant: key secret-key-123 revoked")
        with self.lock:
            self.refreshes += 1
        self.token = f"tok-{self.refreshes}"
        self.expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self.lifetime)


def _vertex_call():
    return cloud_auth.authorize(VERTEX, get_adapter("vertex").chat_request(
        {"messages": MSGS}, "gemini-2.0-flash", VERTEX, stream=False))


def test_token_cached_until_expiry_then_refreshed():
    creds = FakeCredentials()
    cloud_auth.set_vertex_credentials(VERTEX, creds)
    assert {_vertex_call().headers["authorization"] for _ in range(20)} == {"Bearer tok-1"}
    assert creds.refreshes == 1
    creds.expiry = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    assert _vertex_call().headers["authorization"] == "Bearer tok-2"


def test_concurrent_requests_share_one_refresh():
    creds = FakeCredentials()
    cloud_auth.set_vertex_credentials(VERTEX, creds)
    threads = [threading.Thread(target=_vertex_call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert creds.refreshes == 1


def test_refresh_failure_is_a_credentials_error_without_details():
    cloud_auth.set_vertex_credentials(VERTEX, FakeCredentials(fail=True))
    with pytest.raises(cloud_auth.CredentialsError) as exc:
        _vertex_call()
    assert "RefreshError" in str(exc.value) and "secret-key-123" not in str(exc.value)


def test_bad_service_account_json_is_a_credentials_error():
    p = ProviderConfig(name="gcp", type="vertex", base_url="https://v", region="r", project="p",
                       credentials_json='{"type": "service_account"}')
    with pytest.raises(cloud_auth.CredentialsError):
        cloud_auth.authorize(p, get_adapter("vertex").chat_request(
            {"messages": MSGS}, "gemini-x", p, stream=False))


def test_other_providers_are_untouched():
    p = ProviderConfig(name="o", type="openai", base_url="https://o", api_key="k")
    req = get_adapter("openai").chat_request({"messages": MSGS}, "m", p, stream=False)
    assert cloud_auth.authorize(p, req) is req


def test_token_endpoint_that_hangs_is_bounded_by_the_provider_timeouts(tmp_path):
    """google-auth would wait 120 s by default; the refresh is bounded by connect + first_byte."""
    import json
    import socket
    import time

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {"type": "service_account", "project_id": "p", "private_key_id": "k",
            "private_key": pem, "client_email": "a@p.iam.gserviceaccount.com", "client_id": "1",
            "token_uri": f"http://127.0.0.1:{listener.getsockname()[1]}/token"}
    p = ProviderConfig(name="gcp", type="vertex", base_url="https://v", region="r", project="p",
                       credentials_json=json.dumps(info), connect_timeout=0.5,
                       first_byte_timeout=0.5)
    t0 = time.monotonic()
    try:
        with pytest.raises(cloud_auth.CredentialsError):
            cloud_auth.authorize(p, get_adapter("vertex").chat_request(
                {"messages": MSGS}, "gemini-x", p, stream=False))
    finally:
        listener.close()
    assert time.monotonic() - t0 < 10


def test_missing_aws_credentials_are_not_looked_up_on_every_request(monkeypatch):
    calls = []
    cloud_auth.set_aws_credentials(lambda: calls.append(1))  # the chain finds nothing
    req = get_adapter("bedrock").chat_request({"messages": MSGS}, "m", BEDROCK, stream=False)
    for _ in range(5):
        with pytest.raises(cloud_auth.CredentialsError):
            cloud_auth.authorize(BEDROCK, req)
    assert len(calls) == 1
    monkeypatch.setattr(cloud_auth, "NEGATIVE_TTL", 0.0)
    cloud_auth.set_aws_credentials(lambda: calls.append(1))
    for _ in range(3):
        with pytest.raises(cloud_auth.CredentialsError):
            cloud_auth.authorize(BEDROCK, req)
    assert len(calls) == 4
