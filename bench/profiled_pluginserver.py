"""``aigw-pluginserver`` under cProfile, for ``bench/run.py --profile``.

    python bench/profiled_pluginserver.py OUT.prof <kong-python-pluginserver args>

The stand-in starts it through ``KONG_PLUGINSERVER_<NAME>_START_CMD`` (as Kong would).
SIGUSR1 writes the profile gathered since the previous SIGUSR1 (then starts afresh).
"""
from __future__ import annotations

import cProfile
import signal
import sys
import time

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402


def main() -> None:
    out = sys.argv.pop(1)
    prof = cProfile.Profile(time.process_time)  # CPU time: a send that wakes a peer is not ours

    def dump() -> None:
        prof.disable()
        prof.dump_stats(out)
        prof.clear()
        prof.enable()

    gevent.signal_handler(signal.SIGUSR1, dump)
    from kong_pdk.cli import start_server

    prof.enable()
    start_server()


if __name__ == "__main__":
    main()
