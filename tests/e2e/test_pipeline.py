"""An extra stage plugged into the pipeline through its public interface only.

``tests/e2e/pipeline_plugins/ai-stamp.py`` is a ``Stage`` (aigw/pipeline.py) with its own
typed context slice, turned into a Kong plugin by ``kong_plugin`` like the five real
ones, and configured on the reference route: the relay is not edited and does not know
it. Through the stand-in and the real plugin server it must see every answer (header,
stream items, final usage chunk) and finish exactly once however the request ends.
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import requests

from .conftest import ROOT, add_model, plugin_config, service

STAMP_DIR = Path(__file__).parent / "pipeline_plugins"


@pytest.fixture(scope="module")
def stamp_plugins_dir(tmp_path_factory) -> Path:
    """The real plugins plus ai-stamp (symlinks, as Kong would see one directory)."""
    pdir = tmp_path_factory.mktemp("stamp-plugins")
    for p in [*(ROOT / "plugins").glob("*.py"), *STAMP_DIR.glob("*.py")]:
        (pdir / p.name).symlink_to(p)
    return pdir


def _edit(upper: bool):
    def edit(doc):
        service(doc)["plugins"].append({"name": "ai-stamp", "config": {"tag": "blue", "upper": upper}})
        plugin_config(doc, "ai-tokens")["limits"] = []
        plugin_config(doc, "ai-cost")["budgets"] = []
        add_model(doc, "stamp-400", [{"provider": "openai", "model": "gpt-fault-400"}])
        add_model(doc, "stamp-cut", [{"provider": "openai", "model": "gpt-fault-cut"}])
        add_model(doc, "stamp-slow", [{"provider": "openai", "model": "gpt-stream-delay-300"}])
    return edit


@pytest.fixture(scope="module")
def stamped(mock, stamp_plugins_dir):
    from .conftest import Gateway, free_port, reference_config
    doc = reference_config(free_port())
    _edit(False)(doc)
    with Gateway(mock, doc, plugins_dir=stamp_plugins_dir) as gw:
        yield gw


def _mark() -> str:
    return uuid.uuid4().hex[:12]


def _post(gw, mark: str, stream: bool = False, model: str = "chat", text: str = "REPLY:one two three four five",
          headers: dict[str, str] | None = None, content: str | None = None, **body):
    return requests.post(gw.url + "/v1/chat/completions", stream=stream, timeout=30,
                         headers={**gw.headers(), "X-Stamp-Mark": mark, **(headers or {})},
                         json={"model": model, "stream": stream, "temperature": 0.7,
                               "messages": [{"role": "user", "content": content or f"{text} {mark}"}], **body})


def _finish_lines(gw, mark: str, timeout: float = 5.0, settle: float = 0.3) -> list[dict[str, str]]:
    """The stage's finish-hook lines for one request (waits for the first, then a little
    longer so that a second one, if the engine ever ran the hook twice, shows up too)."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        found = [dict(kv.split("=", 1) for kv in line.split("aigw-stamp ", 1)[1].split())
                 for line in gw.standin.logs().splitlines() if f"aigw-stamp mark={mark} " in line]
        if found:
            time.sleep(settle)
            return [dict(kv.split("=", 1) for kv in line.split("aigw-stamp ", 1)[1].split())
                    for line in gw.standin.logs().splitlines() if f"aigw-stamp mark={mark} " in line]
        time.sleep(0.05)
    return found


def _events(r) -> list[dict]:
    out = []
    for line in r.iter_lines():
        if line.startswith(b"data: {"):
            out.append(json.loads(line[6:]))
    return out


def test_stream_items_pass_the_stage_and_it_finishes_once(stamped):
    mark = _mark()
    r = _post(stamped, mark, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and r.headers["X-Stamp"] == "blue"
    events = _events(r)
    final = events[-1]
    items = [e for e in events if e.get("choices")]
    # the stage saw exactly the items the client got, and its trailer rides on the usage chunk
    assert final["choices"] == [] and final["stamp_chunks"] == len(items) > 1
    assert "".join(ch["delta"].get("content") or "" for e in items for ch in e["choices"]) \
        == f"one two three four five {mark}"
    assert final["usage"]["total_tokens"] > 0 and "cost" in final  # the real stages still ran
    lines = _finish_lines(stamped, mark)
    assert len(lines) == 1 and lines[0]["status"] == "200" and lines[0]["finished"] == "1"
    assert lines[0]["chunks"] == str(len(items))


def test_non_stream_answer_gets_the_header_and_one_finish(stamped):
    mark = _mark()
    r = _post(stamped, mark)
    assert r.status_code == 200 and r.headers["X-Stamp"] == "blue"
    assert r.headers["X-AI-Total-Tokens"] and r.headers["X-AI-Cost-USD"]
    lines = _finish_lines(stamped, mark)
    assert [(x["status"], x["chunks"], x["finished"]) for x in lines] == [("200", "0", "1")]


def test_provider_error_is_stamped_and_finishes_once(stamped):
    mark = _mark()
    r = _post(stamped, mark, model="stamp-400")
    assert r.status_code == 400 and r.headers["X-Stamp"] == "blue"
    assert r.json()["error"]["code"] == "provider_error"
    lines = _finish_lines(stamped, mark)
    assert [(x["status"], x["error"], x["finished"]) for x in lines] == [("400", "provider_error", "1")]


def test_broken_stream_finishes_once(stamped):
    mark = _mark()
    r = _post(stamped, mark, stream=True, model="stamp-cut")
    assert r.status_code == 200
    events = _events(r)
    assert events[-1]["error"]["code"] == "stream_error"
    lines = _finish_lines(stamped, mark)
    assert len(lines) == 1 and lines[0]["error"] == "stream_broken" and lines[0]["finished"] == "1"
    assert int(lines[0]["chunks"]) >= 1


def test_client_abort_finishes_once(stamped):
    mark = _mark()
    r = _post(stamped, mark, stream=True, model="stamp-slow",
              text="REPLY:" + " ".join(f"w{i}" for i in range(60)))
    assert r.status_code == 200
    lines_iter = r.iter_lines()
    assert any(line.startswith(b"data: {") for line in lines_iter)  # the first item arrived at once
    r.close()  # the client goes away mid-stream
    lines = _finish_lines(stamped, mark, timeout=10)
    assert len(lines) == 1 and lines[0]["status"] == "499" and lines[0]["error"] == "client_disconnected"


def test_early_answer_from_the_cache_passes_the_stage(stamped):
    mark = _mark()
    first = _post(stamped, mark, temperature=0)
    assert first.status_code == 200 and first.headers["X-Cache-Status"] == "Miss"
    deadline = time.monotonic() + 5
    while True:  # the miss is stored after its body went out
        mark2 = _mark()
        r = _post(stamped, mark2, stream=True, temperature=0, content=f"REPLY:one two three four five {mark}",
                  stream_options={"include_usage": True})
        if r.headers.get("X-Cache-Status") == "Hit" or time.monotonic() > deadline:
            break
        r.close()
    assert r.headers["X-Cache-Status"] == "Hit" and r.headers["X-Stamp"] == "blue"
    assert r.headers["X-AI-Tokens-Cached"] == "true"  # the usage of a replay is known in the head
    events = _events(r)
    assert events[-1]["cached"] is True and events[-1]["stamp_chunks"] == len([e for e in events if e.get("choices")])
    lines = _finish_lines(stamped, mark2)
    assert len(lines) == 1 and lines[0]["status"] == "200" and lines[0]["cache"] == "Hit"


def test_the_stage_can_refuse_on_the_request_side(stamped, mock):
    mark = _mark()
    r = _post(stamped, mark, headers={"X-Stamp-Deny": "1"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "stamp_denied"
    assert not [q for q in mock.requests() if mark in json.dumps(q.get("body"))]
    lines = _finish_lines(stamped, mark)
    assert [(x["status"], x["finished"]) for x in lines] == [("403", "1")]


def test_a_stage_rewrites_stream_items_and_answers(make_gateway, stamp_plugins_dir):
    gw = make_gateway(_edit(True), plugins_dir=stamp_plugins_dir)
    mark = _mark()
    r = _post(gw, mark, stream=True)
    text = "".join(ch["delta"].get("content") or "" for e in _events(r) for ch in e.get("choices") or ())
    assert text == f"ONE TWO THREE FOUR FIVE {mark.upper()}"
    r = _post(gw, mark)
    assert r.json()["choices"][0]["message"]["content"] == f"ONE TWO THREE FOUR FIVE {mark.upper()}"
