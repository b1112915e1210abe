"""Start the relay (and the metrics endpoint) once per plugin-server process."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from email.parser import Parser
from io import BufferedIOBase
from typing import cast

from gevent.pywsgi import OldMessage, WSGIHandler, WSGIServer
from gevent.socket import socket as GeventSocket

from .. import metrics
from ..errors import ANTHROPIC, OPENAI, GatewayError
from ..logs import setup_logging
from .app import application

log = logging.getLogger("aigw")

_server: WSGIServer | None = None


# Kong forwards every request header it accepted: nginx limits the request head by size,
# not count (Kong 3.9.1 kong.conf.default 1103-1111: client_header_buffer_size 1k,
# large_client_header_buffers 4 8k, so about 33 KiB), and Kong adds its own few. pywsgi parses
# headers with http.client, which refuses more than 100 and answers a bare 400. The relay
# accepts any count within a size bound well above Kong's and errors in the API's format.
MAX_HEADER_BYTES = 256 * 1024
MAX_HEADER_LINE = 64 * 1024


class HeaderLimit(ValueError):
    """The request head is larger than the relay accepts (431)."""


def _parse_headers(fp: BufferedIOBase) -> OldMessage:
    """Like ``http.client.parse_headers`` without its 100-header cap."""
    lines: list[bytes] = []
    total = 0
    while True:
        line = fp.readline(MAX_HEADER_LINE + 1)
        if len(line) > MAX_HEADER_LINE:
            raise HeaderLimit("a request header line is too long")
        total += len(line)
        if total > MAX_HEADER_BYTES:
            raise HeaderLimit("the request headers are too large")
        if line in (b"\r\n", b"\n", b""):
            break
        lines.append(line)
    # the message class pywsgi's own headers_factory builds on Python 3
    return Parser(_class=OldMessage).parsestr(b"".join(lines).decode("iso-8859-1"))


class OneWriteHandler(WSGIHandler):
    """pywsgi sends the status line + headers and the first body chunk in two syscalls
    (gevent 26 ``WSGIHandler._write_with_headers``); a relay answer is usually one small
    body, so send both in one write: one wake-up of Kong instead of two.

    Request headers: any number (see ``MAX_HEADER_BYTES``); a malformed or oversized request
    head gets a JSON error in the API's format instead of pywsgi's empty 400."""

    def MessageClass(self, fp: BufferedIOBase, *_: object) -> OldMessage:
        msg = _parse_headers(fp)
        msg.status = ""
        return msg

    def _handle_client_error(self, ex: BaseException) -> tuple[str, bytes]:
        api = ANTHROPIC if (getattr(self, "path", "") or "").split("?")[0].rstrip("/").endswith("/messages") \
            else OPENAI
        if isinstance(ex, HeaderLimit):
            err = GatewayError(431, f"Request header fields too large: {ex}.", code="headers_too_large")
        else:
            err = GatewayError(400, "Malformed HTTP request.", code="bad_request")
        body = err.encode(api)
        status = f"{err.status} {'Request Header Fields Too Large' if err.status == 431 else 'Bad Request'}"
        head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        log.warning("aigw relay refused a request: %s", type(ex).__name__)
        return (str(err.status), head + body)

    def _write_with_headers(self, data: bytes) -> None:
        if not data or len(data) > 65536:
            # a private pywsgi method (gevent 26), not in types-gevent
            super()._write_with_headers(data)  # type: ignore[misc]
            return
        self.headers_sent = True
        self.finalize_headers()
        # after start_response pywsgi holds the status line and the headers latin-1 encoded
        # (gevent 26 WSGIHandler.start_response); types-gevent declares them as str
        status = cast(bytes, self.status)
        headers = cast(list[tuple[bytes, bytes]], self.response_headers)
        towrite = bytearray(b"HTTP/1.1 ")
        towrite += status
        towrite += b"\r\n"
        for header, value in headers:
            towrite += header + b": " + value + b"\r\n"
        towrite += b"\r\n"
        if self.response_use_chunked:
            towrite += b"%x\r\n" % len(data) + data + b"\r\n"
        else:
            towrite += data
        self._sendall(towrite)  # type: ignore[attr-defined]  # private pywsgi method, not in types-gevent


class NoDelayWSGIServer(WSGIServer):
    """pywsgi sends a response's headers and body in two writes; with Nagle on, the
    body waits for the peer's delayed ACK (40 ms on Linux) on every keep-alive
    request, and small SSE events queue behind each other. nginx (Kong) runs its
    side with tcp_nodelay on; so does this server."""

    def handle(self, sock: GeventSocket, address: str) -> None:
        with contextlib.suppress(OSError):  # not TCP (e.g. a unix socket)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)


def relay_address() -> tuple[str, int]:
    return (os.environ.get("AIGW_RELAY_HOST", "127.0.0.1"),
            int(os.environ.get("AIGW_RELAY_PORT", "8790")))


def ensure_started() -> None:
    """Idempotent; called when Kong starts the first plugin instance
    (``plugin.StartInstance``), so ``--dump-all-plugins`` starts nothing."""
    global _server
    if _server is not None:
        return
    setup_logging()
    host, port = relay_address()
    _server = NoDelayWSGIServer((host, port), application, log=None, error_log=None,
                                handler_class=OneWriteHandler)
    _server.start()
    log.info("aigw relay listening on %s:%d", host, port)
    metrics_port = os.environ.get("AIGW_METRICS_PORT")
    if metrics_port:
        metrics.start_server(int(metrics_port), os.environ.get("AIGW_METRICS_HOST", "127.0.0.1"))
        log.info("aigw metrics on :%s/metrics", metrics_port)
