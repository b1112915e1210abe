"""Launch and query kong-pdk's Python plugin server (the only module importing kong_pdk).

``aigw-pluginserver`` is kong-pdk's own ``kong-python-pluginserver`` (``kong_pdk.cli.start_server``)
with gevent monkey-patching applied first: kong-pdk's ``-g`` mode spawns greenlets but never
patches the standard library, so our relay and Redis clients would block the whole server.

``aigw-plugin-info -d DIR NAME`` is the ``pluginserver_<name>_query_cmd`` Kong runs with
``io.popen`` (kong/runloop/plugin_servers/process.lua ``query_external_plugin_info``): it prints a
JSON array whose first (and only) element is ``PluginServer.get_plugin_info(NAME)``. kong-pdk 0.36's
own ``--dump-plugin-info`` cannot serve here: it unpacks a dict as a tuple and prints msgpack.
"""
from __future__ import annotations

import argparse
import contextlib
import sys


def main() -> None:
    """Console script ``aigw-pluginserver``: same argv as ``kong-python-pluginserver``."""
    from gevent import monkey

    monkey.patch_all()
    from kong_pdk.cli import start_server

    _warm_prices()
    start_server()


def _warm_prices() -> None:
    """Load the price catalogue (~0.5 s) before serving, not on the first request."""
    try:
        from .cost.pricing import PriceTable
        PriceTable.default()
    except Exception as exc:  # the first request loads it (and reports) instead
        print(f"aigw: price catalogue not preloaded: {type(exc).__name__}", file=sys.stderr)


def plugin_info(plugins_dir: str, name: str) -> dict:
    """The info dict kong-pdk reports for one plugin (loads the plugin modules, starts nothing)."""
    from kong_pdk.logger import Logger
    from kong_pdk.server import PluginServer

    # kong-pdk's Logger and the plugin modules write to stdout; stdout must carry only the JSON
    with contextlib.redirect_stdout(sys.stderr):
        ps = PluginServer(loglevel=Logger.WARNING, plugin_dir=plugins_dir, use_gevent=True)
        return ps.get_plugin_info(name)


def plugin_info_main(argv: list[str] | None = None) -> None:
    """Console script ``aigw-plugin-info -d PLUGINS_DIR NAME``: a one-element JSON array."""
    import orjson

    parser = argparse.ArgumentParser(prog="aigw-plugin-info", description=__doc__)
    parser.add_argument("-d", "--plugins-directory", dest="directory", required=True)
    parser.add_argument("name")
    args = parser.parse_args(argv)
    try:
        info = plugin_info(args.directory, args.name)
    except Exception as exc:  # kong-pdk raises PluginServerException("<name> not initizlied")
        print(f"aigw-plugin-info: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    sys.stdout.buffer.write(orjson.dumps([info]))
    sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


if __name__ == "__main__":
    # ``python -m aigw.pluginserver plugin-info -d DIR NAME`` when the console scripts are absent
    if sys.argv[1:2] == ["plugin-info"]:
        plugin_info_main(sys.argv[2:])
    else:
        main()
