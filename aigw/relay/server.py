"""Start the relay (and the metrics endpoint) once per plugin-server process."""
from __future__ import annotations

import logging
import os

from gevent.pywsgi import WSGIServer

from ..plugin_base import setup_logging

log = logging.getLogger("aigw")

_server: WSGIServer | None = None


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
    _server = WSGIServer((host, port), application, log=None, error_log=None)
    _server.start()
    log.info("aigw relay listening on %s:%d", host, port)
    metrics_port = os.environ.get("AIGW_METRICS_PORT")
    if metrics_port:
        from .. import metrics
        metrics.start_server(int(metrics_port), os.environ.get("AIGW_METRICS_HOST", "127.0.0.1"))
        log.info("aigw metrics on :%s/metrics", metrics_port)
