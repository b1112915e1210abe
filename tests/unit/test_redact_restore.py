"""Placeholder restore, whole-text and streaming (every split point)."""
from __future__ import annotations

import itertools
import random

import pytest

from aigw.redact import RedactConfig, StreamRestorer, restore_text, scan_request

MAP = {
    "<EMAIL_1>": "jane.roe@example.com",
    "<EMAIL_12>": "bob@example.org",
    "<CREDIT_CARD_1>": "4111 1111 1111 1111",
    "<PHONE_2>": "(415) 555-0132",
}
LONGEST = max(len(k) for k in MAP)


def test_restore_text_replaces_known_and_keeps_unknown():
    text = "Mail <EMAIL_1>, not <EMAIL_3> or <email_1>; card <CREDIT_CARD_1>.<EMAIL_12>"
    assert restore_text(text, MAP) == ("Mail jane.roe@example.com, not <EMAIL_3> or <email_1>; "
                                       "card 4111 1111 1111 1111.bob@example.org")
    assert restore_text(text, {}) == text
    assert restore_text("<<EMAIL_1>>", MAP) == "<jane.roe@example.com>"


def test_values_that_look_like_placeholders_are_not_restored_twice():
    m = {"<EMAIL_1>": "<PHONE_2>", "<PHONE_2>": "x"}
    assert restore_text("<EMAIL_1>", m) == "<PHONE_2>"
    r = StreamRestorer(m)
    assert r.feed("<EMA") + r.feed("IL_1>") + r.flush() == "<PHONE_2>"


def run(chunks, restore_map=MAP) -> tuple[str, int]:
    r = StreamRestorer(restore_map)
    out, max_held = [], 0
    for c in chunks:
        out.append(r.feed(c))
        max_held = max(max_held, len(r.held))
    out.append(r.flush())
    assert r.held == ""
    return "".join(out), max_held


TEXTS = [
    "<EMAIL_1>",
    "Hi <EMAIL_1>, call <PHONE_2> now",
    "<EMAIL_12><EMAIL_1>",
    "a<<CREDIT_CARD_1>>b < c <EMAIL_ <EMAIL_1",
    "x <EMAIL_1> <EMAIL_3> <PHONE_2",
    "<<<EMAIL_12>",
]


@pytest.mark.parametrize("text", TEXTS)
def test_every_two_way_split(text):
    expected = restore_text(text, MAP)
    for i in range(len(text) + 1):
        got, held = run([text[:i], text[i:]])
        assert got == expected, (i, got)
        assert held <= LONGEST - 1


@pytest.mark.parametrize("text", TEXTS[:4])
def test_every_three_way_split(text):
    expected = restore_text(text, MAP)
    for i, j in itertools.combinations_with_replacement(range(len(text) + 1), 2):
        got, held = run([text[:i], text[i:j], text[j:]])
        assert got == expected, (i, j, got)
        assert held <= LONGEST - 1


@pytest.mark.parametrize("text", TEXTS)
def test_one_character_at_a_time(text):
    got, held = run(list(text))
    assert got == restore_text(text, MAP)
    assert held <= LONGEST - 1


def test_random_chunkings_of_a_long_answer():
    rng = random.Random(7)
    keys = list(MAP) + ["<EMAIL_", "<", "<NOPE_1>", "plain text ", "\n", "é✓ "]
    for _ in range(300):
        text = "".join(rng.choice(keys) for _ in range(rng.randint(1, 40)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(1, 8))))
        chunks = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)], strict=True)]
        got, held = run(chunks)
        assert got == restore_text(text, MAP)
        assert held <= LONGEST - 1


def test_stream_does_not_buffer_plain_text():
    r = StreamRestorer(MAP)
    assert r.feed("hello ") == "hello "
    assert r.feed("a < b and <EM") == "a < b and "
    assert r.held == "<EM"
    assert r.feed("AIL_1> done") == "jane.roe@example.com done"
    assert r.feed("<EMAIL_9") == "<EMAIL_9"  # cannot grow into a known placeholder
    assert r.feed(" <EMAIL_1") == " "          # may still become <EMAIL_1> or <EMAIL_12>
    assert r.flush() == "<EMAIL_1"


def test_hold_back_is_released_once_it_cannot_be_a_placeholder():
    r = StreamRestorer(MAP)
    assert r.feed("<EMAIL_1") == ""
    assert r.feed("x") == "<EMAIL_1x"


def test_empty_map_passes_through():
    r = StreamRestorer({})
    assert r.feed("<EMAIL_1") == "<EMAIL_1"
    assert r.flush() == ""


def test_round_trip_with_scan_request():
    email, card = "jane.roe@example.com", "4111-1111-1111-1111"
    body = {"messages": [{"role": "user", "content": f"mail {email}, card {card}"}]}
    result = scan_request(RedactConfig(restore=True), "chat", body)
    answer = f"I will mail {body['messages'][0]['content'].split()[1].rstrip(',')} today."
    assert email not in answer
    r = StreamRestorer(result.restore_map)
    streamed = "".join(r.feed(answer[i:i + 3]) for i in range(0, len(answer), 3)) + r.flush()
    assert streamed == f"I will mail {email} today."
