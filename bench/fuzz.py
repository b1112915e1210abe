"""Fuzz the whole gateway with malformed requests; count any 5xx the gateway made.

    .venv/bin/python bench/fuzz.py                 # 10,000 requests, 8 clients
    .venv/bin/python bench/fuzz.py -n 2000 --seed 7 --json bench/results/fuzz.json

Starts the mock (a child process) and the stand-in on the reference kong.yml with
all five AI plugins (limits raised, as in bench/run.py), then sends the requests of
``aigw_dev.mock.fuzz.cases`` through ``/v1/chat/completions``, ``/v1/messages`` and
``/v1/embeddings``. Reports the count per status, every 5xx (body excerpt and the
answer's error code), answers not in the API's error format, and hangs (client
timeout). Exit status 1 when any 5xx, hang or format error was seen.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "devtools"))  # aigw_dev: the stand-in and the mock
sys.path.insert(0, str(ROOT / "bench"))

from aigw_dev.dev import demo_token, gateway_env  # noqa: E402
from aigw_dev.mock.fuzz import PATHS, cases  # noqa: E402
from aigw_dev.mock.testing import MockProvider  # noqa: E402
from aigw_dev.standin.testing import StandIn, free_port  # noqa: E402
from run import bench_config  # noqa: E402


def well_formed(api: str, body) -> bool:
    if not isinstance(body, dict):
        return False
    err = body.get("error")
    if api == "anthropic":
        return body.get("type") == "error" and isinstance(err, dict) and isinstance(err.get("type"), str)
    return isinstance(err, dict) and isinstance(err.get("message"), str)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import requests

    with MockProvider(process=True, api_key=None) as mock:
        relay_port = free_port()
        env = gateway_env(mock.url)
        env.update({"AIGW_RELAY_PORT": str(relay_port), "AIGW_METRICS_PORT": str(free_port()),
                    "AIGW_REDIS_PREFIX": f"aigw-fuzz:{uuid.uuid4().hex[:8]}:"})
        with StandIn(bench_config(relay_port, mock.url), env=env, plugins_dir=ROOT / "plugins") as kong:
            headers = {"Authorization": f"Bearer {demo_token()}", "Content-Type": "application/json",
                       "anthropic-version": "2023-06-01"}
            sessions = [requests.Session() for _ in range(args.clients)]

            def send(item):
                i, (api, raw) = item
                try:
                    r = sessions[i % args.clients].post(kong.url + PATHS[api], data=raw, headers=headers,
                                                        timeout=args.timeout)
                except requests.Timeout:
                    return api, raw, "hang", None
                except requests.RequestException as exc:
                    return api, raw, f"client:{type(exc).__name__}", None
                if r.status_code == 200:
                    return api, raw, 200, None
                try:
                    body = r.json()
                except ValueError:
                    body = None
                return api, raw, r.status_code, body

            t0 = time.time()
            with ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(send, enumerate(cases(args.n, args.seed))))
            elapsed = time.time() - t0
    by_status = collections.Counter(str(s) for _, _, s, _ in results)
    server = [(a, raw, s, b) for a, raw, s, b in results if isinstance(s, int) and s >= 500]
    odd = [(a, s) for a, raw, s, b in results if isinstance(s, int) and s != 200 and not well_formed(a, b)]
    hangs = [1 for _, _, s, _ in results if s == "hang"]
    codes = collections.Counter(
        f"{s} {((b or {}).get('error') or {}).get('code') or ((b or {}).get('error') or {}).get('type')}"
        for a, raw, s, b in results if isinstance(s, int) and s >= 400)
    report = {"requests": args.n, "seed": args.seed, "seconds": round(elapsed, 1),
              "statuses": dict(sorted(by_status.items())), "gateway_5xx": len(server),
              "not_in_api_format": len(odd), "hangs": len(hangs),
              "error_codes": dict(codes.most_common()),
              "5xx_examples": [{"api": a, "status": s, "error": (b or {}).get("error"),
                                "body": raw[:300].decode("utf-8", "replace")} for a, raw, s, b in server[:20]]}
    print(f"{args.n} malformed requests in {elapsed:.0f}s: statuses {report['statuses']}")
    print(f"gateway 5xx: {len(server)}   not in the API's error format: {len(odd)}   hangs: {len(hangs)}")
    for code, n in codes.most_common(15):
        print(f"  {n:6d}  {code}")
    for ex in report["5xx_examples"][:10]:
        print("  5xx:", orjson.dumps(ex).decode()[:400])
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    sys.exit(1 if server or odd or hangs else 0)


if __name__ == "__main__":
    main()
