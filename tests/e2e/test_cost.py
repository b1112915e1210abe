"""Issue 6: ai-cost end to end (stand-in -> plugin server -> relay -> mock, real Redis).

Cost headers from the price table and the mock's usage, cost in the final
stream chunk, USD budgets shared by two gateways under concurrency, unpriced
models, Prometheus metrics, and the aigw-spend readout.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from aigw.limits import RedisLimiter, Rule
from aigw.tokens.counting import count_chat

from .conftest import (
    Gateway,
    add_model,
    burst,
    free_port,
    plugin_config,
    reference_config,
    remove_plugin,
)

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"
CONSUMER = "demo-app"

def packaged_price(provider: str, model: str) -> dict:
    """The catalogue's price for ``model`` at the reference config's ``provider``, read from
    genai-prices directly (not through the gateway's conversion)."""
    from datetime import UTC, datetime

    from genai_prices import data_snapshot
    pid = {"gemini": "google"}.get(provider, provider)
    _, info = data_snapshot.get_snapshot().find_provider_model(model, None, pid, None)
    mp = info.get_prices(datetime.now(UTC))
    return {"input": float(mp.input_mtok), "output": float(mp.output_mtok)}


def mock_usage(prompt: str, reply: str) -> tuple[int, int]:
    """The mock's usage formula (docs/mock.md) for one user message."""
    return len(prompt.split()) + 3, len(reply.split())


def assert_cost_header(headers, expected_usd: float) -> None:
    value = headers["x-ai-cost-usd"]
    assert re.fullmatch(r"\d+(\.\d{1,8})?", value), value
    assert float(value) == pytest.approx(expected_usd, rel=1e-9, abs=1e-12)


def _sse(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def scrape(gw) -> dict[tuple, float]:
    text = requests.get(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, lab), v in samples.items()
               if n == name and all(dict(lab).get(k) == v2 for k, v2 in labels.items()))


# --------------------------------------------------------------- priced, no budget
CLAUDE_CACHED = {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75}
THINKING = {"input": 1, "output": 2, "reasoning": 5}


@pytest.fixture(scope="module")
def priced(mock):
    """ai-cost pricing only (no budgets), no cache: every answer is a fresh, priced call."""
    doc = reference_config(free_port())
    remove_plugin(doc, "ai-cache")
    plugin_config(doc, "ai-cost")["budgets"] = []
    prices = plugin_config(doc, "ai-router")["prices"]
    prices["anthropic/claude-cached-x"] = CLAUDE_CACHED
    prices["openai/gpt-thinking-x"] = THINKING
    add_model(doc, "claude-cached", [{"provider": "anthropic", "model": "claude-cached-x"}])
    add_model(doc, "thinker", [{"provider": "openai", "model": "gpt-thinking-x"}])
    # deliberately not priced (no add_model): served on this unbudgeted route, without cost
    plugin_config(doc, "ai-router")["models"].append(
        {"name": "free-for-all", "targets": [{"provider": "openai", "model": "house-model-x"}]})
    with Gateway(mock, doc) as g:
        yield g


@pytest.mark.parametrize("model,provider,target", [
    ("gpt-4o-mini", "openai", "gpt-4o-mini"),
    ("claude-sonnet", "anthropic", "claude-sonnet-4-20250514"),
    ("gemini-flash", "gemini", "gemini-2.5-flash"),
    ("mistral-small", "mistral", "mistral-small-latest"),
])
def test_cost_header_is_packaged_price_times_mock_usage(priced, model, provider, target):
    prompt = f"REPLY:the price of {model} words"
    r = requests.post(priced.url + "/v1/chat/completions", headers=priced.headers(),
                      json={"model": model, "messages": [{"role": "user", "content": prompt}]})
    assert r.status_code == 200 and r.headers["x-ai-provider"] == provider
    p, c = mock_usage(prompt, prompt[6:])
    price = packaged_price(provider, target)
    assert_cost_header(r.headers, (p * price["input"] + c * price["output"]) / 1e6)


def test_cost_with_cache_and_reasoning_prices(priced):
    prompt = "REPLY:a b c d e f g h i j"
    p, c = mock_usage(prompt, prompt[6:])
    # Anthropic "cached": reads P//2, writes 10, the rest uncached (docs/mock.md)
    r = requests.post(priced.url + "/v1/chat/completions", headers=priced.headers(),
                      json={"model": "claude-cached", "messages": [{"role": "user", "content": prompt}]})
    assert r.headers["x-ai-prompt-tokens"] == str(p + 10)
    uncached = p - p // 2
    pr = CLAUDE_CACHED
    assert_cost_header(r.headers, (uncached * pr["input"] + (p // 2) * pr["cache_read"]
                                   + 10 * pr["cache_write"] + c * pr["output"]) / 1e6)
    # "thinking": 10 reasoning tokens on top of C, priced apart
    r = requests.post(priced.url + "/v1/chat/completions", headers=priced.headers(),
                      json={"model": "thinker", "messages": [{"role": "user", "content": prompt}]})
    assert r.headers["x-ai-completion-tokens"] == str(c + 10)
    assert_cost_header(r.headers, (p * THINKING["input"] + c * THINKING["output"]
                                   + 10 * THINKING["reasoning"]) / 1e6)


def test_stream_final_chunk_carries_usage_and_cost(priced):
    prompt = "REPLY:streamed and priced"
    p, c = mock_usage(prompt, prompt[6:])
    price = packaged_price("openai", "gpt-4o-mini")
    expected = (p * price["input"] + c * price["output"]) / 1e6
    url = priced.url + "/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    r = requests.post(url, headers=priced.headers(), json={**body, "stream_options": {"include_usage": True}})
    final = _sse(r.text)[-1]
    assert final["choices"] == []
    assert (final["usage"]["prompt_tokens"], final["usage"]["completion_tokens"]) == (p, c)
    assert final["cost"] == pytest.approx(expected) and final["usage"]["cost"] == pytest.approx(expected)
    assert "x-ai-cost-usd" not in r.headers  # headers go out before the cost is known
    # the client did not ask: neither usage nor cost in the stream
    r = requests.post(url, headers=priced.headers(), json=body)
    assert all("usage" not in ch and "cost" not in ch for ch in _sse(r.text))


def test_unpriced_model_on_unbudgeted_route_is_served_without_cost(priced):
    url = priced.url + "/v1/chat/completions"
    body = {"model": "free-for-all", "messages": [{"role": "user", "content": "REPLY:no price here"}]}
    r = requests.post(url, headers=priced.headers(), json=body)
    assert r.status_code == 200
    assert "x-ai-cost-usd" not in r.headers          # unknown, not 0
    assert r.headers["x-ai-total-tokens"] == str(sum(mock_usage("REPLY:no price here", "no price here")))
    r = requests.post(url, headers=priced.headers(), json={**body, "stream": True,
                                                           "stream_options": {"include_usage": True}})
    final = _sse(r.text)[-1]
    assert final["usage"]["total_tokens"] > 0 and "cost" not in final and "cost" not in final["usage"]


def test_metrics_move_after_requests(priced):
    labels = {"gen_ai_request_model": "gpt-4o-mini", "gen_ai_operation_name": "chat"}
    ok = {"status_class": "2xx", "outcome": "success"}
    try:
        done0 = metric(scrape(priced), "aigw_requests_total", **labels, **ok)
    except requests.ConnectionError:  # the metrics endpoint starts with the first plugin instance
        done0 = 0
    requests.post(priced.url + "/v1/chat/completions", headers=priced.headers(),
                  json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "warm up"}]})
    deadline = time.time() + 5  # the warm-up's finish hook runs just after its body was sent
    while metric(scrape(priced), "aigw_requests_total", **labels, **ok) < done0 + 1 and time.time() < deadline:
        time.sleep(0.05)
    before = scrape(priced)
    prompt = "REPLY:counted in the metrics"
    p, c = mock_usage(prompt, prompt[6:])
    n = 3
    for _ in range(n):
        r = requests.post(priced.url + "/v1/chat/completions", headers=priced.headers(),
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
        assert r.status_code == 200
    price = packaged_price("openai", "gpt-4o-mini")
    cost = (p * price["input"] + c * price["output"]) / 1e6

    def delta(name, **extra):
        return metric(scrape(priced), name, **labels, **extra) - metric(before, name, **labels, **extra)

    deadline = time.time() + 5  # the finish hook runs just after the body was sent
    while delta("aigw_requests_total") < n and time.time() < deadline:
        time.sleep(0.05)
    assert delta("aigw_requests_total", status_class="2xx", outcome="success") == n
    assert delta("gen_ai_client_token_usage_sum", gen_ai_token_type="input") == n * p
    assert delta("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == n * c
    assert delta("gen_ai_client_token_usage_count", gen_ai_token_type="input") == n
    assert delta("aigw_cost_usd_total") == pytest.approx(n * cost)
    assert delta("gen_ai_client_operation_duration_seconds_count", error_type="") == n
    # no per-consumer series unless AIGW_METRICS_CONSUMER_LABEL is set
    assert not any("consumer" in dict(lab) for (_, lab) in scrape(priced))


def test_catalogue_prices_models_the_config_does_not(make_gateway):
    """Budgets with unpriced: reject, and no `prices` entry for mistral-embed (402 with the
    hand-written table): the catalogue prices it, through the whole gateway path."""
    def edit(doc):
        plugin_config(doc, "ai-router")["models"].append(
            {"name": "mistral-embed", "capabilities": ["embeddings"],
             "targets": [{"provider": "mistral", "model": "mistral-embed"}]})
        assert "mistral-embed" not in str(plugin_config(doc, "ai-router").get("prices"))
        assert plugin_config(doc, "ai-cost")["budgets"] and plugin_config(doc, "ai-cost")["unpriced"] == "reject"
    gw = make_gateway(edit)
    words = "price these five words"
    r = requests.post(gw.url + "/v1/embeddings", headers=gw.headers(),
                      json={"model": "mistral-embed", "input": [words, "and two"]})
    assert r.status_code == 200, r.text
    assert r.headers["x-ai-provider"] == "mistral"
    tokens = r.json()["usage"]["prompt_tokens"]
    assert tokens == len(words.split()) + 2
    assert_cost_header(r.headers, tokens * packaged_price("mistral", "mistral-embed")["input"] / 1e6)
    # a model neither priced by the config nor known to the catalogue is still refused
    def edit2(doc):
        plugin_config(doc, "ai-router")["models"].append(
            {"name": "house", "targets": [{"provider": "openai", "model": "house-model-x"}]})
    gw2 = make_gateway(edit2)
    r = requests.post(gw2.url + "/v1/chat/completions", headers=gw2.headers(),
                      json={"model": "house", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 402 and r.json()["error"]["code"] == "model_not_priced"


def test_price_override_steers_cost_routing_and_the_charge(make_gateway):
    """One price table (docs/pricing.md): an override in ai-router's prices makes a target the
    catalogue prices dearer the cheapest; strategy: cost picks it and ai-cost charges it at the
    override. The same pair without the override keeps the catalogue's order."""
    steered, plain = "gpt-4o-2024-08-06", "gpt-4o-2024-11-20"  # both gpt-4o in the catalogue
    override = {"input": 0.01, "output": 0.02}                    # below gpt-4o-mini's price

    def edit(doc):
        remove_plugin(doc, "ai-cache")
        router = plugin_config(doc, "ai-router")
        router["prices"][f"openai/{steered}"] = override
        for name, dear in (("by-cost-steered", steered), ("by-cost-plain", plain)):
            router["models"].append({"name": name, "strategy": "cost", "targets": [
                {"provider": "openai", "model": "gpt-4o-mini"}, {"provider": "openai", "model": dear}]})

    gw = make_gateway(edit)
    prompt = "REPLY:which target is cheaper"
    p, c = mock_usage(prompt, prompt[6:])

    def ask(model):
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(),
                          json={"model": model, "messages": [{"role": "user", "content": prompt}]})
        assert r.status_code == 200, r.text
        return r

    r = ask("by-cost-plain")
    mini = packaged_price("openai", "gpt-4o-mini")
    assert r.headers["x-ai-model"] == "gpt-4o-mini"
    assert_cost_header(r.headers, (p * mini["input"] + c * mini["output"]) / 1e6)
    r = ask("by-cost-steered")
    assert r.headers["x-ai-model"] == steered
    assert_cost_header(r.headers, (p * override["input"] + c * override["output"]) / 1e6)


def test_consumer_label_is_opt_in(make_gateway):
    gw = make_gateway(env={"AIGW_METRICS_CONSUMER_LABEL": "true"})
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(),
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "REPLY:per consumer"}]})
    assert r.status_code == 200
    deadline = time.time() + 5
    while time.time() < deadline and not metric(scrape(gw), "aigw_requests_total", consumer=CONSUMER):
        time.sleep(0.05)
    assert metric(scrape(gw), "aigw_requests_total", consumer=CONSUMER, gen_ai_operation_name="chat") >= 1


# ------------------------------------------------------------------- budgets
N = 50
K = 6
MAX_TOKENS = 1000
CHEAP = {"input": 1.0, "output": 2.0}    # USD per 1M = micro-USD per token
DEAR = {"input": 3.0, "output": 4.0}     # the failover target: the worst case is priced here
PROMPT = "REPLY:spend some money"


def test_budget_shared_by_two_gateways_admits_exactly_k_of_50(make_gateway, mock):
    """Worst case = max over the planned targets of prompt x input + max_tokens x output;
    the budget fits K of them. The first target answers after 3 s, so all 50 reserve first."""
    first = "gpt-budget-slow-3000"
    body = {"model": "budgeted", "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": PROMPT}]}
    prompt_tokens = count_chat(body, first).tokens   # ai-router counts with the first target's tokenizer
    worst = max(prompt_tokens * pr["input"] + MAX_TOKENS * pr["output"] for pr in (CHEAP, DEAR))
    worst = int(worst)                                # micro-USD (prices are per 1M tokens)
    budget = K * worst + worst // 2                   # micro-USD

    def edit(doc):
        remove_plugin(doc, "ai-cache")
        plugin_config(doc, "ai-tokens")["limits"] = []
        cost = plugin_config(doc, "ai-cost")
        cost.update(redis_url=REDIS_URL, counter="team-budget",
                    budgets=[{"scope": "consumer", "usd": budget / 1e6, "period": "day"}])
        plugin_config(doc, "ai-router")["prices"].update({f"openai/{first}": CHEAP, "mistral/m-budget-dear": DEAR})
        add_model(doc, "budgeted", [{"provider": "openai", "model": first},
                                    {"provider": "mistral", "model": "m-budget-dear"}], strategy="priority")
        plugin_config(doc, "ai-router")["models"].append(
            {"name": "unpriced", "targets": [{"provider": "openai", "model": "house-model-x"}]})

    prefix = f"aigw-test:{uuid.uuid4().hex[:8]}:"
    gws = [make_gateway(edit, env={"AIGW_REDIS_PREFIX": prefix}) for _ in range(2)]
    results = burst(gws, body, N)
    ok = [r for r in results if r.status_code == 200]
    denied = [r for r in results if r.status_code == 429]
    assert len(ok) == K, [r.status_code for r in results]
    assert len(denied) == N - K
    for r in denied:
        err = r.json()["error"]
        assert err["code"] == "budget_exceeded" and err["type"] == "insufficient_quota"
        assert int(r.headers["retry-after"]) >= 1
    # served by the cheap first target, charged its real cost
    p, c = mock_usage(PROMPT, PROMPT[6:])
    actual = p * CHEAP["input"] + c * CHEAP["output"]   # micro-USD
    for r in ok:
        assert r.headers["x-ai-provider"] == "openai"
        assert_cost_header(r.headers, actual / 1e6)
    rule = Rule(f"usd:n.team-budget:consumer:{CONSUMER}:day", budget, 86400)
    limiter = RedisLimiter(REDIS_URL, prefix=prefix)
    deadline = time.time() + 5
    while limiter.used(rule) != K * actual and time.time() < deadline:
        time.sleep(0.05)
    assert limiter.used(rule) == K * actual <= budget

    # aigw-spend, the operator's readout, sees the same spend
    out = subprocess.run([sys.executable, "-m", "aigw.spend", "--redis-url", REDIS_URL, "--prefix", prefix,
                          "--consumer", CONSUMER, "--json"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    [row] = orjson.loads(out.stdout)["spend"]
    assert (row["scope"], row["subject"], row["period"]) == ("consumer", CONSUMER, "day")
    assert row["micro_usd"] == K * actual and row["requests"] == K
    assert row["usd"] == pytest.approx(K * actual / 1e6)

    # a model without a price on a budgeted route is refused before any provider call
    mock.clear()
    r = requests.post(gws[0].url + "/v1/chat/completions", headers=gws[0].headers(),
                      json={"model": "unpriced", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 402
    assert r.json()["error"]["code"] == "model_not_priced"
    assert mock.requests() == []
