"""Issue 11: the plugins under the behaviours of real Kong 3.9.1 that the stand-in reproduces
(docs/standin.md cites the Kong source of each). Official SDK -> stand-in -> plugin server -> relay.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import requests

from aigw_dev.standin.process import forward_aigw_env, main_env_value, worker_env

from .conftest import Gateway, free_port, reference_config

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello there"}]}


def _walk(node: Any, path: str = "config"):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


# ------------------------------------------------------------------ 1. config as Kong sends it

def test_plugins_accept_the_config_exactly_as_kong_sends_it(gateway):
    """$refs at any depth, no nulls, Kong's __key__/__plugin_id/__seq__/__ws_id and service_id."""
    r = requests.post(gateway.url + "/v1/chat/completions", headers=gateway.headers(), json=CHAT)
    assert r.status_code == 200, r.text
    started = {s["name"]: s["config"] for s in gateway.standin.started_instances()}
    assert {"ai-redact", "ai-router", "ai-cache", "ai-tokens", "ai-cost"} <= set(started)
    router = started["ai-router"]
    # the record holding a resolved reference keeps the original under $refs (init.lua 1880/2023)
    by_name = {p["name"]: p for p in router["providers"]}
    assert by_name["openai"]["$refs"] == {"api_key": "{vault://env/openai-api-key}"}
    assert by_name["openai"]["api_key"] == "***"  # resolved (masked by the stand-in's admin API)
    assert "$refs" not in router  # no top-level field of ai-router was a reference
    for name in ("ai-cache", "ai-tokens", "ai-cost"):
        assert started[name]["$refs"] == {"redis_url": "{vault://env/aigw-redis-url}"}, name
    for name, conf in started.items():
        nulls = [p for p, v in _walk(conf) if v is None]
        assert nulls == [], (name, nulls)  # Kong selects with nulls = false
        assert {"__key__", "__plugin_id", "__seq__", "__ws_id", "service_id"} <= set(conf), name
        assert conf["__key__"].startswith(f"plugins:{name}::"), conf["__key__"]
        # service-scoped: route_id / consumer_id are Lua nils, absent from the JSON
        assert "route_id" not in conf and "consumer_id" not in conf and "plugin_instance_name" not in conf


def test_refs_beside_every_referenced_field_and_a_route_scoped_plugin(make_gateway):
    """A plugin on a route gets route_id; a provider with base_url from a reference gets two $refs."""
    def edit(doc):
        svc = next(s for s in doc["services"] if s["name"] == "ai")
        router = next(p for p in svc["plugins"] if p["name"] == "ai-router")
        router["config"]["providers"][0]["base_url"] = "{vault://env/aigw-test-openai-url}"
        route = next(r for r in svc["routes"] if r["name"] == "openai-chat")
        route["plugins"] = [dict(router, config=dict(router["config"]))]
        route["plugins"][0]["instance_name"] = "router-on-chat"

    gw = make_gateway(edit, env={"AIGW_TEST_OPENAI_URL": "https://api.openai.com/v1"})
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), json=CHAT)
    assert r.status_code == 200, r.text
    conf = next(s["config"] for s in gw.standin.started_instances()
                if s["name"] == "ai-router" and "route_id" in s["config"])
    assert conf["plugin_instance_name"] == "router-on-chat"
    assert conf["providers"][0]["$refs"] == {"api_key": "{vault://env/openai-api-key}",
                                            "base_url": "{vault://env/aigw-test-openai-url}"}


# ------------------------------------------------------------------ 2. the plugin server's environment

def test_worker_env_is_what_nginx_keeps():
    env = {"TZ": "UTC", "HOME": "/root", "AIGW_A": "1", "AIGW_B": "2", "SECRET": "s",
           "KONG_NGINX_MAIN_ENV": main_env_value(["AIGW_A", "AIGW_MISSING", "X=set-here"])}
    assert worker_env(env) == {"TZ": "UTC", "AIGW_A": "1", "X": "set-here"}
    assert worker_env({"HOME": "/root", "AIGW_A": "1"}) == {}
    fwd = forward_aigw_env({"AIGW_B": "2", "AIGW_A": "1", "KONG_NGINX_MAIN_ENV": "OTHER"})
    assert fwd["KONG_NGINX_MAIN_ENV"] == "OTHER; env AIGW_A; env AIGW_B"


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = [x.decode() for x in f.read().split(b"\0") if x]
    return dict(x.split("=", 1) for x in items)


def test_plugin_server_gets_only_what_kong_passes(gateway):
    """Spawned from a worker: the forwarded settings (AIGW_*, OTEL_*, AWS_*,
    GOOGLE_APPLICATION_CREDENTIALS: nginx `env` directives), PWD from the shell, nothing else:
    no vault secrets, no HOME/PATH."""
    from aigw_dev.standin.process import forwarded
    env = _environ(gateway.standin.pluginserver_pid())
    extra = {k for k in env if not forwarded(k)} - {"PWD", "TZ"}
    assert extra == set(), sorted(extra)  # no PATH, HOME, vault secrets (OPENAI_API_KEY...)
    assert env["AIGW_RELAY_PORT"] == str(gateway.relay_port)
    assert env["AIGW_PROVIDER_OPENAI_BASE_URL"] == gateway.mock.url.rstrip("/") + "/v1"


def test_a_setting_without_env_directive_does_not_reach_the_plugin_server(mock):
    """Without the `env` directives the relay port and provider URLs are lost, as on Kong:
    the relay listens on its default port, so Kong's service finds no relay (502)."""
    relay_port = free_port()
    gw = Gateway(mock, reference_config(relay_port))
    gw.standin.forward_aigw = False
    with gw:
        pid = gw.standin.pluginserver_pid()
        assert not any(k.startswith("AIGW_") for k in _environ(pid))
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), json=CHAT, timeout=30)
        # the relay (started with the first instance) is not on the service's port
        assert r.status_code in (500, 502), r.text


# ------------------------------------------------------------------ 4. plugin server restart

def _load(gw: Gateway, seconds: float, threads: int, on_start=None) -> list[tuple[float, int]]:
    """``threads`` clients sending chat requests back to back for ``seconds``: (time, status)."""
    import threading
    import time

    out: list[tuple[float, int]] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        s = requests.Session()
        while time.monotonic() < stop:
            try:
                status = s.post(gw.url + "/v1/chat/completions", headers=gw.headers(), json=CHAT,
                                timeout=30).status_code
            except requests.RequestException:
                status = -1
            with lock:
                out.append((time.monotonic(), status))

    ts = [threading.Thread(target=client) for _ in range(threads)]
    for t in ts:
        t.start()
    if on_start:
        on_start()
    for t in ts:
        t.join()
    return out


def test_kill_under_load_recovers_within_seconds_and_no_event_reaches_another_plugin(make_gateway):
    import signal
    import time

    gw = make_gateway()
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), json=CHAT, timeout=30)
    assert r.status_code == 200  # instances started before the load
    pid = gw.standin.pluginserver_pid()
    killed: list[float] = []
    ready: list[float] = []

    def kill_then_watch() -> None:
        time.sleep(1.5)
        killed.append(time.monotonic())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            new = gw.standin.pluginserver_pid()
            if new and new != pid and gw.standin.pluginservers_answer(0.5):
                ready.append(time.monotonic())
                return
            time.sleep(0.05)

    results = _load(gw, 12.0, 8, kill_then_watch)
    t_kill = killed[0]
    assert ready, "the plugin server was not respawned"
    # respawn 1 s after death (process.lua) + loading the plugins; a few seconds on 2 shared cores
    t_ready = ready[0] - t_kill
    assert t_ready < 10, t_ready
    before = [s for t, s in results if t < t_kill]
    after = [(t - t_kill, s) for t, s in results if t >= t_kill]
    assert before and all(s == 200 for s in before), before
    failures = [t for t, s in after if s != 200]
    recovered = [t for t, s in after if s == 200 and t > (max(failures) if failures else 0)]
    # once the new server answers, the cached instances are restarted within a second
    assert failures == [] or max(failures) < t_ready + 1.0, (t_ready, failures[-5:])
    assert len(recovered) > 20, len(recovered)
    new_pid = gw.standin.pluginserver_pid()
    assert new_pid and new_pid != pid
    stats = gw.standin.stats()
    assert stats["misrouted_events"] == []
    # the stale ids were refused ("no plugin instance") and restarted, not served by others
    assert "no plugin instance" in gw.standin.logs()


# ------------------------------------------------------------------ 6. header counts

@pytest.mark.parametrize("n", [95, 150, 1200])
def test_any_header_count_kong_accepts_reaches_every_plugin(gateway, n):
    """Past 100 headers Kong's get_headers() drops the rest, the ticket included (added last)."""
    gateway.standin.reset_stats()
    headers = {**gateway.headers(), **{f"x-h{i}": "v" for i in range(n)}}
    r = requests.post(gateway.url + "/v1/chat/completions", headers=headers, json=CHAT)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Echo: hello there"
    assert gateway.standin.stats()["rpc_errors"] == 0


def test_kong_refuses_a_head_nginx_would_refuse(gateway):
    headers = {**gateway.headers(), **{f"x-pad{i}": "v" * 200 for i in range(200)}}  # ~40 KiB
    r = requests.post(gateway.url + "/v1/chat/completions", headers=headers, json=CHAT)
    assert r.status_code == 400 and "Too Large" in r.text


def test_relay_accepts_many_headers_and_errors_in_the_api_format(gateway):
    relay = f"http://127.0.0.1:{gateway.relay_port}"
    many = {f"x-h{i}": "v" for i in range(2000)}
    r = requests.post(relay + "/v1/chat/completions", headers={**many, "x-aigw-ticket": "1.2.3"}, json=CHAT)
    assert r.status_code == 403 and r.json()["error"]["code"] == "relay_forbidden"
    huge = {f"x-pad{i}": "v" * 1000 for i in range(300)}  # 300 KiB of headers
    r = requests.post(relay + "/v1/chat/completions", headers=huge, json=CHAT)
    assert r.status_code == 431 and r.json()["error"]["code"] == "headers_too_large"
    r = requests.post(relay + "/v1/messages", headers=huge, json=CHAT)
    assert r.status_code == 431 and r.json()["type"] == "error" and r.json()["error"]["type"]


# ------------------------------------------------------------------ 7. schema constraints at config time

@pytest.mark.parametrize("plugin,edit,field", [
    ("ai-cost", lambda c: c["budgets"][0].__setitem__("usd", -5), "usd"),
    ("ai-router", lambda c: c.__setitem__("providers", []), "providers"),
    ("ai-router", lambda c: c["models"][0].__setitem__("targets", []), "targets"),
])
def test_kong_refuses_at_config_time_what_the_plugin_would_refuse_at_start(mock, plugin, edit, field):
    """minimum without maximum and minItems are exported: the config never loads (as Kong's
    Admin API, decK and POST /config refuse it) instead of failing every request with 500."""
    from aigw_dev.standin.testing import StandInError

    from .conftest import plugin_config

    doc = reference_config(free_port())
    edit(plugin_config(doc, plugin))
    with pytest.raises(StandInError) as exc:
        Gateway(mock, doc).__enter__()
    assert "schema violation" in str(exc.value) and field in str(exc.value)


# ------------------------------------------------------------------ 5. start-up

SLOW_PLUGIN = '''"""Test plugin whose module takes 3 s to import (a plugin server still loading)."""
import time

time.sleep(3)
version = "0.1.0"
priority = 1


class Plugin:
    def __init__(self, config):
        pass

    def access(self, kong):
        pass
'''


def test_socket_first_requests_wait_for_loading_and_the_healthcheck_is_honest(tmp_path):
    """Kong serves before the plugin server is up. Our launcher binds its socket before loading
    the plugins, so a request that finds the socket waits instead of failing; the readiness
    check (the compose healthcheck) is green only once the server answers."""
    import shutil
    import time

    from aigw.pluginserver import answers
    from aigw_dev.standin.testing import StandIn

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(Path(__file__).parents[1] / "standin" / "plugins" / "echo.py", plugins / "echo.py")
    (plugins / "slow.py").write_text(SLOW_PLUGIN)
    cfg = {"_format_version": "3.0", "services": [{"name": "s", "url": "http://127.0.0.1:9", "routes": [
        {"name": "e", "paths": ["/e"], "plugins": [{"name": "echo", "config": {"mode": "exit"}}]}]}]}
    with StandIn(cfg, plugins_dir=plugins, wait_pluginserver=False) as kong:
        t_up = time.monotonic()  # the proxy serves from here, like Kong
        sock = kong._admin("GET", "/_standin/pluginserver")["sockets"][0]
        results, health = [], []
        while time.monotonic() - t_up < 15:
            exists = os.path.exists(sock)
            health.append((exists, answers(sock, 0.2)))
            r = requests.get(kong.url + "/e", timeout=30)
            results.append((exists, r.status_code))
            if r.status_code == 299:
                break
            time.sleep(0.05)
        assert results[-1][1] == 299, results
        # a request sent once the socket existed never failed: it waited for the server
        assert all(status == 299 for exists, status in results if exists), results
        # the check said "not ready" while the plugins were loading, then "ready"
        assert any(exists and not ok for exists, ok in health), health
        assert answers(sock, 2.0)
        # the socket came up well before the plugins finished loading (3 s)
        assert time.monotonic() - t_up >= 2.5


# ------------------------------------------------------------------ 3. the AI record in Kong's logs

def test_kong_log_plugins_carry_the_ai_decision_and_kong_log_has_the_outcome(make_gateway, tmp_path):
    """Kong's log plugins see what the relay answered (kong/pdk/log.lua 3.9.1 serialize: the
    response headers, 876-909): the X-AI-* headers carry model, provider, tokens and cost.
    With AIGW_KONG_LOG_RECORD=1, ai-router's log phase also writes the outcome record to
    Kong's error log at notice."""
    import json
    import time

    path = tmp_path / "file-log.jsonl"

    def edit(doc):
        doc.setdefault("plugins", []).append({"name": "file-log", "config": {"path": str(path)}})

    gw = make_gateway(edit, env={"AIGW_KONG_LOG_RECORD": "1"})
    marker = "prompt-marker-7781 jane@example.com"
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(),
                      json={"model": "chat", "messages": [{"role": "user", "content": marker}]})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 5
    while not (path.exists() and path.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the log phase runs once the response is sent
    entry = json.loads(path.read_text().splitlines()[-1])
    served = entry["response"]["headers"]
    assert served["x-ai-model"] == "gpt-4o" and served["x-ai-provider"] in ("openai", "azure-eu")
    assert int(served["x-ai-prompt-tokens"]) > 0 and "x-ai-cost-usd" in served
    deadline = time.monotonic() + 5
    rec = None
    while rec is None and time.monotonic() < deadline:
        for line in gw.standin.logs().splitlines():
            if "[notice] [ai-router]" in line and '"aigw.request"' in line:
                rec = json.loads(line.split("[notice] [ai-router] ", 1)[1])
        time.sleep(0.05)
    assert rec is not None, gw.standin.logs()[-2000:]
    assert rec["status"] == 200 and rec["outcome"] == "ok" and rec["usage"]["output_tokens"] > 0
    assert rec["usage"]["input_tokens"] > 0 and rec["cost_usd"] is not None
    assert rec["model"] == "chat" and rec["response_model"] == "gpt-4o"
    logs = path.read_text() + gw.standin.logs()
    assert "prompt-marker-7781" not in logs and "jane@example.com" not in logs
    # the JSON line of the plugin server is still there
    assert '"aigw.request"' in gw.standin.logs()


def test_without_the_kong_log_record_ai_router_has_no_log_phase(make_gateway):
    """By default ai-router declares no log phase: no event and no PDK call after the response
    (the outcome record is the plugin server's JSON line)."""
    gw = make_gateway()
    gw.standin.reset_stats()
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(),
                      json={"model": "chat", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200
    assert "log" not in gw.standin.stats()["events"].get("ai-router", {})


def test_a_request_refused_in_access_still_gets_its_record(make_gateway):
    import json
    import time

    gw = make_gateway(env={"AIGW_KONG_LOG_RECORD": "1"})
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(),
                      json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]})
    assert 400 <= r.status_code < 500
    deadline = time.monotonic() + 5
    found = None
    while found is None and time.monotonic() < deadline:
        for line in gw.standin.logs().splitlines():
            if "[notice] [ai-router]" in line:
                found = json.loads(line.split("[notice] [ai-router] ", 1)[1])
        time.sleep(0.05)
    assert found is not None and found["status"] == r.status_code and found["outcome"] != "ok"
