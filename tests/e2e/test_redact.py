"""Issue 5: ai-redact end to end.

official SDKs / requests -> Kong stand-in -> real plugin server (ai-redact and
the other plugins) -> relay -> mock provider, which records what it received.

* corpus: the seeded generator's checksum-valid items through every request
  shape (chat text, tool-call arguments, tool results, embeddings input,
  Anthropic system/text/tool_use/tool_result); nothing of a redacted item
  reaches the mock, blocked items are refused before any upstream call;
  false positives on clean prose are measured through the gateway;
* restore of placeholders in answers: non-stream and stream, both SDKs, every
  split position of a placeholder, tool-call arguments; mask/hash not restored;
* faults: detector raising, plugin server killed mid-run, malformed and
  oversized bodies, ``fail_open``;
* ai-router's ``data_class_policy`` driven by the findings;
* logs carry counts, never values.

Figures (recall, false positives, throughput) are printed; with
``AIGW_E2E_RESULTS=1`` they are also written to ``bench/results/redact_e2e.json``.
"""
from __future__ import annotations

import collections
import contextlib
import http.server
import importlib.util
import json
import os
import random
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
import requests

from aigw.redact import BUILTIN_ENTITIES

from .conftest import Gateway, add_model, free_port, plugin_config, reference_config, remove_plugin

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("redact_corpus_e2e", ROOT / "tests" / "corpus" / "generate.py")
corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)

ITEMS: list[tuple[str, str, str]] = corpus.generate(seed=1234)
BLOCKED_TYPES = ("aws_access_key", "private_key", "us_ssn")
BATCH = 40
# docs/redact-core.md and tests/unit/test_redact_detect.py: no false finding in clean.txt
MAX_CLEAN_FALSE_POSITIVES = 0
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*?)_(\d+)>")
DIGIT_RUN = re.compile(r"[0-9](?:[0-9 \-.()+/]*[0-9])?")
NOTE_TOOL = {"type": "function", "function": {
    "name": "save_note", "description": "Store a note",
    "parameters": {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"]}}}
ANTHROPIC_NOTE_TOOL = {"name": "save_note", "description": "Store a note",
                       "input_schema": NOTE_TOOL["function"]["parameters"]}
RESULTS: dict[str, Any] = {}
# every gateway this module started: their logs are checked for values at the end
_GATEWAYS: list[Gateway] = []


# ----------------------------------------------------------------- helpers

def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


class Recorded:
    """Everything the mock received, searchable for leaked values."""

    def __init__(self, records: list[dict[str, Any]]):
        self.records = records
        parts = []
        for r in records:
            parts.extend(_strings(r.get("body")))
            parts.extend(_strings(r.get("headers")))
            parts.extend(_strings(r.get("query")))
            parts.append(r.get("path") or "")
        self.text = "\n".join(parts)
        self.raw = orjson.dumps(records).decode()  # the JSON as recorded (tool arguments stay escaped)
        self.digits = "|".join(re.sub(r"\D", "", m.group(0)) for m in DIGIT_RUN.finditer(self.text))

    def leaks(self, entity: str, value: str) -> list[str]:
        """The forms of ``value`` found in what the mock received (empty: nothing leaked)."""
        forms = {value, orjson.dumps(value).decode()[1:-1]}
        if entity == "private_key":  # any line of the key body counts as a leak
            forms |= {line for line in value.splitlines() if len(line) >= 40 and "PRIVATE KEY" not in line}
        if entity == "iban":
            forms.add(value.replace(" ", ""))
        found = [f for f in forms if f in self.text or f in self.raw]
        if entity in ("credit_card", "phone", "us_ssn"):
            digits = re.sub(r"\D", "", value)
            for form in {digits, digits[-8:]}:
                if len(form) >= 7 and form in self.digits:
                    found.append("digits:" + form)
        return found

    def placeholders(self) -> collections.Counter:
        return collections.Counter(m.group(1) for m in PLACEHOLDER.finditer(self.text))


def _settle(gw: Gateway, pred, timeout: float = 5.0) -> bool:
    """Wait until ``pred(logs)`` (log lines are written after the response is sent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred(gw.standin.logs()):
            return True
        time.sleep(0.05)
    return False


def _request_events(logs: str) -> list[dict[str, Any]]:
    out = []
    for line in logs.splitlines():
        if '"aigw.request"' in line and "{" in line:
            with contextlib.suppress(orjson.JSONDecodeError):
                out.append(orjson.loads(line[line.index("{"):]))
    return out


@pytest.fixture(scope="module", autouse=True)
def _stop_gateways():
    yield
    while _GATEWAYS:
        _GATEWAYS.pop().__exit__(None, None, None)
    if os.environ.get("AIGW_E2E_RESULTS") and "recall" in RESULTS:
        out = ROOT / "bench" / "results" / "redact_e2e.json"
        out.write_text(orjson.dumps(RESULTS, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")


def _start(mock, edit, plugins_dir: Path | None = None) -> Gateway:
    doc = reference_config(free_port())
    edit(doc)
    gw = Gateway(mock, doc, plugins_dir=plugins_dir)
    gw.__enter__()
    _GATEWAYS.append(gw)
    return gw


def _chat(gw: Gateway, body: dict[str, Any], session: requests.Session | None = None, **kw) -> requests.Response:
    return (session or requests).post(gw.url + "/v1/chat/completions", headers=gw.headers(),
                                      json=body, timeout=kw.pop("timeout", 30), **kw)


def _error(r: requests.Response) -> dict[str, Any]:
    return r.json()["error"]


def _roomy_token_limits(doc: dict[str, Any]) -> None:
    plugin_config(doc, "ai-tokens")["limits"] = [{"scope": "consumer", "tokens": 100_000_000, "window": "minute"}]
    # the echoes are long: the output reserved (and capped) for requests without max_tokens must cover them
    for name in ("ai-tokens", "ai-cost"):
        plugin_config(doc, name)["default_max_output"] = 60_000


# ------------------------------------------------------------------ corpus

def _corpus_edit(doc: dict[str, Any]) -> None:
    rc = plugin_config(doc, "ai-redact")
    rc["restore"] = True
    rc["actions"] = {**dict.fromkeys(BUILTIN_ENTITIES, "redact"), **dict.fromkeys(BLOCKED_TYPES, "block")}
    # the model never sees a redacted secret: keep the pii/financial rules, let redacted secrets through
    plugin_config(doc, "ai-router")["data_class_policy"] = {"pii": ["onprem", "zdr"], "financial": ["onprem", "zdr"]}
    remove_plugin(doc, "ai-cache")  # every request must reach the mock
    _roomy_token_limits(doc)


@pytest.fixture(scope="module")
def corpus_gw(mock):
    return _start(mock, _corpus_edit)


def _send_redact_batch(gw: Gateway, k: int, batch: list[tuple[str, str, str]], s: requests.Session) -> None:
    """One batch of items through one request shape; checks the answer where it echoes."""
    texts = [t for t, _, _ in batch]
    joined = "\n\n".join(texts)
    kind = k % 6
    if kind == 0:  # plain chat, restored echo
        r = _chat(gw, {"model": "chat", "messages": [{"role": "user", "content": joined}]}, s)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "Echo: " + joined
    elif kind == 1:  # OpenAI SDK, streamed, restored echo
        chunks = gw.openai().chat.completions.create(
            model="chat", stream=True, messages=[{"role": "system", "content": texts[0]},
                                                 {"role": "user", "content": "\n\n".join(texts[1:])}])
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Echo: " + "\n\n".join(texts[1:])
    elif kind == 2:  # tool-call arguments and tool results
        half = len(texts) // 2
        calls = [{"id": f"call_{j}", "type": "function",
                  "function": {"name": "save_note", "arguments": json.dumps({"note": t, "meta": {"list": [t]}})}}
                 for j, t in enumerate(texts[:half])]
        msgs = [{"role": "user", "content": "save these"},
                {"role": "assistant", "content": None, "tool_calls": calls},
                *[{"role": "tool", "tool_call_id": f"call_{j}", "content": t} for j, t in enumerate(texts[half:])],
                {"role": "user", "content": "thanks"}]
        r = _chat(gw, {"model": "chat", "messages": msgs, "tools": [NOTE_TOOL]}, s)
        assert r.status_code == 200, r.text
    elif kind == 3:  # embeddings input
        r = s.post(gw.url + "/v1/embeddings", headers=gw.headers(), timeout=30,
                   json={"model": "text-embedding-3-small", "input": texts})
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]) == len(texts)
    elif kind == 4:  # Anthropic SDK to an Anthropic model: system, text, tool_use, tool_result
        a, b, c, d, e = (texts[i::5] for i in range(5))
        msg = gw.anthropic().messages.create(
            model="claude-sonnet", max_tokens=4000, tools=[ANTHROPIC_NOTE_TOOL],
            system=[{"type": "text", "text": t} for t in a],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": t} for t in b]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_{j}", "name": "save_note",
                                                   "input": {"note": t, "nested": {"again": [t]}}}
                                                  for j, t in enumerate(c)]},
                {"role": "user", "content": [
                    *[{"type": "tool_result", "tool_use_id": f"toolu_{j}",
                       "content": t if j % 2 else [{"type": "text", "text": t}]} for j, t in enumerate(d)],
                    {"type": "text", "text": "\n\n".join(e)}]},
            ])
        assert msg.content[0].text == "Echo: " + "\n\n".join(e)
    else:  # Anthropic SDK to an OpenAI model, streamed, restored echo
        with gw.anthropic().messages.stream(model="chat", max_tokens=4000,
                                            messages=[{"role": "user", "content": joined}]) as st:
            text = "".join(st.text_stream)
        assert text == "Echo: " + joined


def _send_block_batch(gw: Gateway, k: int, batch: list[tuple[str, str, str]],
                      s: requests.Session) -> tuple[int, str]:
    joined = "\n\n".join(t for t, _, _ in batch)
    kind = k % 3
    if kind == 0:
        r = _chat(gw, {"model": "chat", "messages": [{"role": "user", "content": joined}]}, s)
        assert _error(r)["code"] == "sensitive_data_blocked"
        return r.status_code, _error(r)["message"]
    if kind == 1:
        r = s.post(gw.url + "/v1/embeddings", headers=gw.headers(), timeout=30,
                   json={"model": "text-embedding-3-small", "input": [t for t, _, _ in batch]})
        assert _error(r)["code"] == "sensitive_data_blocked"
        return r.status_code, _error(r)["message"]
    with pytest.raises(anthropic.BadRequestError) as ei:
        gw.anthropic().messages.create(model="claude-sonnet", max_tokens=50,
                                       messages=[{"role": "user", "content": joined}])
    return ei.value.status_code, ei.value.body["error"]["message"]


@pytest.fixture(scope="module")
def corpus_run(corpus_gw, mock):
    """Send the whole corpus once; the tests below check different aspects of the run."""
    gw = corpus_gw
    rng = random.Random(5)
    redact_items = [it for it in ITEMS if it[1] not in BLOCKED_TYPES]
    block_items = [it for it in ITEMS if it[1] in BLOCKED_TYPES]
    rng.shuffle(redact_items)
    rng.shuffle(block_items)
    s = requests.Session()

    mock.clear()
    t0 = time.perf_counter()
    batches = [redact_items[i:i + BATCH] for i in range(0, len(redact_items), BATCH)]
    for k, batch in enumerate(batches):
        _send_redact_batch(gw, k, batch, s)
    elapsed = time.perf_counter() - t0
    sent_bytes = sum(len(t.encode()) for t, _, _ in redact_items)
    # all of it again in one request with a short answer: closer to the scan's own throughput
    bulk = "\n\n".join(t for t, _, _ in redact_items)
    t0 = time.perf_counter()
    r = _chat(gw, {"model": "chat", "messages": [{"role": "user", "content": bulk + "\nREPLY:ok"}]}, s)
    bulk_elapsed = time.perf_counter() - t0
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"
    redact_records = mock.requests()

    mock.clear()
    refusals = []
    for k, i in enumerate(range(0, len(block_items), BATCH // 2)):
        batch = block_items[i:i + BATCH // 2] + redact_items[i:i + BATCH // 2]
        rng.shuffle(batch)
        status, message = _send_block_batch(gw, k, batch, s)
        refusals.append((batch, status, message))
    block_records = mock.requests()

    mock.clear()
    clean = corpus.CLEAN_PATH.read_text()
    paragraphs = clean.split("\n\n")
    chunk = max(1, len(paragraphs) // 4)
    clean_refused: list[str] = []
    for i in range(0, len(paragraphs), chunk):
        text = "\n\n".join(paragraphs[i:i + chunk])
        r = _chat(gw, {"model": "chat", "messages": [{"role": "user", "content": text}]}, s)
        if r.status_code != 200:
            clean_refused.append(_error(r)["message"])
        else:
            assert r.json()["choices"][0]["message"]["content"] == "Echo: " + text
    clean_records = mock.requests()
    return {"redact_items": redact_items, "batches": len(batches), "redact_records": redact_records,
            "elapsed": elapsed, "bulk_bytes": len(bulk.encode()), "bulk_elapsed": bulk_elapsed, "sent_bytes": sent_bytes, "refusals": refusals,
            "block_records": block_records, "clean_records": clean_records,
            "clean_refused": clean_refused, "clean_bytes": len(clean.encode())}


def test_corpus_redacted_items_never_reach_the_model(corpus_run):
    run = corpus_run
    items = run["redact_items"]
    assert len(ITEMS) >= 2000 and len(items) >= 1500
    assert {e for _, e, _ in items} == set(BUILTIN_ENTITIES) - set(BLOCKED_TYPES)
    # every batch reached the mock (so "absent" is not vacuous) and carries placeholders
    assert len(run["redact_records"]) == run["batches"] + 1
    rec = Recorded(run["redact_records"])
    tags = rec.placeholders()
    assert sum(tags.values()) >= len(items) * 0.9, tags
    leaked = collections.defaultdict(list)
    for _text, entity, value in items:
        forms = rec.leaks(entity, value)
        if forms:
            leaked[entity].append(forms)
    recall = 1 - sum(map(len, leaked.values())) / len(items)
    per_entity = {e: 1 - len(leaked.get(e, ())) / sum(1 for _, x, _ in items if x == e)
                  for e in sorted({x for _, x, _ in items})}
    RESULTS.update(corpus_items=len(ITEMS), redact_items=len(items), recall=recall, recall_per_entity=per_entity,
                   requests=run["batches"] + 1, sent_bytes=run["sent_bytes"],
                   # informational only (never asserted): includes the mock, echo answers and streams
                   batched_bytes_per_s=round(run["sent_bytes"] / run["elapsed"]),
                   bulk_request_bytes=run["bulk_bytes"],
                   bulk_request_bytes_per_s=round(run["bulk_bytes"] / run["bulk_elapsed"]))
    print(f"\nai-redact e2e recall {recall:.4%} over {len(items)} items in {run['batches'] + 1} requests; "
          f"{run['sent_bytes'] / run['elapsed'] / 1024:.0f} KiB/s batched (echoed, streamed), "
          f"{run['bulk_bytes'] / run['bulk_elapsed'] / 1024:.0f} KiB/s as one {run['bulk_bytes'] // 1024} KiB request")
    assert not leaked, {e: v[:3] for e, v in leaked.items()}


def test_corpus_blocked_items_are_refused_naming_types_only(corpus_run):
    run = corpus_run
    assert run["block_records"] == [], "a request with a blocked item reached the provider"
    assert len(run["refusals"]) >= 20
    for batch, status, message in run["refusals"]:
        assert status == 400
        named = set(message.rsplit(": ", 1)[1].rstrip(".").split(", "))
        assert named == {e for _, e, _ in batch if e in BLOCKED_TYPES}, message
        for _, _, value in batch:
            assert value not in message
    RESULTS["blocked_requests"] = len(run["refusals"])


def test_clean_prose_false_positives_through_the_gateway(corpus_run):
    run = corpus_run
    assert len(run["clean_records"]) + len(run["clean_refused"]) >= 4
    rec = Recorded(run["clean_records"])
    tags = rec.placeholders()
    false_positives = sum(tags.values()) + len(run["clean_refused"])
    RESULTS.update(clean_bytes=run["clean_bytes"], clean_false_positives=false_positives,
                   clean_false_positives_by_type=dict(tags))
    print(f"\nai-redact e2e false positives on clean.txt ({run['clean_bytes']} bytes): {false_positives} {dict(tags)}")
    assert false_positives <= MAX_CLEAN_FALSE_POSITIVES, (tags, run["clean_refused"])


# ----------------------------------------------------------------- restore

def _values(entity: str, n: int) -> list[str]:
    """``n`` distinct checksum-valid values of one entity type from the seeded corpus."""
    out: list[str] = []
    for _, e, v in ITEMS:
        if e == entity and v not in out:
            out.append(v)
        if len(out) == n:
            return out
    raise AssertionError(entity)


HASH_SALT = "e2e-salt"
CARD = "4111 1111 1111 1111"


class ToolEchoProvider(http.server.ThreadingHTTPServer):
    """An OpenAI-compatible test provider that answers every chat request with a call
    to its first tool whose arguments are ``{"note": <last user text>}``: the mock's
    tool calls are fixed, this one echoes placeholders into tool-call arguments.
    Streams split the arguments into 4-character pieces."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ToolEchoHandler)
        self.records: list[dict[str, Any]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _ToolEchoHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # no access log: bodies carry prompts
        pass

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
        self.server.records.append({"path": self.path, "body": body})  # type: ignore[attr-defined]
        text = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        name = body["tools"][0]["function"]["name"]
        args = orjson.dumps({"note": text}).decode()
        call = {"index": 0, "id": "call_echo1", "type": "function", "function": {"name": name, "arguments": args}}
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        base = {"id": "chatcmpl-echo1", "created": 1700000000, "model": body["model"]}
        if not body.get("stream"):
            out = orjson.dumps({**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "finish_reason": "tool_calls",
                 "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = {**base, "object": "chat.completion.chunk"}
        events = [{**chunk, "choices": [{"index": 0, "finish_reason": None, "delta": {
            "role": "assistant", "tool_calls": [{**call, "function": {"name": name, "arguments": ""}}]}}]}]
        events += [{**chunk, "choices": [{"index": 0, "finish_reason": None, "delta": {
            "tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 4]}}]}}]}
            for i in range(0, len(args), 4)]
        events.append({**chunk, "choices": [{"index": 0, "finish_reason": "tool_calls", "delta": {}}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": usage})
        for ev in events:
            self._chunk(b"data: " + orjson.dumps(ev) + b"\n\n")
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def tool_echo():
    srv = ToolEchoProvider()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def restore_gw(mock, tool_echo):
    """The reference config (restore on, data-class policy) plus: ipv4 hashed, private keys
    redacted (so redacted secrets may go to zdr targets), a tool-echo provider, and
    models with one allowed and one disallowed target."""
    def edit(doc: dict[str, Any]) -> None:
        rc = plugin_config(doc, "ai-redact")
        rc["actions"].update(ipv4="hash", private_key="redact")
        rc["hash_salt"] = HASH_SALT
        router = plugin_config(doc, "ai-router")
        router["data_class_policy"]["secret"] = ["zdr"]
        router["providers"].append({"name": "toolecho", "type": "openai_compatible",
                                    "base_url": tool_echo.url + "/v1", "api_key": "toolecho-key"})
        add_model(doc, "tool-echo", [{"provider": "toolecho", "model": "echo-tools", "tags": ["zdr"]}],
                  capabilities=["chat", "stream", "tools"])
        both = [{"provider": "openai", "model": "gpt-4o-mini", "weight": 50, "tags": ["zdr"]},
                {"provider": "mistral", "model": "mistral-small-latest", "weight": 50, "tags": ["eu"]}]
        add_model(doc, "mixed", both, sticky="none")
        add_model(doc, "mixed-sticky", both, sticky="header:x-user-id")
        add_model(doc, "mixed-failing", [{**both[0], "model": "gpt-4o-mini-fault-503"}, both[1]], sticky="none")
        _roomy_token_limits(doc)
    return _start(mock, edit)


def _reply_layout() -> tuple[str, str, dict[str, str]]:
    """A ``REPLY:`` text whose placeholders start at every offset modulo 4 (the mock
    streams 4-character pieces, so every split position of every placeholder occurs),
    with near-misses around them. Returns (original, expected redacted, values)."""
    original, redacted = [], []
    pos = 0
    values: dict[str, str] = {}
    for entity in ("email", "phone", "iban", "us_ssn", "ipv6"):
        for n, value in enumerate(_values(entity, 4), start=1):
            tag = f"<{entity.upper()}_{n}>"
            values[tag] = value
            pad = (n - 1 - pos - 1) % 4  # the placeholder starts at offset n-1 modulo 4
            lead = "w" * pad + " "
            tail = f" a<b <{entity[:2].upper()} ;\n"
            original.append(lead + value + tail)
            redacted.append(lead + tag + tail)
            assert (pos + len(lead)) % 4 == n - 1
            pos += len(lead) + len(tag) + len(tail)
    # an unknown tag stays as it is; a prefix of a known one at the very end is flushed
    end = "typed <EMAIL_9> stays, and <EMAIL_"
    return "".join(original) + end, "".join(redacted) + end, values


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
@pytest.mark.parametrize("model", ["chat", "claude-sonnet"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_restore_puts_originals_back_at_every_split_position(restore_gw, mock, sdk, model, stream):
    original, redacted, values = _reply_layout()
    prompt = f"REPLY:{original}"
    mock.clear()
    if sdk == "openai":
        client = restore_gw.openai()
        msgs = [{"role": "user", "content": prompt}]
        if stream:
            chunks = list(client.chat.completions.create(model=model, messages=msgs, stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            text = client.chat.completions.create(model=model, messages=msgs).choices[0].message.content
    else:
        client = restore_gw.anthropic()
        kw = dict(model=model, max_tokens=2000, messages=[{"role": "user", "content": prompt}])
        if stream:
            with client.messages.stream(**kw) as st:
                text = "".join(st.text_stream)
        else:
            text = client.messages.create(**kw).content[0].text
    assert text == original
    recs = mock.requests()
    assert len(recs) == 1
    body = recs[0]["body"]
    sent = body["messages"][-1]["content"]
    sent = sent if isinstance(sent, str) else "".join(p["text"] for p in sent)
    assert sent == "REPLY:" + redacted
    assert not any(Recorded(recs).leaks(tag.strip("<>").rsplit("_", 1)[0].lower(), v) for tag, v in values.items())


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_mask_and_hash_are_one_way(restore_gw, mock, stream):
    import hashlib
    import hmac
    ip = _values("ipv4", 1)[0]
    email = _values("email", 1)[0]
    prompt = f"card {CARD} from {ip} for {email}"
    hashed = "<IPV4_HASH_" + hmac.new(HASH_SALT.encode(), f"ipv4\x00{ip}".encode(), hashlib.sha256).hexdigest()[:12] + ">"
    mock.clear()
    client = restore_gw.openai()
    msgs = [{"role": "user", "content": prompt}]
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="chat", messages=msgs, stream=True) if c.choices)
    else:
        text = client.chat.completions.create(model="chat", messages=msgs).choices[0].message.content
    # the mock saw the masked card, the hashed address and a placeholder for the email
    assert mock.requests()[-1]["body"]["messages"][0]["content"] == f"card **** **** **** 1111 from {hashed} for <EMAIL_1>"
    # the client gets the email back, but never the card or the address
    assert text == f"Echo: card **** **** **** 1111 from {hashed} for {email}"


def test_cached_answer_is_restored_with_the_new_requests_values(restore_gw, mock):
    """Two prompts that differ only in PII redact to the same text: whatever the cache
    does, each client gets its own value back, never the other's."""
    a, b = _values("email", 2)
    marker = uuid.uuid4().hex
    client = restore_gw.openai()
    first = client.chat.completions.create(model="chat", messages=[
        {"role": "user", "content": f"{marker} mail {a}"}]).choices[0].message.content
    second = client.chat.completions.create(model="chat", messages=[
        {"role": "user", "content": f"{marker} mail {b}"}]).choices[0].message.content
    assert first == f"Echo: {marker} mail {a}"
    assert second == f"Echo: {marker} mail {b}"


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_tool_call_arguments_are_restored(restore_gw, tool_echo, sdk, stream):
    email, phone = _values("email", 1)[0], _values("phone", 1)[0]
    key = _values("private_key", 1)[0]
    note = f"write to {email} or call {phone}; deploy key:\n{key}\nthanks"
    tool_echo.records.clear()
    if sdk == "openai":
        client = restore_gw.openai()
        kw = dict(model="tool-echo", tools=[NOTE_TOOL], messages=[{"role": "user", "content": note}])
        if stream:
            chunks = list(client.chat.completions.create(stream=True, **kw))
            args = "".join(tc.function.arguments or "" for c in chunks if c.choices
                           for tc in (c.choices[0].delta.tool_calls or []))
        else:
            args = client.chat.completions.create(**kw).choices[0].message.tool_calls[0].function.arguments
        assert json.loads(args) == {"note": note}
    else:
        client = restore_gw.anthropic()
        kw = dict(model="tool-echo", max_tokens=500, tools=[ANTHROPIC_NOTE_TOOL],
                  messages=[{"role": "user", "content": note}])
        if stream:
            with client.messages.stream(**kw) as st:
                msg = st.get_final_message()
        else:
            msg = client.messages.create(**kw)
        block = next(b for b in msg.content if b.type == "tool_use")
        assert block.input == {"note": note}
    # the provider saw placeholders only
    assert len(tool_echo.records) == 1
    rec = Recorded(tool_echo.records)
    assert not rec.leaks("email", email) and not rec.leaks("phone", phone) and not rec.leaks("private_key", key)
    assert "<EMAIL_1>" in rec.text and "<PRIVATE_KEY_1>" in rec.text


# ------------------------------------------------------------------ faults

TRIGGER = "EXPLODE-THE-DETECTOR"  # tests/e2e/redact_plugins/redact-fault-injector.py


@pytest.fixture(scope="module")
def fault_plugins_dir(tmp_path_factory) -> Path:
    """The real plugins plus the fault injector (symlinks, as Kong would see one directory)."""
    pdir = tmp_path_factory.mktemp("redact-plugins")
    for p in (ROOT / "plugins").glob("*.py"):
        (pdir / p.name).symlink_to(p)
    for p in (Path(__file__).parent / "redact_plugins").glob("*.py"):
        (pdir / p.name).symlink_to(p)
    return pdir


def _fault_edit(fail_open: bool):
    def edit(doc: dict[str, Any]) -> None:
        rc = plugin_config(doc, "ai-redact")
        rc["fail_open"] = fail_open
        rc["max_scan_bytes"] = 256 * 1024
        remove_plugin(doc, "ai-cache")
    return edit


@pytest.fixture(scope="module")
def fault_gw(mock, fault_plugins_dir):
    return _start(mock, _fault_edit(False), plugins_dir=fault_plugins_dir)


def test_detector_failure_refuses_the_request_and_nothing_reaches_the_model(fault_gw, mock):
    email = _values("email", 3)[2]
    mock.clear()
    r = _chat(fault_gw, {"model": "chat", "messages": [{"role": "user", "content": f"{TRIGGER} mail {email}"}]})
    assert r.status_code == 503
    assert _error(r)["code"] == "redaction_unavailable"
    assert email not in r.text
    with pytest.raises(anthropic.InternalServerError) as ei:  # same refusal in the Anthropic format
        fault_gw.anthropic().messages.create(model="chat", max_tokens=20,
                                             messages=[{"role": "user", "content": f"{TRIGGER} {email}"}])
    assert ei.value.status_code == 503 and ei.value.body["error"]["type"] == "overloaded_error"
    assert mock.requests() == []
    # control: the same gateway redacts and forwards a request without the trigger
    r = _chat(fault_gw, {"model": "chat", "messages": [{"role": "user", "content": f"mail {email}"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == f"Echo: mail {email}"
    assert [rec["body"]["messages"][0]["content"] for rec in mock.requests()] == ["mail <EMAIL_1>"]
    assert _settle(fault_gw, lambda logs: "detection failed (RuntimeError)" in logs)
    assert email not in fault_gw.standin.logs()


def test_fail_open_forwards_the_original_request_and_says_so(mock, fault_plugins_dir):
    """Documented (docs/plugins/ai-redact.md, fail_open): a failed scan forwards the
    original, unredacted request and logs aigw.redaction.failed_open."""
    gw = _start(mock, _fault_edit(True), plugins_dir=fault_plugins_dir)
    try:
        email = _values("email", 4)[3]
        mock.clear()
        r = _chat(gw, {"model": "chat", "messages": [{"role": "user", "content": f"{TRIGGER} {email}"}]})
        assert r.status_code == 200
        assert mock.requests()[-1]["body"]["messages"][0]["content"] == f"{TRIGGER} {email}"
        assert _settle(gw, lambda logs: any(e.get("aigw.redaction.failed_open") is True
                                            for e in _request_events(logs)))
        # size limits still hold with fail_open
        mock.clear()
        r = _chat(gw, {"model": "chat", "messages": [{"role": "user", "content": "x " * 200_000}]})
        assert r.status_code == 413 and mock.requests() == []
    finally:
        _GATEWAYS.remove(gw)
        gw.__exit__(None, None, None)


def test_malformed_and_oversized_bodies_get_clean_4xx(gateway, fault_gw, mock):
    email = _values("email", 5)[4]
    h = gateway.headers()
    mock.clear()
    for raw in (b'{"model": "chat", "messages": [{"role": "user", "content": "' + email.encode() + b'"',
                b"[1, 2, 3]", b"", b"\xff\xfe not json"):
        r = requests.post(gateway.url + "/v1/chat/completions", headers=h, data=raw, timeout=30)
        assert r.status_code == 400, (raw, r.text)
        assert _error(r)["code"] == "invalid_json" and email not in r.text
    r = requests.post(gateway.url + "/v1/messages", headers=h, data=b'{"model": ', timeout=30)
    assert r.status_code == 400 and r.json()["type"] == "error"
    big = f"mail {email} " + "lorem ipsum " * 30_000  # ~360 KB
    # over this gateway's max_scan_bytes (256 KiB): refused by ai-redact before scanning
    r = _chat(fault_gw, {"model": "chat", "messages": [{"role": "user", "content": big}]})
    assert r.status_code == 413 and _error(r)["code"] == "request_too_large"
    # over ai-router's max_body_bytes (1 MiB) but under the default scan limit (4 MiB)
    r = _chat(gateway, {"model": "chat", "messages": [{"role": "user", "content": big * 4}]})
    assert r.status_code == 413 and _error(r)["code"] == "request_too_large"
    # over both
    r = _chat(gateway, {"model": "chat", "messages": [{"role": "user", "content": big * 13}]})
    assert r.status_code == 413 and _error(r)["code"] == "request_too_large"
    assert email not in r.text
    assert mock.requests() == []


def test_plugin_server_killed_mid_run_never_lets_pii_through(mock):
    gw = _start(mock, lambda doc: (remove_plugin(doc, "ai-cache"), _roomy_token_limits(doc)))
    mock.clear()
    stop = threading.Event()
    # (request number, email, status or the client-side exception name, answer as expected)
    outcomes: list[tuple[int, str, int | str, bool]] = []

    def loop() -> None:
        s = requests.Session()
        i = 0
        while not stop.is_set():
            i += 1
            email = f"kill{i}.{uuid.uuid4().hex[:6]}@example.com"
            prompt = f"req-{i} mail {email}"
            try:
                r = _chat(gw, {"model": "chat", "messages": [{"role": "user", "content": prompt}]}, s, timeout=15)
                status: int | str = r.status_code
                ok = status != 200 or r.json()["choices"][0]["message"]["content"] == "Echo: " + prompt
            except requests.RequestException as exc:
                status, ok = type(exc).__name__, True
                s = requests.Session()
            outcomes.append((i, email, status, ok))
            if status != 200:
                time.sleep(0.01)  # the plugin server is down: do not spin

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not any(o[2] == 200 for o in outcomes) and time.monotonic() < deadline:
            time.sleep(0.02)
        old = gw.standin.pluginserver_pid()
        assert old
        os.kill(old, signal.SIGKILL)
        killed_at = len(outcomes)
        # wait for the respawn and for requests that succeed again
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if sum(1 for o in outcomes[killed_at:] if o[2] == 200) >= 5 and gw.standin.pluginserver_pid() not in (None, old):
                break
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(20)
    assert not t.is_alive()
    summary = collections.Counter(str(o[2]) for o in outcomes)
    RESULTS["kill_run"] = dict(summary)
    print(f"\nplugin server kill: outcomes {dict(summary)}")
    assert gw.standin.pluginserver_pid() not in (None, old)
    assert sum(1 for o in outcomes[killed_at:] if o[2] == 200) >= 5, (killed_at, outcomes)
    # every request either failed with an error or reached the mock redacted
    rec = Recorded(mock.requests())
    # a request the relay was writing when it was killed may arrive cut off (no JSON body)
    prompts = {r["body"]["messages"][0]["content"] for r in mock.requests() if isinstance(r["body"], dict)}
    for i, email, status, ok in outcomes:
        assert not rec.leaks("email", email), (i, status)
        assert ok, (i, status)
        assert status == 200 or isinstance(status, str) or status >= 500, (i, status)
        if status == 200:
            assert f"req-{i} mail <EMAIL_1>" in prompts


# ------------------------------------------------------------ data classes

def test_pii_only_goes_to_models_cleared_for_it(gateway, mock):
    """Reference kong.yml: pii, financial and (redacted) secrets only to onprem/zdr targets."""
    email = _values("email", 6)[5]
    iban = _values("iban", 1)[0]
    s = requests.Session()
    for model in ("chat", "claude-sonnet"):  # every target tagged zdr
        r = _chat(gateway, {"model": model, "messages": [{"role": "user", "content": f"{uuid.uuid4().hex} {email}"}]}, s)
        assert r.status_code == 200, r.text
    mock.clear()
    for model, content, classes in (("mistral-small", f"mail {email}", "pii"),
                                    ("mistral-small", f"pay to {iban}", "financial, pii"),
                                    ("gemini-flash", f"mail {email}", "pii"),
                                    ("mistral-small", "token ghp_" + "a1B2" * 9, "secret")):
        r = _chat(gateway, {"model": model, "messages": [{"role": "user", "content": content}]}, s)
        assert r.status_code == 403, (model, r.text)
        assert _error(r)["code"] == "data_class_not_allowed"
        assert _error(r)["message"].endswith(f"may not receive data of class: {classes}")
        assert email not in r.text and iban not in r.text
    with pytest.raises(anthropic.PermissionDeniedError):
        gateway.anthropic().messages.create(model="mistral-small", max_tokens=20,
                                            messages=[{"role": "user", "content": f"mail {email}"}])
    assert mock.requests() == []  # refused before any upstream connection
    # a zdr model may receive a request that contained a (redacted) secret
    r = _chat(gateway, {"model": "chat", "messages": [{"role": "user", "content": "token ghp_" + "a1B2" * 9}]}, s)
    assert r.status_code == 200, r.text
    assert "ghp_" + "a1B2" * 9 not in str(mock.requests())
    mock.clear()
    # control: the same model serves a prompt without personal data
    r = _chat(gateway, {"model": "mistral-small", "messages": [{"role": "user", "content": f"hi {uuid.uuid4().hex}"}]}, s)
    assert r.status_code == 200 and r.headers["x-ai-provider"] == "mistral"


def test_mixed_model_sends_pii_only_to_the_allowed_target(restore_gw, mock):
    s = requests.Session()
    email = _values("email", 7)[6]

    def ask(model: str, content: str, **headers: str) -> requests.Response:
        return s.post(restore_gw.url + "/v1/chat/completions", headers={**restore_gw.headers(), **headers},
                      timeout=30, json={"model": model, "messages": [{"role": "user", "content": content}]})

    pii = collections.Counter(ask("mixed", f"{uuid.uuid4().hex} mail {email}").headers["x-ai-provider"]
                              for _ in range(20))
    clean = collections.Counter(ask("mixed", f"{uuid.uuid4().hex} hello").headers["x-ai-provider"]
                                for _ in range(30))
    assert pii == {"openai": 20}
    assert set(clean) == {"openai", "mistral"}, clean
    # stickiness does not override the policy: a user stuck to the eu target still gets the zdr one for PII
    stuck = next(u for u in (f"user-{i}" for i in range(100))
                 if ask("mixed-sticky", f"{uuid.uuid4().hex} hi", **{"x-user-id": u}).headers["x-ai-provider"] == "mistral")
    r = ask("mixed-sticky", f"{uuid.uuid4().hex} mail {email}", **{"x-user-id": stuck})
    assert r.status_code == 200 and r.headers["x-ai-provider"] == "openai"
    # failover never crosses the policy: the allowed target fails, the disallowed one is not tried
    mock.clear()
    r = ask("mixed-failing", f"{uuid.uuid4().hex} mail {email}")
    assert r.status_code == 503, r.text
    assert {rec["body"]["model"] for rec in mock.requests()} == {"gpt-4o-mini-fault-503"}
    assert not Recorded(mock.requests()).leaks("email", email)
    r = ask("mixed-failing", f"{uuid.uuid4().hex} hello")
    assert r.status_code == 200 and r.headers["x-ai-provider"] == "mistral"


# -------------------------------------------------------------------- logs

def test_logs_carry_counts_never_values(corpus_run, corpus_gw, gateway):
    run = corpus_run
    n_requests = run["batches"] + len(run["refusals"])
    assert _settle(corpus_gw, lambda logs: sum("aigw.redaction.counts" in e for e in _request_events(logs))
                   >= n_requests, timeout=10)
    events = [e for e in _request_events(corpus_gw.standin.logs()) if "aigw.redaction.counts" in e]
    for e in events:
        counts = e["aigw.redaction.counts"]
        assert set(counts) <= set(BUILTIN_ENTITIES) and all(isinstance(v, int) and v > 0 for v in counts.values())
    # blocked requests are logged with their counts too
    refused = [e for e in events if e["http.response.status_code"] == 400]
    assert len(refused) == len(run["refusals"])
    assert all(set(e["aigw.redaction.counts"]) & set(BLOCKED_TYPES) for e in refused)
    assert sum(sum(e["aigw.redaction.counts"].values()) for e in events if e["http.response.status_code"] == 200) \
        >= len(run["redact_items"])
    # no value of the corpus, nor any line of a private key, in any gateway's log
    forms = {v for _, _, v in ITEMS}
    forms |= {line for _, e, v in ITEMS if e == "private_key" for line in v.splitlines() if len(line) >= 40}
    for gw in [*_GATEWAYS, gateway]:
        logs = gw.standin.logs()
        assert logs
        leaked = [f for f in forms if f in logs]
        assert not leaked, leaked[:3]


# ------------------------------------------------------------------ issue 12: every field x evasion x category

EV_CATEGORIES = corpus.EVASION_ENTITIES
SPLIT = "split"  # a field whose value is cut in half over two adjacent parts/blocks/messages


def _evasion_edit(doc: dict[str, Any]) -> None:
    _corpus_edit(doc)
    plugin_config(doc, "ai-redact")["actions"] = {"default": "redact"}


@pytest.fixture(scope="module")
def evasion_gw(mock):
    return _start(mock, _evasion_edit)


class _Seeds:
    """Seeded values, one per (api, field, evasion, category), each in a sentence."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.values: list[tuple[str, str, str, str, str]] = []  # (api, field, evasion, category, value)

    def texts(self, api: str, field: str, evasion: str) -> list[str]:
        out = []
        for category in EV_CATEGORIES:
            value = corpus.GENERATORS[category](self.rng)
            self.values.append((api, field, evasion, category, value))
            template = corpus._TEMPLATES[self.rng.randrange(len(corpus._TEMPLATES))]
            out.append(template.format(v=corpus.evade(category, value, evasion, self.rng),
                                       label=self.rng.choice(corpus._LABELS[category])))
        return out

    def halves(self, api: str, evasion: str) -> list[tuple[str, str]]:
        """Each value cut in two, each half evaded on its own (an escape is never cut)."""
        out = []
        for category in EV_CATEGORIES:
            value = corpus.GENERATORS[category](self.rng)
            self.values.append((api, SPLIT, evasion, category, value))
            cut = len(value) // 2
            a = corpus.evade(category, value[:cut], evasion, self.rng) if evasion != "line_breaks" else value[:cut]
            b = corpus.evade(category, value[cut:], evasion, self.rng) if evasion != "line_breaks" else value[cut:]
            out.append((f"see {a}", f"{b} thanks"))
        return out


def _schema(t: list[str]) -> dict[str, Any]:
    """Seeded texts in every string place of a JSON Schema (the model reads all of it)."""
    return {"type": "object", "title": t[0], "description": t[1],
            "properties": {t[2]: {"type": "string", "description": t[3], "enum": [t[4], t[5]],
                                  "default": t[6], "examples": [t[7]], "const": t[8], "pattern": t[9]},
                           "n": {"type": "integer", "description": t[10]}}}


def _chat_fields(seeds: _Seeds, ev: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(SDK keyword arguments, extra_body, last user text) with seeded text in every field."""
    f = {name: seeds.texts("chat", name, ev) for name in (
        "system", "developer_parts", "user_name", "assistant", "tool_args", "tool_result",
        "tool_description", "tool_schema", "response_schema", "response_description", "stop", "user",
        "metadata", "unknown", "last")}
    halves = seeds.halves("chat", ev)
    j = "\n\n".join
    msgs = [
        {"role": "system", "content": j(f["system"])},
        {"role": "developer", "content": [{"type": "text", "text": t} for t in f["developer_parts"]]},
        {"role": "user", "name": j(f["user_name"]), "content": "hello"},
        # split values: over two text parts, and over two consecutive messages
        {"role": "user", "content": [p for a, b in halves[:6] for p in
                                     ({"type": "text", "text": a}, {"type": "text", "text": b})]},
        *[m for a, b in halves[6:] for m in ({"role": "user", "content": a}, {"role": "user", "content": b})],
        {"role": "assistant", "content": j(f["assistant"]), "tool_calls": [
            {"id": f"call_{k}", "type": "function",
             "function": {"name": "save_note", "arguments": json.dumps({"note": t, t: [t]})}}
            for k, t in enumerate(f["tool_args"])]},
        *[{"role": "tool", "tool_call_id": f"call_{k}", "content": t} for k, t in enumerate(f["tool_result"])],
        {"role": "user", "content": j(f["last"])},
    ]
    kw = {"messages": msgs, "stop": f["stop"][:4], "user": j(f["user"]),
          "metadata": {"ticket": j(f["metadata"][:6]), j(f["metadata"][6:]): "key"},
          "tools": [{"type": "function", "function": {"name": "save_note", "description": j(f["tool_description"]),
                                                      "parameters": _schema(f["tool_schema"])}}],
          "response_format": {"type": "json_schema", "json_schema": {
              "name": "answer", "description": j(f["response_description"]), "schema": _schema(f["response_schema"])}}}
    extra = {"stop": f["stop"], "x_unknown_field": {"notes": f["unknown"]}}
    return kw, extra, j(f["last"])


def _anthropic_fields(seeds: _Seeds, ev: str, api: str) -> tuple[dict[str, Any], str]:
    f = {name: seeds.texts(api, name, ev) for name in (
        "system", "assistant", "tool_input", "tool_result", "tool_result_blocks", "tool_description",
        "input_schema", "stop_sequences", "metadata", "last")}
    halves = seeds.halves(api, ev)
    j = "\n\n".join
    kw = {
        "system": [{"type": "text", "text": t} for t in f["system"]],
        "stop_sequences": f["stop_sequences"], "metadata": {"user_id": j(f["metadata"])},
        "tools": [{"name": "save_note", "description": j(f["tool_description"]),
                   "input_schema": _schema(f["input_schema"])}],
        "messages": [
            {"role": "user", "content": [b for a, c in halves for b in
                                         ({"type": "text", "text": a}, {"type": "text", "text": c})]},
            {"role": "assistant", "content": [
                {"type": "text", "text": j(f["assistant"])},
                *[{"type": "tool_use", "id": f"toolu_{k}", "name": "save_note", "input": {"note": t, t: {"x": [t]}}}
                  for k, t in enumerate(f["tool_input"])]]},
            {"role": "user", "content": [
                *[{"type": "tool_result", "tool_use_id": f"toolu_{k}",
                   "content": t if k % 2 else [{"type": "text", "text": t},
                                               {"type": "text", "text": f["tool_result_blocks"][k]}]}
                  for k, t in enumerate(f["tool_result"])],
                {"type": "text", "text": j(f["last"])}]},
        ]}
    return kw, j(f["last"])


@pytest.fixture(scope="module")
def evasion_run(evasion_gw, mock):
    gw = evasion_gw
    seeds = _Seeds(12)
    oa, an = gw.openai(), gw.anthropic()
    s = requests.Session()
    mock.clear()
    sent = 0
    for _k, ev in enumerate(corpus.EVASIONS):
        for stream in (False, True):
            kw, extra, last = _chat_fields(seeds, ev)
            if stream:
                chunks = oa.chat.completions.create(model="chat", stream=True, extra_body=extra, **kw)
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                text = oa.chat.completions.create(model="chat", extra_body=extra, **kw).choices[0].message.content
            assert text == "Echo: " + last  # restore gives the client its own text back
            for model, api in (("claude-sonnet", "anthropic"), ("chat", "anthropic_to_openai")):
                kw, last = _anthropic_fields(seeds, ev, api)
                if stream:
                    with an.messages.stream(model=model, max_tokens=1000, **kw) as st:
                        text = "".join(st.text_stream)
                else:
                    text = an.messages.create(model=model, max_tokens=1000, **kw).content[0].text
                assert text == "Echo: " + last, (model, ev)
            sent += 3
        inputs = seeds.texts("embeddings", "input", ev)
        r = s.post(gw.url + "/v1/embeddings", headers=gw.headers(), timeout=30, json={
            "model": "text-embedding-3-small", "input": inputs, "user": "\n\n".join(seeds.texts("embeddings", "user", ev)),
            "x_unknown_field": seeds.texts("embeddings", "unknown", ev)})
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]) == len(inputs)
        sent += 1
    return {"records": mock.requests(), "sent": sent, "values": seeds.values}


def test_no_seeded_value_reaches_the_provider_in_any_field_evasion_or_category(evasion_run):
    run = evasion_run
    assert len(run["records"]) == run["sent"]  # every request reached the recording upstream
    rec = Recorded(run["records"])
    seen = corpus.compact(corpus.reveal(rec.text)) + "|" + corpus.compact(corpus.reveal(rec.raw))
    values = run["values"]
    combos = {(a, f, e, c) for a, f, e, c, _ in values}
    # every field x every evasion x every category, for chat, Anthropic (both targets), embeddings
    assert len({c for _, _, _, c in combos}) == len(EV_CATEGORIES)
    assert len({e for _, _, e, _ in combos}) == len(corpus.EVASIONS)
    assert {a for a, _, _, _ in combos} == {"chat", "anthropic", "anthropic_to_openai", "embeddings"}
    assert len(values) >= 3000, len(values)
    leaked = []
    for api, field, ev, category, value in values:
        if category == "private_key":
            body = [ln for ln in value.splitlines() if "PRIVATE KEY" not in ln]
            if any(len(ln) >= 16 and corpus.compact(ln) in seen for ln in body):
                leaked.append((api, field, ev, category))
        else:
            want = corpus.compact(value)
            # a half of a split value that stayed readable counts too (long halves only)
            if want in seen:
                leaked.append((api, field, ev, category))
    assert not leaked, f"{len(leaked)} of {len(values)} seeded values reached the provider: {leaked[:20]}"
    assert sum(rec.placeholders().values()) >= len(values) * 0.9
    RESULTS["evasion_matrix"] = {"values": len(values), "requests": run["sent"], "leaked": len(leaked)}
    print(f"\nissue 12 matrix: {len(values)} seeded values in {run['sent']} requests, {len(leaked)} at the upstream")


def test_bad_shapes_are_a_400_in_the_api_format_and_never_reach_the_model(evasion_gw, mock):
    gw = evasion_gw
    email = "shape.check@example.com"
    mock.clear()
    bad_chat = [
        [{"role": "user", "content": [{"type": "text"}]}],                       # text part without text
        [{"role": "user", "content": [{"type": ["text"], "text": email}]}],      # type not a string
        [{"role": "user", "content": [{"type": "text", "text": 5}]}],
        [{"role": "user", "content": [email]}],                                  # part not an object
        [{"role": 7, "content": email}],
    ]
    for msgs in bad_chat:
        r = _chat(gw, {"model": "chat", "messages": msgs})
        assert r.status_code == 400, (msgs, r.text)
        assert _error(r)["code"] == "invalid_request" and email not in r.text
    bad_anthropic = [
        [{"role": "user", "content": [{"type": "text"}]}],
        [{"role": "user", "content": [{"type": {"x": 1}, "text": email}]}],
        [{"role": "user", "content": [{"type": "text", "text": ["a", email]}]}],
    ]
    h = gw.headers()
    for msgs in bad_anthropic:
        r = requests.post(gw.url + "/v1/messages", headers=h, timeout=30,
                          json={"model": "claude-sonnet", "max_tokens": 10, "messages": msgs})
        assert r.status_code == 400, (msgs, r.text)
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    r = requests.post(gw.url + "/v1/embeddings", headers=h, timeout=30,
                      json={"model": "text-embedding-3-small", "input": [email, {"x": email}]})
    assert r.status_code == 400 and email not in r.text
    assert mock.requests() == []


def test_huge_message_counts_are_scanned_or_refused_with_a_4xx(evasion_gw, mock):
    gw = evasion_gw
    mock.clear()
    # 2,048 short messages (the most a request may carry, as OpenAI's API): scanned in full,
    # the last one's address redacted
    msgs = [{"role": "user", "content": f"m{i}"} for i in range(2048)]
    msgs[-1]["content"] = "mail huge.count@example.com REPLY:ok"
    r = _chat(gw, {"model": "chat", "messages": msgs}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    recs = mock.requests()
    assert len(recs) == 1 and "huge.count@example.com" not in orjson.dumps(recs[0]["body"]).decode()
    # 12,000 messages: a clear 400 before any scan, nothing sent
    mock.clear()
    msgs = [{"role": "user", "content": f"m{i}"} for i in range(12_000)]
    r = _chat(gw, {"model": "chat", "messages": msgs}, timeout=60)
    assert r.status_code == 400 and _error(r)["param"] == "messages", r.text[:300]
    assert mock.requests() == []
    # more strings than the scan budget allows: a clear 413, not a 503
    mock.clear()
    r = requests.post(gw.url + "/v1/embeddings", headers=gw.headers(), timeout=60,
                      json={"model": "text-embedding-3-small", "input": ["a"] * 205_000})  # > 200k strings, < max_body_bytes
    assert r.status_code == 413, r.text[:300]
    assert _error(r)["code"] == "redact_scan_limit"
    assert mock.requests() == []
