"""Issue 13: malformed requests through the whole gateway never get a 5xx.

A bounded run of the generator in ``devtools/aigw_dev/mock/fuzz.py`` (``bench/fuzz.py`` runs
10,000 and more): every answer is a 4xx in the API's own error format, or a 200
when the oddity is still a valid request."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from aigw_dev.mock.fuzz import PATHS, cases

from .conftest import plugin_config


def _api_format(api: str, status: int, body) -> bool:
    if status == 200:
        return True
    if api == "anthropic":
        return body.get("type") == "error" and isinstance(body["error"].get("type"), str) \
            and isinstance(body["error"].get("message"), str)
    return isinstance(body.get("error"), dict) and isinstance(body["error"].get("message"), str)


def test_fuzz_no_5xx(make_gateway):
    def edit(doc):
        plugin_config(doc, "ai-tokens")["limits"] = [{"scope": "consumer", "tokens": 10 ** 12, "window": "minute"}]
        plugin_config(doc, "ai-cost")["budgets"] = [{"scope": "consumer", "usd": 10 ** 9, "period": "day"}]
    gw = make_gateway(edit)
    sessions = [requests.Session() for _ in range(8)]

    def send(item):
        i, (api, raw) = item
        r = sessions[i % 8].post(gw.url + PATHS[api], data=raw, timeout=60,
                                 headers={**gw.headers(), "anthropic-version": "2023-06-01"})
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code == 200 and "text/event-stream" in r.headers.get("content-type", ""):
            body = {}
        return api, raw[:200], r.status_code, body

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, enumerate(cases(400, seed=13))))
    server = [(a, raw, s, b) for a, raw, s, b in results if s >= 500]
    assert not server, server[:5]
    bad_shape = [(a, s, b) for a, raw, s, b in results
                 if not isinstance(b, dict) or not _api_format(a, s, b)]
    assert not bad_shape, bad_shape[:5]
    statuses = {s for _, _, s, _ in results}
    assert 400 in statuses  # the run did exercise the checks
