"""Deterministic mock of the LLM provider APIs the gateway speaks to.

See docs/mock.md.  ``python -m aigw_dev.mock`` runs it; ``aigw_dev.mock.testing.MockProvider``
starts it inside a test.
"""
from .server import DEFAULT_API_KEY, MockServer, MockState, make_server

__all__ = ["DEFAULT_API_KEY", "MockServer", "MockState", "make_server"]
