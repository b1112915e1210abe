"""Core of the Kong AI gateway. Nothing in this package imports the Kong PDK.

The Kong-facing adapters live in ``plugins/`` (one module per Kong plugin) and
call into this package; the relay (``aigw.relay``) runs inside the same
plugin-server process.
"""

__version__ = "0.1.0"
