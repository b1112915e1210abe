"""The provider connection pool (aigw/relay/upstream.py, issue 13): a connection released with
its response unread is never reused as is, whoever released it; one read to its end is."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from aigw.relay import upstream


class _Chunked(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: ClassVar[set[tuple[str, int]]] = set()

    def log_message(self, *a):
        pass

    def do_GET(self):
        _Chunked.connections.add(self.client_address)
        # the whole answer in one write: the client's buffer holds the terminator, the socket
        # is empty, so urllib3's "dropped connection" check on reuse cannot see the unread end
        self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n0\r\n\r\n")


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Chunked)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Chunked.connections = set()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def _get(url: str):
    return upstream.send("GET", url, None, {}, 2.0, 2.0)


def test_a_connection_released_unread_is_not_reused_as_is(server):
    resp = _get(server)
    assert resp.read1(5) == b"hello"  # the event we wanted; the chunked terminator is unread
    resp.release_conn()               # released early (as a relay path once did)
    again = _get(server)              # before the fix: ResponseNotReady('Request-sent') -> "sent"
    assert again.status == 200 and again.read() == b"hello"
    assert len(_Chunked.connections) == 2  # a fresh connection, not the poisoned one


def test_a_connection_read_to_its_end_is_reused(server):
    resp = _get(server)
    assert resp.read1(5) == b"hello"
    assert upstream.finish(resp, True) is True  # drained to the terminator, then pooled
    again = _get(server)
    assert again.read() == b"hello"
    assert len(_Chunked.connections) == 1
