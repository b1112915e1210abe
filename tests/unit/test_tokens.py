"""Token counting against tiktoken's own encoders and OpenAI's published examples."""
from __future__ import annotations

import base64
import gzip
import hashlib
import socket
import struct
import threading
from pathlib import Path

import pytest
import tiktoken
import tiktoken.model
import tiktoken_ext.openai_public as openai_public

from aigw.tokens import (
    TokenizerDataError,
    build_encoding,
    count_chat,
    count_completion_text,
    count_embeddings,
    count_text,
)
from aigw.tokens.encodings import default_data_dir
from aigw.tokens.images import data_url_size, image_size, image_tokens

# --- independent reference: tiktoken's own loader, fed through its cache dir ------------

_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, tiktoken.Encoding]:
    """Encodings built by tiktoken itself (its constructors, its cache lookup, its hash check)."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    for name, url in _URLS.items():
        data = gzip.decompress((default_data_dir() / f"{name}.tiktoken.gz").read_bytes())
        (cache / hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()).write_bytes(data)
    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    import requests

    def no_network(*a, **k):
        raise AssertionError("network access attempted")

    mp.setattr(requests, "get", no_network)
    try:
        out = {}
        for name in _URLS:
            spec = openai_public.ENCODING_CONSTRUCTORS[name]()
            out[name] = tiktoken.Encoding(spec["name"], pat_str=spec["pat_str"],
                                          mergeable_ranks=spec["mergeable_ranks"],
                                          special_tokens=spec["special_tokens"])
        return out
    finally:
        mp.undo()


TEXTS = [
    "Hello, world! How are you today?",
    "Grüße aus Köln – straße, Übermaß, naïve café.",
    "我们今天去公园散步，天气非常好。",
    "東京は日本の首都です。カタカナとひらがな。",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "Привет, мир! Как дела?",
    "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 🚀🚀🚀 👍🏽",
    "def f(x):\n    return x ** 2  # square\n\n\n\t\tindent",
    "   lots   of    spaces\r\n\r\nand CRLF   ",
    "numbers 1234567890 3.14159 1e-9 0xDEADBEEF",
    "a literal <|endoftext|> marker counts as text",
    "",
]


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4.1-mini", "o3-mini", "gpt-4", "gpt-3.5-turbo",
                                   "text-embedding-3-small"])
@pytest.mark.parametrize("text", TEXTS)
def test_count_text_matches_tiktoken(reference, model, text):
    name = tiktoken.model.encoding_name_for_model(model)
    got = count_text(text, model)
    assert got.tokens == len(reference[name].encode(text, disallowed_special=()))
    assert got.tokenizer == name and got.estimated is False


def test_long_mixed_text_matches(reference):
    text = " ".join(TEXTS) * 50
    for model, name in (("gpt-4o", "o200k_base"), ("gpt-4", "cl100k_base")):
        assert count_text(text, model).tokens == len(reference[name].encode(text, disallowed_special=()))
    assert count_completion_text(text, "gpt-4o").tokens == count_text(text, "gpt-4o").tokens


def test_provider_prefix_and_case():
    assert count_text("hello there", "openai/GPT-4o") == count_text("hello there", "gpt-4o")


# --- chat framing --------------------------------------------------------------------------

def cookbook_messages(messages: list[dict], enc: tiktoken.Encoding) -> int:
    """The cookbook's num_tokens_from_messages (3 per message, +1 per name, +3 priming)."""
    n = 0
    for m in messages:
        n += 3
        for key, value in m.items():
            n += len(enc.encode(value, disallowed_special=()))
            if key == "name":
                n += 1
    return n + 3


CORPORATE = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates "
                                  "corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant",
     "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user",
     "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
                "increased leverage."},
    {"role": "system", "name": "example_assistant",
     "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the "
                                "client deliverable."},
]


@pytest.mark.parametrize("model,api_count", [("gpt-3.5-turbo", 129), ("gpt-4", 129),
                                             ("gpt-4o", 124), ("gpt-4o-mini", 124)])
def test_chat_matches_cookbook_and_api(reference, model, api_count):
    enc = reference[tiktoken.model.encoding_name_for_model(model)]
    got = count_chat({"model": model, "messages": CORPORATE}, model)
    assert got.tokens == cookbook_messages(CORPORATE, enc)
    assert got.tokens == api_count  # prompt_tokens the cookbook reports from the OpenAI API
    assert got.estimated is False


def test_chat_multilingual_messages(reference):
    messages = [{"role": "user" if i % 2 else "assistant", "content": t} for i, t in enumerate(TEXTS)]
    got = count_chat({"messages": messages}, "gpt-4o")
    assert got.tokens == cookbook_messages(messages, reference["o200k_base"])


def test_single_text_part_counts_like_string():
    plain = count_chat({"messages": [{"role": "user", "content": "What is in this picture?"}]}, "gpt-4o")
    parts = count_chat({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"}]}]}, "gpt-4o")
    assert parts == plain


WEATHER_TOOLS = [{"type": "function", "function": {
    "name": "get_current_weather",
    "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "description": "The unit of temperature to return",
                 "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"]}}}]
WEATHER_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


def cookbook_tools(functions: list[dict], enc: tiktoken.Encoding, func_init: int) -> int:
    n = 0
    for f in functions:
        fn = f["function"]
        n += func_init + len(enc.encode(fn["name"] + ":" + fn["description"].rstrip(".")))
        props = fn["parameters"]["properties"]
        if props:
            n += 3
            for key, p in props.items():
                n += 3
                if "enum" in p:
                    n -= 3
                    for item in p["enum"]:
                        n += 3 + len(enc.encode(item))
                n += len(enc.encode(f"{key}:{p['type']}:{p['description'].rstrip('.')}"))
    return n + 12


@pytest.mark.parametrize("model,func_init,api_count", [("gpt-4", 10, 105), ("gpt-3.5-turbo", 10, 105),
                                                       ("gpt-4o", 7, 101), ("gpt-4o-mini", 7, 101)])
def test_tools_formula(reference, model, func_init, api_count):
    enc = reference[tiktoken.model.encoding_name_for_model(model)]
    got = count_chat({"messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}, model)
    expected = cookbook_messages(WEATHER_MESSAGES, enc) + cookbook_tools(WEATHER_TOOLS, enc, func_init)
    assert got.tokens == expected == api_count
    assert got.estimated is True  # the formula is approximate in general


def test_legacy_functions_count_like_tools():
    with_tools = count_chat({"messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}, "gpt-4o")
    legacy = count_chat({"messages": WEATHER_MESSAGES,
                         "functions": [WEATHER_TOOLS[0]["function"]]}, "gpt-4o")
    assert legacy.tokens == with_tools.tokens


def test_tool_calls_and_tool_results_counted_and_flagged(reference):
    enc = reference["o200k_base"]
    args = '{"location": "Paris, FR"}'
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_current_weather", "arguments": args}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
    ]
    got = count_chat({"messages": messages}, "gpt-4o")
    base = count_chat({"messages": [messages[0]]}, "gpt-4o").tokens
    call = 3 + len(enc.encode("get_current_weather")) + len(enc.encode(args))
    tool_msg = 3 + len(enc.encode("tool")) + len(enc.encode("18 degrees, sunny"))
    assistant = 3 + len(enc.encode("assistant"))
    assert got.tokens == base + assistant + call + tool_msg
    assert got.estimated is True


# --- images --------------------------------------------------------------------------------

def png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    exif = b"\xff\xe1" + struct.pack(">H", 2 + 3000) + b"\0" * 3000  # large segment before SOF
    sof = b"\xff\xc2" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\0" * 9
    return b"\xff\xd8" + app0 + exif + sof + b"\xff\xda"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\0\0\0"


def webp_vp8x(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (width - 1).to_bytes(3, "little") + \
        (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def webp_vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    body = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + bits.to_bytes(4, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@pytest.mark.parametrize("make", [png, jpeg, gif, webp_vp8x, webp_vp8l])
@pytest.mark.parametrize("size", [(1, 1), (640, 480), (4096, 2048), (1023, 7)])
def test_image_headers(make, size):
    assert image_size(make(*size)) == size
    url = "data:image/x;base64," + base64.b64encode(make(*size) + b"\0" * 64).decode()
    assert data_url_size(url) == size


def test_garbage_image_has_no_size():
    assert image_size(b"not an image at all") is None
    assert data_url_size("data:image/png;base64,!!!!") is None


def image_message(url: str, detail: str | None) -> dict:
    image = {"url": url} if detail is None else {"url": url, "detail": detail}
    return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": image}]}]}


def data_url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


@pytest.mark.parametrize("size,detail,tokens", [
    ((1024, 1024), "high", 765),   # OpenAI's worked example
    ((2048, 4096), "high", 1105),  # OpenAI's worked example
    ((4096, 8192), "auto", 1105),  # first fit into 2048
    ((512, 512), "high", 255),
    ((300, 200), "high", 255),
    ((4096, 8192), "low", 85),
])
def test_image_tokens_gpt4o(size, detail, tokens):
    empty = count_chat({"messages": [{"role": "user", "content": []}]}, "gpt-4o").tokens
    got = count_chat(image_message(data_url(png(*size)), detail), "gpt-4o")
    assert got.tokens - empty == tokens
    assert got.estimated is False


def test_image_other_tile_models():
    assert image_tokens("gpt-4o-mini", "high", (1024, 1024)) == (2833 + 4 * 5667, False)
    assert image_tokens("gpt-4o-mini-2024-07-18", "low", None) == (2833, False)
    assert image_tokens("o1", "high", (512, 512)) == (75 + 150, False)


def test_remote_image_is_estimated():
    empty = count_chat({"messages": [{"role": "user", "content": []}]}, "gpt-4o").tokens
    high = count_chat(image_message("https://example.invalid/cat.png", None), "gpt-4o")
    assert (high.tokens - empty, high.estimated) == (765, True)
    low = count_chat(image_message("https://example.invalid/cat.png", "low"), "gpt-4o")
    assert (low.tokens - empty, low.estimated) == (85, False)


# --- other families, embeddings -------------------------------------------------------------

@pytest.mark.parametrize("model,tokenizer", [
    ("gpt-7-ultra", "estimate:o200k_base"),
    ("o9-preview", "estimate:o200k_base"),
    ("claude-sonnet-4-5", "estimate:bytes/3.5"),
    ("gemini-2.5-pro", "estimate:bytes/4"),
    ("mistral-large-latest", "estimate:o200k_base"),
    ("some-unknown-model", "estimate:bytes/4"),
])
def test_unknown_models_are_flagged(model, tokenizer):
    got = count_text("Bonjour tout le monde, ceci est un test.", model)
    assert got.estimated is True and got.tokenizer == tokenizer and got.tokens > 0
    assert count_chat({"messages": [{"role": "user", "content": "hi"}]}, model).estimated is True


def test_claude_estimate_rule():
    assert count_text("x" * 35, "claude-3-5-haiku").tokens == 10
    assert count_text("x" * 36, "claude-3-5-haiku").tokens == 11
    assert count_text("日本" * 7, "claude-opus-4").tokens == 12  # 42 UTF-8 bytes / 3.5


def test_open_models_exact_with_quicktok():
    quicktok = pytest.importorskip("quicktok")
    text = "Llamas and Qwen: 多语言 tokenization ✓"
    got = count_text(text, "meta-llama/Llama-3.1-8B-Instruct")
    assert (got.tokens, got.estimated, got.tokenizer) == (
        len(quicktok.get_encoding("llama3").encode(text)), False, "llama3")
    got = count_text(text, "Qwen/Qwen2.5-7B-Instruct")
    assert (got.tokens, got.tokenizer) == (len(quicktok.get_encoding("qwen3").encode(text)), "qwen3")


def test_embeddings(reference):
    enc = reference["cl100k_base"]
    model = "text-embedding-3-small"
    assert count_embeddings("hello world", model).tokens == len(enc.encode("hello world"))
    assert count_embeddings(TEXTS[:4], model).tokens == sum(len(enc.encode(t)) for t in TEXTS[:4])
    assert count_embeddings([1, 2, 3], model).tokens == 3
    assert count_embeddings([[1, 2], [3, 4, 5]], model).tokens == 5


def test_concurrent_counting_is_consistent():
    texts = [t * 20 for t in TEXTS]
    expected = [count_text(t, "gpt-4o").tokens for t in texts]
    results: list[list[int]] = []

    def worker():
        results.append([count_text(t, "gpt-4o").tokens for t in texts])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 8


# --- loading: hash checked, offline ------------------------------------------------------------

def test_build_is_offline(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    enc = build_encoding("cl100k_base")
    assert enc.encode("offline") == enc.encode("offline") and enc.name == "cl100k_base"


def _tampered_copy(tmp_path: Path, name: str) -> None:
    lines = gzip.decompress((default_data_dir() / f"{name}.tiktoken.gz").read_bytes()).splitlines()
    token, rank = lines[1000].split()
    lines[1000], lines[1001] = lines[1001].split()[0] + b" " + rank, token + b" " + lines[1001].split()[1]
    (tmp_path / f"{name}.tiktoken.gz").write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))


def test_tampered_vocabulary_is_refused(tmp_path):
    _tampered_copy(tmp_path, "cl100k_base")
    with pytest.raises(TokenizerDataError, match="SHA-256"):
        build_encoding("cl100k_base", data_dir=tmp_path)


def test_untampered_copy_loads(tmp_path):
    (tmp_path / "cl100k_base.tiktoken.gz").write_bytes(
        (default_data_dir() / "cl100k_base.tiktoken.gz").read_bytes())
    assert build_encoding("cl100k_base", data_dir=tmp_path).encode("ok") == \
        build_encoding("cl100k_base").encode("ok")


def test_missing_vocabulary_is_refused(tmp_path):
    with pytest.raises(TokenizerDataError, match="cannot read"):
        build_encoding("o200k_base", data_dir=tmp_path)
    with pytest.raises(TokenizerDataError):
        build_encoding("p50k_base")


def test_chat_framing_follows_each_family_template():
    from aigw.tokens.counting import framing_for
    msgs = {"messages": [{"role": "user", "content": "hi"}]}
    with_sys = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}

    def c(text: str, model: str) -> int:
        return count_text(text, model).tokens

    assert framing_for("gpt-4o").family == "openai"
    assert count_chat(msgs, "gpt-4o").tokens == 3 + c("user", "gpt-4o") + c("hi", "gpt-4o") + 3
    # Llama 3.0: BOS + (4 + role) per message + 4 for the reply header
    m = "meta-llama/Meta-Llama-3-8B-Instruct"
    assert count_chat(msgs, m).tokens == 1 + 4 + c("user", m) + c("hi", m) + 4
    # Llama 3.1+: the template always opens with a dated system turn
    m = "llama-3.1-8b"
    d = c("Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n", m)
    assert d > 10
    user = 4 + c("user", m) + c("hi", m)
    assert count_chat(msgs, m).tokens == 1 + (4 + c("system", m) + d) + user + 4
    assert count_chat(with_sys, m).tokens == 1 + (4 + c("system", m) + c("be brief", m) + d) + user + 4
    # Qwen (ChatML): 4 + role per message, 3 for the reply; Qwen2.5 inserts its default system prompt
    m = "Qwen/Qwen3-8B"
    assert count_chat(msgs, m).tokens == 4 + c("user", m) + c("hi", m) + 3
    q25 = "qwen2.5-7b-instruct"
    assert count_chat(msgs, q25).tokens > count_chat(msgs, m).tokens + 10
    assert count_chat(with_sys, q25).tokens == (4 + c("system", q25) + c("be brief", q25)
                                               + 4 + c("user", q25) + c("hi", q25) + 3)
    # unknown templates: generic ChatML-like framing, flagged estimated
    m = "some-local-gguf"
    got = count_chat(msgs, m)
    assert got.estimated and got.tokens == 1 + 4 + c("user", m) + c("hi", m) + 4
