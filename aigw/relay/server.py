"""Start the relay (and the metrics endpoint) once per plugin-server process."""
from __future__ import annotations

import logging
import os
import socket

from gevent.pywsgi import WSGIHandler, WSGIServer

from ..plugin_base import setup_logging

log = logging.getLogger("aigw")

_server: WSGIServer | None = None


class OneWriteHandler(WSGIHandler):
    """pywsgi sends the status line + headers and the first body chunk in two syscalls
    (gevent 26 ``WSGIHandler._write_with_headers``); a relay answer is usually one small
    body, so send both in one write: one wake-up of Kong instead of two."""

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
