"""Start the relay (and the metrics endpoint) once per plugin-server process."""
from __future__ import annotations

import logging
import os
import socket

from gevent.pywsgi import WSGIHandler, WSGIServer

from ..logs import setup_logging

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


def _parse_headers(fp):
    """Like ``http.client.parse_headers`` without its 100-header cap."""
    from email.parser import Parser

    from gevent.pywsgi import headers_factory

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
    msg_class = type(headers_factory(__import__("io").BytesIO(b"\r\n")))
    return Parser(_class=msg_class).parsestr(b"".join(lines).decode("iso-8859-1"))


class OneWriteHandler(WSGIHandler):
    """pywsgi sends the status line + headers and the first body chunk in two syscalls
    (gevent 26 ``WSGIHandler._write_with_headers``); a relay answer is usually one small
    body, so send both in one write: one wake-up of Kong instead of two.

    Request headers: any number (see ``MAX_HEADER_BYTES``); a malformed or oversized request
    head gets a JSON error in the API's format instead of pywsgi's empty 400."""

    def MessageClass(self, fp, *_):  # noqa: N802 - pywsgi's name
        msg = _parse_headers(fp)
        msg.status = ""
        return msg

    def _handle_client_error(self, ex):
        from ..errors import ANTHROPIC, OPENAI, GatewayError

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

    def _write_with_headers(self, data):
        if not data or len(data) > 65536:
            return super()._write_with_headers(data)
        self.headers_sent = True
        self.finalize_headers()
        towrite = bytearray(b"HTTP/1.1 ")
        towrite += self.status
        towrite += b"\r\n"
        for header, value in self.response_headers:
            towrite += header + b": " + value + b"\r\n"
        towrite += b"\r\n"
        if self.response_use_chunked:
            towrite += b"%x\r\n" % len(data) + data + b"\r\n"
        else:
            towrite += data
        self._sendall(towrite)


class NoDelayWSGIServer(WSGIServer):
    """pywsgi sends a response's headers and body in two writes; with Nagle on, the
    body waits for the peer's delayed ACK (40 ms on Linux) on every keep-alive
    request, and small SSE events queue behind each other. nginx (Kong) runs its
    side with tcp_nodelay on; so does this server."""

    def handle(self, sock, address):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (e.g. a unix socket)
            pass
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
    from .app import application
    host, port = relay_address()
    _server = NoDelayWSGIServer((host, port), application, log=None, error_log=None,
                                handler_class=OneWriteHandler)
    _server.start()
    log.info("aigw relay listening on %s:%d", host, port)
    metrics_port = os.environ.get("AIGW_METRICS_PORT")
    if metrics_port:
        from .. import metrics
        metrics.start_server(int(metrics_port), os.environ.get("AIGW_METRICS_HOST", "127.0.0.1"))
        log.info("aigw metrics on :%s/metrics", metrics_port)
