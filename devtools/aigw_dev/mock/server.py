"""The mock's HTTP server: stdlib ``ThreadingHTTPServer``, HTTP/1.1 keep-alive.

Plain responses carry Content-Length; streams use chunked transfer encoding
with one chunk per event, each written (and so sent) at once.
"""
from __future__ import annotations

import itertools
import re
import socket
import sys
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from . import anthropic_api, bedrock_api, gemini_api, openai_api, responses_api, vertex_api
from .wire import Request, Response, Stream, json_response

DEFAULT_API_KEY = "mock-key"
RECORD_LIMIT = 10_000

_AZURE = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|embeddings)$")
_GEMINI = re.compile(r"^/v1(?:beta|alpha)?/models/([^/:]+):(generateContent|streamGenerateContent)$")
_BEDROCK = re.compile(r"^/model/([^/]+)/(converse|converse-stream)$")
_VERTEX = re.compile(r"^/v1/projects/[^/]+/locations/[^/]+/publishers/(google|anthropic)/models/"
                     r"([^/:]+):(\w+)$")


class MockState:
    """Expected key, id counter and the record of received requests."""

    def __init__(self, api_key: str | None = DEFAULT_API_KEY,
                 record_limit: int = RECORD_LIMIT) -> None:
        self.api_key = api_key
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._records: deque[dict[str, Any]] = deque(maxlen=record_limit)
        self._tokens: dict[str, float] = {}  # OAuth access token -> expiry (vertex)

    def issue(self, token: str, expires: float) -> None:
        with self._lock:
            self._tokens[token] = expires

    def token_valid(self, token: str) -> bool:
        with self._lock:
            return self._tokens.get(token, 0.0) > time.time()

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._records.append(entry)

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


def route(req: Request) -> Response | Stream:
    """Dispatch one provider request (``/_mock/*`` is handled by the server)."""
    path, method = req.path, req.method
    if method == "POST" and path == "/v1/chat/completions":
        return openai_api.check_auth(req) or openai_api.chat(req)
    if method == "POST" and path == "/v1/responses":
        return openai_api.check_auth(req) or responses_api.create(req)
    if method == "POST" and path == "/v1/embeddings":
        return openai_api.check_auth(req) or openai_api.embeddings(req)
    if method == "GET" and path == "/v1/models":
        return openai_api.check_auth(req) or openai_api.models(req)
    if method == "POST" and path == "/v1/messages":
        return anthropic_api.check_auth(req) or anthropic_api.chat(req)
    if method == "POST" and path == "/v1/messages/count_tokens":
        return anthropic_api.check_auth(req) or anthropic_api.count_tokens(req)
    if method == "POST" and (m := _AZURE.match(path)):
        denied = openai_api.check_auth(req, azure=True)
        if denied:
            return denied
        if not req.query.get("api-version"):
            return json_response(400, {"error": {
                "code": "BadRequest", "message": "Missing required query parameter: api-version"}})
        deployment = unquote(m.group(1))
        if m.group(2) == "embeddings":
            return openai_api.embeddings(req, deployment)
        return openai_api.chat(req, deployment)
    if method == "POST" and (m := _GEMINI.match(path)):
        return gemini_api.check_auth(req) or gemini_api.generate(
            req, unquote(m.group(1)), m.group(2) == "streamGenerateContent")
    if method == "POST" and (m := _BEDROCK.match(path)):
        return bedrock_api.check_auth(req) or bedrock_api.converse(
            req, unquote(m.group(1)), m.group(2) == "converse-stream")
    if method == "POST" and (m := _VERTEX.match(path)):
        return vertex_api.predict(req, m.group(1), unquote(m.group(2)), m.group(3))
    if method == "POST" and path == "/token":
        return vertex_api.token(req)
    return openai_api.error(404, f"Unknown route: {method} {path}", "not_found",
                            "invalid_request_error")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "aigw-mock"
    disable_nagle_algorithm = True  # each stream chunk leaves at once
    timeout = 300  # idle keep-alive connections are dropped after this
    server: MockServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # no access log: bodies may carry prompt content

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        raw = self._read_body()
        if url.path.startswith("/_mock/"):
            self._send(self._control(url.path))
            return
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = raw.decode("utf-8", errors="replace")
        state.record({"method": self.command, "path": url.path, "query": query,
                      "headers": headers, "body": body, "time": time.time()})
        req = Request(self.command, url.path, query, headers, body, state.api_key,
                      state.next_id, state, raw, url.path)
        resp = route(req)
        if resp.slow_ms:
            time.sleep(resp.slow_ms / 1000)
        if isinstance(resp, Stream):
            self._stream(resp)
        else:
            self._send(resp)

    def _control(self, path: str) -> Response:
        state = self.server.state
        if path == "/_mock/health":
            return json_response(200, {"status": "ok"})
        if path == "/_mock/requests" and self.command == "GET":
            return json_response(200, state.requests())
        if path == "/_mock/requests" and self.command == "DELETE":
            state.clear()
            return json_response(200, {"cleared": True})
        return json_response(404, {"error": "unknown mock control route"})

    def _head(self, status: int, content_type: str, extra: dict[str, str]) -> bytes:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Status"
        lines = [f"HTTP/1.1 {status} {phrase}", f"Server: {self.server_version}",
                 f"Content-Type: {content_type}"]
        lines += [f"{k}: {v}" for k, v in extra.items()]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    def _send(self, resp: Response) -> None:
        if resp.drop:
            self.close_connection = True
            return
        head = self._head(resp.status, resp.content_type, resp.headers)
        body = b"" if self.command == "HEAD" else resp.body
        try:
            self.wfile.write(head + b"Content-Length: %d\r\n\r\n" % len(resp.body) + body)
        except OSError:
            self.close_connection = True

    def _stream(self, resp: Stream) -> None:
        head = self._head(200, resp.content_type, {"Cache-Control": "no-cache"})
        events = resp.events if resp.cut_at is None else resp.events[:resp.cut_at]
        out = head + b"Transfer-Encoding: chunked\r\n\r\n"  # sent with the first event
        try:
            for i, ev in enumerate(events):
                if i and resp.delay_ms:
                    time.sleep(resp.delay_ms / 1000)
                self.wfile.write(out + b"%x\r\n%s\r\n" % (len(ev), ev))
                out = b""
            if resp.cut_at is not None:
                if out:
                    self.wfile.write(out)  # nothing sent yet: at least the headers
                self.close_connection = True  # drop the connection mid-stream
                return
            self.wfile.write(out + b"0\r\n\r\n")
        except OSError:
            self.close_connection = True


class MockServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    state: MockState

    def __init__(self, address: tuple[str, int], state: MockState) -> None:
        self.state = state
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients dropping connections is normal here; report anything else briefly."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) or sys.is_finalizing():
            return
        print(f"aigw-mock: {type(exc).__name__} while handling a request", file=sys.stderr)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"


def make_server(host: str = "127.0.0.1", port: int = 0,
                api_key: str | None = DEFAULT_API_KEY,
                record_limit: int = RECORD_LIMIT) -> MockServer:
    """Bind (port 0: a free port) without serving yet; call ``serve_forever``."""
    return MockServer((host, port), MockState(api_key, record_limit))

