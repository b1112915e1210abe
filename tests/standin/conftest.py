"""A tiny local upstream for the stand-in tests (threaded, HTTP/1.1, can stream chunks)."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class Upstream:
    def __init__(self, name: str):
        self.name = name
        self.requests: list[dict[str, Any]] = []
        self.first_chunk_seen = threading.Event()  # set by a test once the client got chunk 1
        self.released_by_client: list[bool] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {"method": self.command, "path": self.path,
                          "headers": {k.lower(): v for k, v in self.headers.items()},
                          "body": body.decode("utf-8", "replace")}
                upstream.requests.append(record)
                if self.path.startswith("/stream") or self.path.startswith("/base/stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self._chunk(b"data: first\n\n")
                    hold = float(self.path.partition("hold=")[2] or 10)
                    released = upstream.first_chunk_seen.wait(hold)
                    upstream.released_by_client.append(released)
                    self._chunk(b"data: second\n\n")
                    self._chunk(b"")
                    return
                data = json.dumps(dict(record, upstream=upstream.name)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Upstream", upstream.name)
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.first_chunk_seen.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    a, b = Upstream("a"), Upstream("b")
    yield a, b
    a.close()
    b.close()
