"""aigw-pluginserver's instance ids (issue 11 item 4): unique across restarts, and an id whose
plugin slot does not match its instance is refused like an unknown one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from aigw.pluginserver import N_BITS, _server_class, next_generation

PLUGINS = Path(__file__).resolve().parents[1] / "standin" / "plugins"


def _server(gen_file: Path):
    from kong_pdk.logger import Logger

    return _server_class()(loglevel=Logger.ERROR, plugin_dir=str(PLUGINS), use_gevent=True,
                           lua_style=False, gen_file=str(gen_file))


def _start(ps, name: str, conf: dict) -> int:
    return ps.start_instance({"Name": name, "Config": json.dumps(conf)})["Id"]


def test_generations_advance_and_wrap(tmp_path):
    f = tmp_path / "g"
    f.write_text("2046")
    assert [next_generation(str(f)) for _ in range(3)] == [2047, 1, 2]


def test_ids_never_repeat_across_restarts_and_stay_below_2_31(tmp_path):
    gen = tmp_path / "aigw.sock.gen"
    seen: set[int] = set()
    for _ in range(3):  # three server processes on the same socket
        ps = _server(gen)
        ids = [_start(ps, "tagger", {"tag": "t"}), _start(ps, "echo", {}), _start(ps, "tagger", {"tag": "u"})]
        assert len(set(ids)) == 3 and not set(ids) & seen
        assert all(0 <= i < 2 ** 31 for i in ids)
        seen |= set(ids)


def test_handle_event_refuses_unknown_and_mismatched_ids(tmp_path):
    from kong_pdk.exception import PluginServerException

    ps = _server(tmp_path / "g")
    tid = _start(ps, "tagger", {"tag": "t"})
    with pytest.raises(PluginServerException, match="no plugin instance"):
        ps.handle_event({"InstanceId": tid + 1, "EventName": "access"})
    # the same counter under another plugin's slot: not this instance
    other_slot = tid ^ (1 << N_BITS)
    ps.instances[other_slot] = ps.instances[tid]
    with pytest.raises(PluginServerException, match="no plugin instance"):
        ps.handle_event({"InstanceId": other_slot, "EventName": "access"})
