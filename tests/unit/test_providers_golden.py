"""Golden fixtures: every case dir under tests/fixtures/providers/<provider>/<case>/.

Files (each optional; a check runs when its input and expected files exist):
  provider.json (in the provider dir; a case may override keys)
  canonical_request.json -> provider_request.json (stream=False), provider_request_stream.json
  provider_response.json -> canonical_response.json
  provider_stream.sse -> canonical_chunks.json (+ stream_state.json: usage/finish_reason/done)
    (provider_stream.bin instead for binary streams: Bedrock's AWS event-stream frames)
  canonical_embeddings_request.json -> provider_embeddings_request.json
  provider_embeddings_response.json -> canonical_embeddings_response.json
"""
from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import orjson
import pytest

from aigw.providers import base, get_adapter
from aigw.types import ProviderConfig, UpstreamRequest

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
PROVIDERS = ["openai", "azure", "anthropic", "gemini", "mistral", "openai_compatible", "bedrock",
             "vertex"]
STREAM_FILES = ("provider_stream.sse", "provider_stream.bin")
CREATED = 1700000000


def load(path: Path):
    return orjson.loads(path.read_bytes())


def _has(case: Path, name: str) -> bool:
    if name == "provider_stream.sse":
        return any((case / n).exists() for n in STREAM_FILES)
    return (case / name).exists()


def stream_bytes(case: Path) -> bytes:
    return next((case / n).read_bytes() for n in STREAM_FILES if (case / n).exists())


def cases(*needed: str) -> list:
    out = []
    for provider in PROVIDERS:
        for case in sorted((ROOT / provider).glob("*/")):
            if case.is_dir() and all(_has(case, n) for n in needed):
                out.append(pytest.param(case, id=f"{provider}/{case.name}"))
    return out


def config(case: Path) -> tuple[ProviderConfig, str]:
    raw = load(case.parent / "provider.json")
    if (case / "provider.json").exists():
        raw.update(load(case / "provider.json"))
    model = raw.pop("model")
    return ProviderConfig(**raw), model


@pytest.fixture(autouse=True)
def fixed_ids(monkeypatch):
    """Deterministic ``created`` and generated ids (call_0001, …)."""
    counter = itertools.count(1)
    monkeypatch.setattr(base, "now", lambda: CREATED)
    monkeypatch.setattr(base, "new_id", lambda prefix: f"{prefix}{next(counter):04d}")


def as_dict(req: UpstreamRequest) -> dict:
    out = dataclasses.asdict(req)
    out["body"] = orjson.loads(req.body) if req.body else None
    return out


def test_every_provider_has_fixtures():
    for provider in PROVIDERS:
        names = {p.name for p in (ROOT / provider).rglob("*")}
        assert names & set(STREAM_FILES), provider
        assert "provider_request.json" in names, provider
        assert "canonical_response.json" in names, provider


@pytest.mark.parametrize("case", cases("canonical_request.json", "provider_request.json"))
def test_chat_request(case):
    provider, model = config(case)
    adapter = get_adapter(provider.type)
    req = adapter.chat_request(load(case / "canonical_request.json"), model, provider,
                               stream=False)
    assert as_dict(req) == load(case / "provider_request.json")


@pytest.mark.parametrize("case", cases("canonical_request.json", "provider_request_stream.json"))
def test_chat_request_stream(case):
    provider, model = config(case)
    adapter = get_adapter(provider.type)
    req = adapter.chat_request(load(case / "canonical_request.json"), model, provider,
                               stream=True)
    assert as_dict(req) == load(case / "provider_request_stream.json")


@pytest.mark.parametrize("case", cases("provider_response.json", "canonical_response.json"))
def test_chat_response(case):
    provider, model = config(case)
    adapter = get_adapter(provider.type)
    got = adapter.chat_response((case / "provider_response.json").read_bytes(), model)
    assert got == load(case / "canonical_response.json")


def decode(adapter, model: str, pieces: list[bytes]):
    dec = adapter.chat_stream(model)
    out = []
    for p in pieces:
        out += dec.feed(p)
    out += dec.close()
    return out, dec


def check_state(dec, case: Path) -> None:
    state_file = case / "stream_state.json"
    if not state_file.exists():
        return
    state = load(state_file)
    assert dec.finish_reason == state["finish_reason"]
    assert dec.done == state["done"]
    usage = dataclasses.asdict(dec.usage) if dec.usage else None
    assert usage == state["usage"]


@pytest.mark.parametrize("case", cases("provider_stream.sse", "canonical_chunks.json"))
def test_chat_stream_whole(case):
    provider, model = config(case)
    raw = stream_bytes(case)
    got, dec = decode(get_adapter(provider.type), model, [raw])
    assert got == load(case / "canonical_chunks.json")
    check_state(dec, case)


@pytest.mark.parametrize("case", cases("provider_stream.sse", "canonical_chunks.json"))
def test_chat_stream_every_split(case, monkeypatch):
    """Two pieces, split at every byte offset; and one byte at a time."""
    provider, model = config(case)
    adapter = get_adapter(provider.type)
    raw = stream_bytes(case)
    expected = load(case / "canonical_chunks.json")
    for i in range(1, len(raw)):
        monkeypatch.setattr(base, "new_id",
                            (lambda c: lambda prefix: f"{prefix}{next(c):04d}")(itertools.count(1)))
        got, _ = decode(adapter, model, [raw[:i], raw[i:]])
        assert got == expected, f"split at byte {i}"
    monkeypatch.setattr(base, "new_id",
                        (lambda c: lambda prefix: f"{prefix}{next(c):04d}")(itertools.count(1)))
    got, dec = decode(adapter, model, [raw[i:i + 1] for i in range(len(raw))])
    assert got == expected
    check_state(dec, case)


@pytest.mark.parametrize("case", cases("canonical_embeddings_request.json",
                                       "provider_embeddings_request.json"))
def test_embeddings_request(case):
    provider, model = config(case)
    req = get_adapter(provider.type).embeddings_request(
        load(case / "canonical_embeddings_request.json"), model, provider)
    assert as_dict(req) == load(case / "provider_embeddings_request.json")


@pytest.mark.parametrize("case", cases("provider_embeddings_response.json",
                                       "canonical_embeddings_response.json"))
def test_embeddings_response(case):
    provider, model = config(case)
    got = get_adapter(provider.type).embeddings_response(
        (case / "provider_embeddings_response.json").read_bytes(), model)
    assert got == load(case / "canonical_embeddings_response.json")


# -- the official OpenAI SDK reads the canonical chunks we produce ------------

@pytest.mark.parametrize("case", cases("provider_stream.sse", "canonical_chunks.json"))
def test_openai_sdk_reads_decoded_stream(case):
    """Serve our decoded chunks as a relay would (data: …, data: [DONE]) to the SDK."""
    openai = pytest.importorskip("openai")
    import http.server
    import threading

    provider, model = config(case)
    chunks, dec = decode(get_adapter(provider.type), model,
                         [stream_bytes(case)])
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1",
                               api_key="test", max_retries=0)
        text: dict[int, str] = {}
        args: dict[tuple[int, int], str] = {}
        usage = None
        for ev in client.chat.completions.create(model="m", messages=[], stream=True):
            usage = ev.usage or usage
            for ch in ev.choices:
                text[ch.index] = text.get(ch.index, "") + (ch.delta.content or "")
                for tc in ch.delta.tool_calls or []:
                    key = (ch.index, tc.index)
                    args[key] = args.get(key, "") + (tc.function.arguments or "")
    finally:
        srv.shutdown()
        srv.server_close()
    want_text: dict[int, str] = {}
    for c in load(case / "canonical_chunks.json"):
        for ch in c["choices"]:
            want_text[ch["index"]] = want_text.get(ch["index"], "") + (ch["delta"].get("content") or "")
    assert text == want_text
    for (_, _), a in args.items():
        orjson.loads(a)  # every tool call's arguments assemble into valid JSON
    if dec.usage is None:
        assert usage is None
    else:
        assert usage.prompt_tokens == dec.usage.input_tokens
        assert usage.completion_tokens == dec.usage.output_tokens
