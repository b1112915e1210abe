"""Issue 12: values hidden by encodings, invisible characters and separators, and values
split across parts, blocks and messages, are found; the original span is replaced and
restore gives the client's own text back."""
from __future__ import annotations

import copy
import importlib.util
import random
from pathlib import Path

import pytest

from aigw.redact import RedactConfig, restore_text, scan_request
from aigw.redact.normalize import normalize

CORPUS_DIR = Path(__file__).resolve().parents[1] / "corpus"
_spec = importlib.util.spec_from_file_location("redact_corpus_evasions", CORPUS_DIR / "generate.py")
corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)

ITEMS = corpus.evasion_items(seed=7, per=4)
CFG = RedactConfig.from_dict({"restore": True})


def _chat(text: str) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize("evasion", corpus.EVASIONS)
@pytest.mark.parametrize("entity", corpus.EVASION_ENTITIES)
def test_every_evasion_of_every_category_is_redacted_and_restored(entity, evasion):
    items = [it for it in ITEMS if it[1] == entity and it[2] == evasion]
    assert len(items) == 4
    for text, _, _, value in items:
        assert corpus.value_leaked(entity, value, text)  # the oracle sees the value in the input
        body = _chat(text)
        r = scan_request(CFG, "chat", body)
        out = body["messages"][0]["content"]
        assert not corpus.value_leaked(entity, value, out), (text, out)
        assert r.counts.get(entity), (text, r.counts)
        assert restore_text(out, r.restore_map) == text


def test_replacement_covers_exactly_the_original_span():
    text = "mail j\u200dane.doe@exa\u200dmple.com now, card \uff14\uff11\uff11\uff11 1111 1111 1111!"
    body = _chat(text)
    r = scan_request(CFG, "chat", body)
    assert body["messages"][0]["content"] == "mail <EMAIL_1> now, card <CREDIT_CARD_1>!"
    assert r.restore_map == {"<EMAIL_1>": "j\u200dane.doe@exa\u200dmple.com",
                             "<CREDIT_CARD_1>": "\uff14\uff11\uff11\uff11 1111 1111 1111"}


def test_normalize_maps_offsets_back():
    n = normalize("a%40b &#64; \\u0040 \uff21\u200b!")
    assert n.text == "a@b @ @ A!"
    for (s, e), orig in [((1, 2), "%40"), ((4, 5), "&#64;"), ((6, 7), "\\u0040"), ((8, 9), "\uff21")]:
        os_, oe = n.span(s, e)
        assert n.original[os_:oe] == orig
    assert n.span(0, len(n.text)) == (0, len(n.original))
    plain = normalize("nothing to do here")
    assert not plain.changed and plain.text == "nothing to do here"
    # double encodings and percent-encoded fullwidth digits
    assert normalize("%2540").text == "@"
    assert normalize("%EF%BC%94").text == "4"


SPLITS = [
    ("email", ["write to jane.doe@", "example.com today"]),
    ("email", ["write to jane.d", "oe@example.com today"]),
    ("credit_card", ["card 4111 1111", "1111 1111 thanks"]),
    ("credit_card", ["card 41111111", "11111111 thanks"]),
    ("us_ssn", ["ssn 123-45-", "6789 ok"]),
    ("phone", ["call +1 415 555", "0132 please"]),
    ("openai_key", ["key sk-proj-Ab12Cd34Ef56", "Gh78Ij90Kl12Mn34Op56 done"]),
    ("github_token", ["token ghp_aB3dE5gH7jK9", "mN1pQ3sT5vW7yZ9bC1dE3fgH done"]),
    ("aws_access_key", ["key AKIA2E3F", "4G5H6I7J2K3L done"]),
]


@pytest.mark.parametrize("entity,parts", SPLITS)
def test_values_split_across_parts_blocks_and_messages(entity, parts):
    whole = "".join(parts)
    value = CFG.detector.find(whole)
    assert value and value[0].entity == entity
    value = value[0].value
    shapes = {
        "chat parts": ("chat", {"messages": [{"role": "user", "content": [
            {"type": "text", "text": p} for p in parts]}]}),
        "chat messages": ("chat", {"messages": [{"role": "user", "content": p} for p in parts]}),
        "anthropic blocks": ("anthropic", {"messages": [{"role": "user", "content": [
            {"type": "text", "text": p} for p in parts]}]}),
        "anthropic system": ("anthropic", {"system": [{"type": "text", "text": p} for p in parts],
                                           "messages": []}),
        "embeddings": ("embeddings", {"input": list(parts)}),
    }
    for name, (api, body) in shapes.items():
        original = copy.deepcopy(body)
        r = scan_request(CFG, api, body)
        texts = list(_texts(body))
        assert r.counts.get(entity) == 1, (name, r.counts)
        joined = "".join(texts)
        assert corpus.compact(value) not in corpus.compact(joined), (name, texts)
        assert any("<" in t for t in texts), name
        # restore: the placeholder brings back exactly the client's text across the boundary
        assert restore_text(joined, r.restore_map) == "".join(_texts(original)), name


def _texts(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k not in ("type", "role"):
                yield from _texts(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _texts(v)


def test_neighbouring_strings_are_not_merged_into_false_findings():
    # a complete value followed by a word in the next message stays that value
    body = {"messages": [{"role": "user", "content": "mail me at jane@example.org"},
                         {"role": "user", "content": "again please"}]}
    scan_request(CFG, "chat", body)
    assert [m["content"] for m in body["messages"]] == ["mail me at <EMAIL_1>", "again please"]


def test_clean_prose_split_into_many_parts_has_no_findings():
    text = corpus.CLEAN_PATH.read_text()
    rng = random.Random(3)
    # cut after random sentences (a cut inside a number makes a new number)
    sentences = text.replace(". ", ".\x00").split("\x00")
    parts, cur = [], ""
    for sentence in sentences:
        cur += sentence + " "
        if rng.random() < 0.5:
            parts.append(cur)
            cur = ""
    parts.append(cur)
    assert len(parts) > 300
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": p} for p in parts]}]}
    r = scan_request(CFG, "chat", body)
    assert r.counts == {}, r.counts


def test_long_token_split_far_from_its_start_is_found():
    """The boundary window widens to the whole token touching the boundary."""
    import base64

    import orjson
    payload = base64.urlsafe_b64encode(orjson.dumps({"sub": "x" * 1500})).rstrip(b"=").decode()
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    jwt = f"{header}.{payload}.{'Xy9_' * 11}"
    cut = len(jwt) - 30
    pad = "some words here. " * 40
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": pad + jwt[:cut]},
                                                      {"type": "text", "text": jwt[cut:] + " " + pad}]}]}
    r = scan_request(CFG, "chat", body)
    assert r.counts == {"jwt": 1}
    parts = body["messages"][0]["content"]
    assert parts[0]["text"] == pad + "<JWT_1>" and parts[1]["text"] == " " + pad
    assert restore_text(parts[0]["text"] + parts[1]["text"], r.restore_map) == pad + jwt + " " + pad
