"""Per-plugin access logic over a RequestContext (no PDK).

Each ``*Runtime`` is built once per plugin instance from its validated config
and decides in ``access(ctx)``: it mutates the context or raises
``GatewayError`` (deny) / ``Respond`` (answer directly).  ``plugins/*.py``
only move data between Kong's PDK and these objects.
"""
