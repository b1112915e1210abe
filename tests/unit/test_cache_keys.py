"""Cache keys and the cacheability rule."""
from __future__ import annotations

import copy
import random
import string

import pytest

from aigw.cache import (
    MULTIPLE_CHOICES,
    NO_STORE,
    NONDETERMINISTIC,
    OK,
    REFRESH,
    UNSUPPORTED,
    Partition,
    cache_key,
    cacheable,
)

P = Partition("alice", "chat", "openai/gpt-4o-mini")


def body(**extra):
    b = {
        "model": "fast",
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "hello <PERSON_1>"}],
        "temperature": 0,
    }
    b.update(extra)
    return b


def reversed_dicts(value):
    """Same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reversed_dicts(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_dicts(v) for v in value]
    return value


def test_key_shape_and_prefix():
    key = cache_key(P, "openai", body())
    prefix, _, digest = key.partition(":")
    assert prefix == P.prefix()
    assert len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


def test_key_ignores_dict_order():
    b = body(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}}}],
        response_format={"type": "json_object"}, top_p=1, seed=3)
    rb = reversed_dicts(b)
    assert list(rb) != list(b)
    assert cache_key(P, "openai", rb) == cache_key(P, "openai", b)


def test_key_does_not_mutate_body():
    b = body(max_tokens=5, stop="x", n=1)
    before = copy.deepcopy(b)
    cache_key(P, "openai", b)
    assert b == before


CHANGES = [
    ("messages", [{"role": "user", "content": "hello <PERSON_2>"}]),
    ("system", "other system"),
    ("tools", [{"type": "function", "function": {"name": "g"}}]),
    ("tool_choice", "required"),
    ("parallel_tool_calls", False),
    ("response_format", {"type": "json_object"}),
    ("temperature", 0.5),
    ("top_p", 0.9),
    ("top_k", 40),
    ("n", 2),
    ("stop", ["END"]),
    ("stop_sequences", ["END"]),
    ("max_tokens", 10),
    ("max_completion_tokens", 11),
    ("seed", 42),
    ("presence_penalty", 0.5),
    ("frequency_penalty", 0.5),
    ("logit_bias", {"50256": -100}),
    ("logprobs", True),
    ("reasoning_effort", "high"),
    ("some_future_parameter", "x"),  # unknown fields are hashed (fail safe)
]


@pytest.mark.parametrize("field,value", CHANGES, ids=[c[0] for c in CHANGES])
def test_key_changes_with_answer_changing_field(field, value):
    assert cache_key(P, "openai", body(**{field: value})) != cache_key(P, "openai", body())


@pytest.mark.parametrize("field,value", [
    ("stream", True),
    ("stream_options", {"include_usage": True}),
    ("user", "end-user-7"),
    ("metadata", {"trace": "1"}),
    ("model", "another-alias-for-the-same-target"),
    ("store", True),
])
def test_key_ignores_neutral_field(field, value):
    assert cache_key(P, "openai", body(**{field: value})) == cache_key(P, "openai", body())


def test_vary_can_make_a_neutral_field_count():
    vary = ("messages", "temperature", "user")
    a = cache_key(P, "openai", body(user="u1"), vary=vary)
    b = cache_key(P, "openai", body(user="u2"), vary=vary)
    assert a != b


@pytest.mark.parametrize("a,b", [
    ({"max_tokens": 10}, {"max_completion_tokens": 10}),
    ({"stop": "END"}, {"stop": ["END"]}),
    ({"temperature": 0}, {"temperature": 0.0}),
    ({"n": 1}, {}),
    ({"seed": None}, {}),
])
def test_equivalent_spellings_share_a_key(a, b):
    assert cache_key(P, "openai", body(**a)) == cache_key(P, "openai", body(**b))


def test_anthropic_max_tokens_not_renamed_and_api_in_key():
    b = body(max_tokens=10)
    assert cache_key(P, "anthropic", b) != cache_key(P, "openai", b)


@pytest.mark.parametrize("other", [
    Partition("bob", "chat", "openai/gpt-4o-mini"),
    Partition("alice", "chat2", "openai/gpt-4o-mini"),
    Partition("alice", "chat", "azure/gpt-4o-mini"),
    Partition("alice", "chat", "openai/gpt-4o"),
])
def test_partitions_never_share_a_key(other):
    ka, kb = cache_key(P, "openai", body()), cache_key(other, "openai", body())
    assert ka != kb
    assert ka.split(":")[0] != kb.split(":")[0]


def test_partition_fields_cannot_be_shifted():
    a = Partition("a:b", "c", "t")
    b = Partition("a", "b:c", "t")
    assert a.prefix() != b.prefix()
    assert cache_key(a, "openai", body()) != cache_key(b, "openai", body())


def _rand_text(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + " :/") for _ in range(rng.randint(0, 12)))


def _rand_body(rng: random.Random) -> dict:
    b: dict = {"messages": [{"role": rng.choice(["user", "system", "assistant"]),
                             "content": _rand_text(rng)} for _ in range(rng.randint(1, 3))]}
    for name, gen in [("temperature", lambda: rng.choice([0, 0.2, 1])),
                      ("max_tokens", lambda: rng.randint(1, 50)),
                      ("seed", lambda: rng.randint(0, 3)),
                      ("stop", lambda: [_rand_text(rng)])]:
        if rng.random() < 0.5:
            b[name] = gen()
    return b


def test_property_random_bodies_and_partitions_never_collide():
    rng = random.Random(20261124)
    names = ["alice", "bob", "a:b", ""]
    routes = ["chat", "chat2"]
    targets = ["openai/gpt-4o", "anthropic/claude"]
    bodies = [_rand_body(rng) for _ in range(60)]
    seen: dict[str, tuple] = {}
    for _bi, b in enumerate(bodies):
        canon = repr(sorted(b.items()))
        for c in names:
            for r in routes:
                for t in targets:
                    part = Partition(c, r, t)
                    key = cache_key(part, "openai", reversed_dicts(b))
                    assert key.startswith(part.prefix() + ":")
                    ident = (c, r, t, canon)
                    assert seen.setdefault(key, ident) == ident, "two requests share a key"
    # every distinct (partition, body) produced its own key
    assert len(seen) == len(set(seen.values()))


# -- cacheable -------------------------------------------------------------

def test_cacheable_deterministic_ok():
    assert cacheable(body(), {}, allow_nondeterministic=False) == (True, OK)


@pytest.mark.parametrize("temp", [None, 0.7, 1, "0", True])
def test_cacheable_rejects_nondeterministic(temp):
    b = body()
    if temp is None:
        del b["temperature"]  # absent = provider default, not deterministic
    else:
        b["temperature"] = temp
    assert cacheable(b, {}, allow_nondeterministic=False) == (False, NONDETERMINISTIC)
    if not isinstance(temp, (str, bool)):
        assert cacheable(b, {}, allow_nondeterministic=True) == (True, OK)


def test_cacheable_n_must_be_one():
    assert cacheable(body(n=3), {}, allow_nondeterministic=True) == (False, MULTIPLE_CHOICES)
    assert cacheable(body(n=1), {}, allow_nondeterministic=False) == (True, OK)


@pytest.mark.parametrize("headers", [
    {"Cache-Control": "no-store"},
    {"cache-control": "max-age=0, No-Store"},
    {"CACHE-CONTROL": "no-cache, no-store"},
])
def test_cacheable_no_store_always_wins(headers):
    assert cacheable(body(), headers, allow_nondeterministic=True) == (False, NO_STORE)


@pytest.mark.parametrize("headers", [{"Cache-Control": "no-cache"}, {"pragma": "no-cache"}])
def test_cacheable_no_cache_means_refresh(headers):
    assert cacheable(body(), headers, allow_nondeterministic=False) == (True, REFRESH)


def test_cacheable_refresh_still_obeys_rules():
    b = body(temperature=0.9)
    assert cacheable(b, {"Cache-Control": "no-cache"}, allow_nondeterministic=False) == \
        (False, NONDETERMINISTIC)


def test_cacheable_unsupported_body():
    assert cacheable({"input": "embed me"}, {}, allow_nondeterministic=True) == (False, UNSUPPORTED)
