"""Development tooling of the Kong AI gateway: NOT part of the product.

A separate distribution (``aigw-dev``, ``devtools/pyproject.toml``) that ``make install`` installs
editable beside the product for tests, ``make dev`` and ``bench/``; the production image does not
install it. It holds the Kong stand-in (``aigw_dev.standin``), the mock providers
(``aigw_dev.mock``) and ``make dev`` (``aigw_dev.dev``). It works from a checkout only: it reads
``kong/kong.yml`` and ``plugins/`` of the repository.
"""
from __future__ import annotations

import os
from pathlib import Path

# devtools/aigw_dev/__init__.py -> the checkout (aigw/, plugins/, kong/, schemas/)
REPO_ROOT = Path(__file__).resolve().parents[2]
DEVTOOLS_DIR = REPO_ROOT / "devtools"


def child_pythonpath(existing: str | None = None) -> str:
    """PYTHONPATH for a child process that imports ``aigw`` and ``aigw_dev`` from this checkout,
    installed or not (the checkout comes first, as for the parent under ``make``)."""
    return os.pathsep.join(p for p in (str(REPO_ROOT), str(DEVTOOLS_DIR), existing or "") if p)
