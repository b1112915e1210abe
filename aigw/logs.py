"""The gateway's own log: failures by type and code location only, never values."""
from __future__ import annotations

import logging
import sys
import traceback

log = logging.getLogger("aigw")


def log_failure(plugin: str, phase: str, exc: BaseException) -> None:
    """Log an internal failure by type and code location only (no values)."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}:{f.name}" for f in reversed(tb[-4:]))
    log.error("aigw plugin=%s phase=%s error=%s at %s", plugin, phase, type(exc).__name__, where)


def setup_logging() -> None:
    if getattr(setup_logging, "_done", False):
        return
    setup_logging._done = True  # type: ignore[attr-defined]
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("aigw")
    root.addHandler(h)
    root.setLevel(logging.INFO)
    root.propagate = False
