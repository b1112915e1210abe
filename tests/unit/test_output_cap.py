"""aigw/relay/output_cap.py: the provider cannot deliver more than was reserved."""
from __future__ import annotations

from aigw.providers import get_adapter
from aigw.relay.output_cap import (
    StreamCap,
    allowed_tokens,
    cap_response,
    delivered_usage,
    upstream_body,
)
from aigw.tokens.counting import count_text
from aigw.types import Usage

MODEL = "gpt-4o-mini"  # exact tokenizer (o200k_base)


def chunk(deltas, finish=None):
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
            "choices": [{"index": i, "delta": d, "finish_reason": finish} for i, d in enumerate(deltas)]}


def test_upstream_body_sends_the_cap_only_when_the_client_set_none():
    body = {"model": "m", "messages": []}
    assert upstream_body(body, 300, get_adapter("openai"))["max_completion_tokens"] == 300
    assert upstream_body(body, 300, get_adapter("azure"))["max_completion_tokens"] == 300
    assert upstream_body(body, 300, get_adapter("openai_compatible"))["max_tokens"] == 300
    assert upstream_body(body, 300, get_adapter("mistral"))["max_tokens"] == 300
    assert upstream_body(body, 300, get_adapter("anthropic"))["max_tokens"] == 300
    assert "max_tokens" not in body and "max_completion_tokens" not in body  # not mutated
    assert upstream_body({**body, "max_tokens": 50}, 300, get_adapter("openai")) == {**body, "max_tokens": 50}
    assert upstream_body(body, None, get_adapter("openai")) is body


def test_adapters_translate_the_injected_cap():
    body = upstream_body({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, 77,
                         get_adapter("gemini"))
    import orjson

    from aigw.types import ProviderConfig
    up = get_adapter("gemini").chat_request(body, "gemini-2.0-flash",
                                            ProviderConfig(name="g", type="gemini", base_url="http://x",
                                                           api_key="k"), stream=False)
    assert orjson.loads(up.body)["generationConfig"]["maxOutputTokens"] == 77


def test_stream_cap_cuts_each_choice_at_the_cap_and_ends_it_with_length():
    cap = StreamCap(5, MODEL, choices=2)
    words = [" one", " two", " three", " four", " five", " six", " seven"]
    out = []
    for w in words:
        out += cap.feed([chunk([{"content": w}, {"content": w}])])
        if cap.exhausted:
            break
    assert cap.exhausted and cap.cut
    for idx in (0, 1):
        text = "".join(ch["delta"].get("content", "") for c in out for ch in c["choices"] if ch["index"] == idx)
        assert text == " one two three four five"
        assert count_text(text, MODEL).tokens == 5
        finishes = [ch["finish_reason"] for c in out for ch in c["choices"] if ch["index"] == idx]
        assert finishes[-1] == "length" and finishes.count("length") == 1
    # nothing of a cut choice is relayed afterwards; usage chunks still pass
    assert cap.feed([chunk([{"content": " more"}, {"content": " more"}])]) == []
    usage_chunk = {"id": "c", "choices": [], "usage": {"prompt_tokens": 1}}
    assert cap.feed([usage_chunk]) == [usage_chunk]


def test_stream_cap_cuts_inside_a_piece_and_counts_tool_arguments():
    cap = StreamCap(3, MODEL)
    [c] = cap.feed([chunk([{"content": " alpha beta gamma delta epsilon"}])])
    assert c["choices"][0]["delta"]["content"] == " alpha beta gamma"
    assert c["choices"][0]["finish_reason"] == "length" and cap.exhausted
    cap = StreamCap(4, MODEL)
    [c] = cap.feed([chunk([{"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Paris, France"}'}}]}])])
    args = c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
    assert count_text(args, MODEL).tokens <= 4 and '{"city": "Paris, France"}'.startswith(args)


def test_an_honest_stream_under_the_cap_is_untouched():
    cap = StreamCap(50, MODEL)
    chunks = [chunk([{"content": " hello"}]), chunk([{"content": " world"}]), chunk([{}], "stop")]
    assert cap.feed([dict(c) for c in chunks]) == chunks
    assert not cap.cut and not cap.exhausted


def test_a_choice_that_finishes_normally_does_not_end_the_others():
    cap = StreamCap(2, MODEL, choices=2)
    cap.feed([chunk([{"content": " a"}, {"content": " b c d e"}])])
    assert not cap.exhausted  # choice 0 is still running
    cap.feed([{"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}])
    assert cap.exhausted


def test_estimated_tokenizers_get_slack_so_honest_providers_are_not_cut_short():
    assert allowed_tokens(100, MODEL)[0] == 100
    assert allowed_tokens(100, "claude-sonnet-4")[0] == 128


def test_cap_response_cuts_non_stream_answers():
    resp = {"choices": [{"index": 0, "message": {"role": "assistant", "content": " one two three four"},
                         "finish_reason": "stop"},
                        {"index": 1, "message": {"role": "assistant", "content": " ok"}, "finish_reason": "stop"}]}
    assert cap_response(resp, 2, MODEL) == 3   # delivered: 2 + 1, counted per choice
    assert resp["choices"][0]["message"]["content"] == " one two"
    assert resp["choices"][0]["finish_reason"] == "length"
    assert resp["choices"][1] == {"index": 1, "message": {"role": "assistant", "content": " ok"},
                                  "finish_reason": "stop"}
    assert cap_response(resp, 2, MODEL) is None  # already within
    assert cap_response(resp, None, MODEL) is None


def test_delivered_usage_keeps_the_provider_prompt_and_charges_delivered_output():
    provider = Usage(input_tokens=40, output_tokens=5000, cache_read_tokens=10, reasoning_tokens=7)
    counted = Usage(input_tokens=38, output_tokens=100, estimated=True)
    u = delivered_usage(provider, counted)
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.estimated) == (40, 100, 10, True)
    assert delivered_usage(None, counted) == counted
