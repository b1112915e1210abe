"""One HTTP exchange with a provider: send, classify what failed, and give the
connection back to the pool only when it is provably clean.

Two rules keep pooled keep-alive connections from poisoning later requests and
keep failover from sending one request twice:

* A connection goes back to the pool only after its response was read to the
  end (urllib3 releases it by itself once the body reached EOF).  A response
  left unread — a stream we stop reading at ``[DONE]`` before the chunked
  terminator, a broken stream, a timeout, a client that went away — has its
  connection closed and discarded.  (``http.client`` refuses to read the next
  answer on a connection whose previous response is still open: the next
  request would be *sent* and then fail with ``ResponseNotReady``.)
* A failure is ``connect`` (the request never left: the TCP connection could
  not be made) only for urllib3's ``NewConnectionError`` / ``ConnectTimeoutError``,
  raised before a byte of the request was written.  Anything that fails after
  that is ``sent``: the provider may have received and processed the request,
  so it is not retried anywhere.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import gevent
import urllib3
from urllib3.connectionpool import HTTPConnectionPool

if TYPE_CHECKING:  # urllib3 declares its connection protocol for type checkers only
    from urllib3._base_connection import BaseHTTPConnection


def _unread(conn: BaseHTTPConnection) -> bool:
    """True when ``conn`` still has a response that was not read to its end (http.client keeps
    it until then and refuses the next ``getresponse`` with ``ResponseNotReady('Request-sent')``
    after the request was already sent)."""
    r = getattr(conn, "_HTTPConnection__response", None)
    return r is not None and not r.isclosed()


class _CleanPutMixin(HTTPConnectionPool):
    """The pool's own guard of the first rule: a connection put back with its previous response
    unread is closed first (urllib3 reconnects it on the next use), whoever released it."""

    def _put_conn(self, conn: BaseHTTPConnection | None) -> None:
        if conn is not None and _unread(conn):
            conn.close()
        super()._put_conn(conn)


class CleanHTTPConnectionPool(_CleanPutMixin, urllib3.HTTPConnectionPool):
    pass


class CleanHTTPSConnectionPool(_CleanPutMixin, urllib3.HTTPSConnectionPool):
    pass


POOL = urllib3.PoolManager(num_pools=64, maxsize=64, block=False, retries=False)
POOL.pool_classes_by_scheme = {"http": CleanHTTPConnectionPool, "https": CleanHTTPSConnectionPool}

# after the stream's last event, how long and how much we read to reach the body's end
DRAIN_SECONDS = 2.0
DRAIN_BYTES = 64 * 1024


class SendFailed(Exception):
    """No HTTP response came back.  ``kind``: connect (never left) | timeout (sent, no
    answer within first_byte) | sent (sent, then the connection failed)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def send(method: str, url: str, body: bytes | None, headers: dict[str, str],
         connect_timeout: float, read_timeout: float) -> urllib3.BaseHTTPResponse:
    """urlopen with the failure classified; the response body is left unread."""
    timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
    try:
        return POOL.urlopen(method, url, body=body, headers=headers, timeout=timeout,
                            retries=False, redirect=False, preload_content=False,
                            decode_content=True)
    except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError):
        raise SendFailed("connect") from None
    except urllib3.exceptions.ReadTimeoutError:
        raise SendFailed("timeout") from None
    except (urllib3.exceptions.HTTPError, OSError):
        raise SendFailed("sent") from None


def finish(resp: urllib3.BaseHTTPResponse, complete: bool) -> bool:
    """Done with ``resp``: when ``complete`` (the payload was fully decoded), read what is
    left of the body (the chunked terminator, trailing bytes) within a small bound so
    urllib3 returns the connection to the pool; otherwise, or if the end is not reached
    within the bound, close the connection.  True when the connection was kept."""
    if complete and _drain(resp):
        resp.release_conn()  # no-op when urllib3 already released it at EOF
        return True
    discard(resp)
    return False


def discard(resp: urllib3.BaseHTTPResponse) -> None:
    """Close the connection under ``resp`` (never returned to the pool)."""
    with contextlib.suppress(Exception):
        resp.close()


def _drain(resp: urllib3.BaseHTTPResponse) -> bool:
    seen = 0
    try:
        # False: the block ends quietly at the deadline (documented by gevent.Timeout;
        # types-gevent's signature leaves the False form out)
        with gevent.Timeout(DRAIN_SECONDS, False):  # type: ignore[arg-type]
            while seen <= DRAIN_BYTES:
                data = resp.read1(DRAIN_BYTES)
                if not data:
                    return _at_end(resp)
                seen += len(data)
    except Exception:
        return False
    return False


def _at_end(resp: urllib3.BaseHTTPResponse) -> bool:
    fp = getattr(resp, "_fp", None)
    return fp is None or fp.isclosed()
