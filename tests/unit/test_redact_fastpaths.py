"""The scanner's fast paths give exactly what the plain paths give.

Each shortcut of issue 12's speed work is checked against the code path it skips, on
seeded random texts built to hit it (fullwidth digits, zero-width and other format
characters, percent/HTML/JSON escapes, separators, detector hints, values split across
parts and messages):

- spans read from RE2's compiled object (and the hint-to-hint search) == ``finditer``;
- the RE2 Set that skips detectors absent from a short text == running every detector;
- the normaliser's one-pass "nothing to change" check == the staged normaliser;
- the card issuer-prefix table == the prefix list; the phone validator's quick refusals
  == the validator without them;
- the boundary scan's early drop of matches inside one string, and its choice of detectors
  by the bytes around each joint, == the scan without them;
- and all of them together: ``scan_request`` with every fast path == with none.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import random
from pathlib import Path

import pytest
from stdnum import luhn

from aigw.redact import RedactConfig, detect, engine, scan_request
from aigw.redact.detect import _CARD_PREFIXES, CustomPattern, Detector, card_number_ok
from aigw.redact.normalize import normalize

CORPUS_DIR = Path(__file__).resolve().parents[1] / "corpus"
_spec = importlib.util.spec_from_file_location("redact_corpus_fastpaths", CORPUS_DIR / "generate.py")
corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)

# pieces the random texts are made of: each aims at one detector, evasion or shortcut
_PIECES = (
    list("0123456789 -./\n\r\t+()@:%&;#x\\u<>") +
    ["\uff14", "\uff11", "\u200d", "\u200b", "\u00ad", "\u2013", "\u3000", "\u2028", "\ufeff",
     "%40", "%2540", "%EF%BC%94", "&#64;", "&#x40;", "&commat;", "\\u0040", "\\ud83d\\ude00", "\\n",
     "sk-", "sk-ant-", "eyJ", "eyJhbGciOiJIUzI1NiJ9.", "AKIA", "ASIA", "ghp_", "github_pat_", "xoxb-",
     "https://hooks.slack.com/services/", "-----BEGIN RSA PRIVATE KEY-----",
     "-----END RSA PRIVATE KEY-----", "GB82", "DE89", "@example.com", "jane.doe", "é", "ß", "ﬁ",
     "Ⅻ", "１２３", "\x00", "\U0001d7d9", "a", "Z", "::", "ffff", "192.168.", "4111 1111 ",
     "+1 415 ", "(415) ", "2024-04-12", "version ", "078-05-", "\u0663",
     "+44 20 7946 0958 ", "+81 90-1234-5800 ", "+49 30 901820 ", "(+33) 1 42 68 53 00 ",
     "+298 302010 ", "+683 4002 ", "+376 812 345 "])  # short international numbers


def _random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_PIECES) if rng.random() < 0.6 else rng.choice("0123456789")
                   for _ in range(n))


def _texts(seed: int, count: int, longest: int = 120) -> list[str]:
    rng = random.Random(seed)
    out = [_random_text(rng, rng.randrange(1, longest)) for _ in range(count)]
    items = corpus.generate(seed=seed, per_type=20)
    out += [t for t, _, _ in items]
    out += [t for t, *_ in corpus.evasion_items(seed=seed, per=2)]
    clean = corpus.clean_text(seed=seed, min_bytes=40_000)
    out += [clean[i:i + rng.randrange(50, 3000)] for i in range(0, len(clean), 2500)]
    return out


def _slow_detector(entities=None, custom=(), region: str = "US") -> Detector:
    """A detector with every fast path off: match objects from finditer, no RE2 Set, the
    phone validator without its quick refusals."""
    det = Detector(entities, custom, region)
    det._set = None
    for d in det._detectors:
        d._match = None
        if d.spec.entity == "phone":
            d.spec = dataclasses.replace(d.spec, validate=detect._phone(region, quick=False))
    return det


def _key(cands):
    return sorted((p, f.entity, f.start, f.end, f.value) for p, f in cands)


def test_the_fast_paths_are_in_use():
    det = Detector()
    assert detect._RAW_MATCH, "google-re2 no longer exposes its compiled object: spans fall back to finditer"
    assert all(d._match is not None for d in det._detectors)
    assert det._set is not None
    # the Set leaves out detectors that match nowhere in a short text
    assert len(det._present(b"call me at 415 555 0132")) < len(det._detectors)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_raw_spans_are_finditer_spans(seed):
    det = Detector(custom_patterns=[CustomPattern("emptyable", r"x*"), CustomPattern("ids", r"ID-[0-9]{4,}")])
    texts = _texts(seed, 1500, longest=200)
    # adversarial for the hint-to-hint searches: many "@"/"xox" with no match, long local parts
    texts += ["@" * 50 + "a" * 70 + "@example.com" + " @ " * 20 + "x" * 64 + "@b.io",
              "xox " * 30 + "xoxb-1234567890-abc " + "https://hooks.slack.com/ " * 3
              + "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
              ("a" * 63 + "@") * 5 + "@@" + "b" * 71 + "@c.de",
              "x " + "a" * 64 + "@example.com", "y " + "b" * 64 + "  \r\n  @example.org",
              ("c" * 63 + "@d.io ") * 3 + "e" * 65 + "@f.io"]
    checked = 0
    for text in texts:
        data = text.encode()
        for d in det._detectors:
            want = [m.span() for m in d.regex.finditer(data)]
            if d.spec.hints and not any(h in data for h in d.spec.hints):
                want = []  # the hint gate (both paths have it)
            assert d.spans(data) == want, (d.spec.entity, text)
            checked += bool(want)
    assert checked > 500  # the texts do reach the detectors


def test_detector_alphabets_hold_every_match():
    """The boundary scan skips a detector at a joint of bytes outside its alphabet: every
    match of every built-in pattern consists of alphabet bytes."""
    det = Detector()
    assert sum(d.alphabet is not None for d in det._detectors) >= 12  # all but private_key
    seen = 0
    for text in _texts(13, 3000, longest=200):
        data = text.encode()
        for d in det._detectors:
            if d.alphabet is None:
                continue
            for m in d.regex.finditer(data):
                assert set(data[m.start():m.end()]) <= d.alphabet, (d.spec.entity, text)
                seen += 1
    assert seen > 1000
    assert det._detectors[-1].spec.entity == "phone" and b"a"[0] not in det._detectors[-1].alphabet
    custom = Detector(custom_patterns=[CustomPattern("ids", r"ID-[0-9]{4,}")])
    assert custom._detectors[-1].alphabet is None  # custom patterns: any byte
    assert det.can_join([b"a\n4"]) == {d.priority for d in det._detectors if d.alphabet is None
                                        or set(b"a\n4") <= d.alphabet}
    assert det.can_join([None]) is None


@pytest.mark.parametrize("seed", [4, 5])
def test_set_and_validator_shortcuts_give_the_same_candidates(seed):
    fast, slow = Detector(), _slow_detector()
    texts = _texts(seed, 2500)
    texts.append(_random_text(random.Random(seed), 5000))  # a short text, but many detectors present
    found = 0
    for text in texts:
        got = fast.candidates(text)
        assert _key(got) == _key(slow.candidates(text)), text
        found += len(got)
    assert found > 1000


def test_phone_shortcuts_other_region():
    fast, slow = Detector(phone_region="DE"), _slow_detector(region="DE")
    for text in _texts(6, 1500):
        assert _key(fast.candidates(text)) == _key(slow.candidates(text)), text


def test_card_prefix_table_is_the_prefix_list():
    def by_list(digits: str) -> bool:
        n = len(digits)
        if not 12 <= n <= 19:
            return False
        for low, high, lengths in _CARD_PREFIXES:
            if n in lengths and low <= digits[: len(low)] <= high:
                return luhn.is_valid(digits)
        return False

    rng = random.Random(8)
    for n in range(10, 22):
        for prefix in range(10_000):
            digits = (f"{prefix:04d}" + "".join(rng.choice("0123456789") for _ in range(n)))[:n]
            if rng.random() < 0.5:  # a valid check digit half the time
                for c in "0123456789":
                    if luhn.is_valid(digits[:-1] + c):
                        digits = digits[:-1] + c
                        break
            assert card_number_ok(digits) == by_list(digits), digits


@pytest.mark.parametrize("seed", [9, 10])
def test_normalize_with_the_bytes_is_normalize(seed):
    rng = random.Random(seed)
    for text in _texts(seed, 2000):
        a, b = normalize(text), normalize(text, text.encode())
        assert (a.text, a.changed) == (b.text, b.changed), text
        n = len(a.text)
        for _ in range(5):
            s = rng.randrange(n + 1)
            e = rng.randrange(s, n + 1)
            assert a.span(s, e) == b.span(s, e), (text, s, e)


def _split_bodies(seed: int) -> list[tuple[str, dict]]:
    """Values split at random points across text parts, blocks and messages."""
    rng = random.Random(seed)
    items = corpus.generate(seed=seed, per_type=12) + [(t, e, v) for t, e, _, v in corpus.evasion_items(seed=seed, per=1)]
    out = []
    for text, _, _ in items:
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randrange(1, 4))))
        pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)], strict=True)]
        pieces = [p for p in pieces if p]
        noise = _random_text(rng, rng.randrange(0, 30))
        kind = rng.randrange(3)
        if kind == 0:
            out.append(("chat", {"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": p} for p in pieces + [noise] if p]}]}))
        elif kind == 1:
            out.append(("anthropic", {"model": "m", "system": noise or "be brief", "messages": [
                {"role": "user", "content": [{"type": "text", "text": p} for p in pieces]}]}))
        else:
            out.append(("chat", {"model": "m", "messages": [
                {"role": "user" if i % 2 == 0 else "assistant", "content": p} for i, p in enumerate(pieces)]}))
    clean = corpus.clean_text(seed=seed, min_bytes=60_000)
    mixed = "".join(t + " " + clean[i * 400:(i + 1) * 400] for i, (t, _, _) in enumerate(items[:100]))
    for k in (7, 60, 400):  # many boundaries: the windows around them merge
        step = max(1, len(mixed) // k)
        out.append(("chat", {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": mixed[i:i + step]} for i in range(0, len(mixed), step)]}]}))
    return out


def _outcome(cfg: RedactConfig, api: str, body: dict):
    r = scan_request(cfg, api, body)
    return body, r.counts, r.blocked, r.restore_map, r.changed


@pytest.mark.parametrize("seed", [11, 12])
def test_scan_request_with_every_fast_path_is_scan_request_without(seed, monkeypatch):
    fast_cfg = RedactConfig.from_dict({"restore": True})
    slow_cfg = RedactConfig.from_dict({"restore": True})
    slow_cfg.__dict__["detector"] = _slow_detector()
    bodies = _split_bodies(seed)
    fast = [_outcome(fast_cfg, api, copy.deepcopy(b)) for api, b in bodies]
    # the boundary scan without its early drop nor its choice of detectors by the bytes at
    # the joint, the normaliser without the bytes
    monkeypatch.setattr(engine, "_byte_parts", lambda *a: None)
    monkeypatch.setattr(Detector, "can_join", lambda self, joints: None)
    plain_normalize = engine.normalize
    monkeypatch.setattr(engine, "normalize", lambda text, data=None: plain_normalize(text))
    slow = [_outcome(slow_cfg, api, copy.deepcopy(b)) for api, b in bodies]
    assert len(fast) == len(slow)
    split_found = 0
    for (api, body), f, s in zip(bodies, fast, slow, strict=True):
        assert f == s, (api, body)
        split_found += sum(f[1].values())
    assert split_found > 200
