"""``python -m aigw_dev.mock --port 9100 [--host 127.0.0.1] [--api-key mock-key]``."""
from __future__ import annotations

import argparse
import signal
import sys

from .server import DEFAULT_API_KEY, RECORD_LIMIT, make_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aigw-mock",
                                     description="Mock LLM providers for tests and benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY,
                        help="key every provider API expects; empty string: accept any")
    parser.add_argument("--record-limit", type=int, default=RECORD_LIMIT,
                        help="most recent requests kept for /_mock/requests")
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, args.api_key or None, args.record_limit)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # the first stdout line tells a parent process where we listen
    print(f"aigw-mock listening on {server.url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
