"""Test-only kong-pdk plugin module: fault injection for ai-redact.

Not a real plugin (never configured on a route). Importing it, which the
plugin server does for every module in its plugins directory, replaces
``aigw.gateway.redact.scan_request`` with a wrapper that raises for any
request body containing ``TRIGGER`` and scans everything else normally, so a
single gateway shows both the failure path and the normal path.
"""
import orjson

import aigw.gateway.redact as _redact

TRIGGER = "EXPLODE-THE-DETECTOR"
_real_scan = _redact.scan_request


def _faulty_scan(cfg, api, body):
    if TRIGGER in orjson.dumps(body).decode():
        raise RuntimeError("injected detector failure")
    return _real_scan(cfg, api, body)


_redact.scan_request = _faulty_scan

version = "0.0.1"
priority = 1
Schema = []


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        return None
