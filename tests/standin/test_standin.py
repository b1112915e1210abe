"""The Kong stand-in driving the real kong-pdk plugin server (tests/standin/plugins)."""
from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
import requests

from aigw_dev.standin.testing import StandIn, StandInError, free_port

PLUGINS = Path(__file__).parent / "plugins"
JWT_SECRET = "s3cr3t-jwt-key-for-tests-only-0123456789"


def _config(up_a: int, up_b: int, dead: int, log_path: str) -> dict[str, Any]:
    def route(name: str, paths: list[str], plugins: list | None = None, **kw: Any) -> dict[str, Any]:
        return {"name": name, "paths": paths, "plugins": plugins or [], **kw}

    return {
        "_format_version": "3.0",
        "services": [
            {"name": "svc-a", "url": f"http://127.0.0.1:{up_a}/base", "routes": [
                route("plain", ["/plain"]),
                route("plain-longer", ["/plain/deeper"], strip_path=False),
                route("nostrip", ["/nostrip"], strip_path=False),
                route("regex", ["~/rx/(?<ver>v\\d+)/items$"]),
                route("host", ["/h"], hosts=["api.example.com"],
                      plugins=[{"name": "echo", "config": {"mode": "exit", "tag": "host-route", "limits": {}}}]),
                route("method", ["/m"], methods=["POST"],
                      plugins=[{"name": "echo", "config": {"mode": "exit", "tag": "post-only"}}]),
                route("key", ["/key"], plugins=[{"name": "key-auth", "config": {"hide_credentials": True}}]),
                route("jwt", ["/jwt"], plugins=[{"name": "jwt", "config": {"claims_to_verify": ["exp"]}}]),
                route("order", ["/order"], plugins=[
                    {"name": "echo", "config": {"mode": "exit", "tag": "echo"}},
                    {"name": "tagger", "config": {"tag": "first"}}]),
                route("cons", ["/cons"], plugins=[
                    {"name": "key-auth"},
                    {"name": "echo", "config": {"mode": "exit", "tag": "route-level"}}]),
                route("vault", ["/vault"], plugins=[
                    {"name": "echo", "config": {"mode": "exit", "secret": "{vault://env/standin-test-secret}",
                                                "tag": "{vault://env/standin-test-secret}"}}]),
                route("unknown", ["/unknown"], plugins=[{"name": "unknown_pdk"}]),
                route("stream", ["/stream"], strip_path=False),
                route("buffered", ["/buffered"], plugins=[{"name": "buffered"}]),
                route("logged", ["/logged"], plugins=[{"name": "logger", "config": {"path": log_path}}]),
                route("upstream-headers", ["/up"], plugins=[{"name": "echo", "config": {"tag": "set-upstream"}}]),
            ]},
            {"name": "svc-lb", "host": "lb-upstream", "port": 80, "protocol": "http",
             "routes": [route("lb", ["/lb"])]},
            {"name": "svc-dead", "url": f"http://127.0.0.1:{dead}", "retries": 1,
             "routes": [route("dead", ["/dead"])]},
            {"name": "svc-nopeer", "host": "empty-upstream", "routes": [route("nopeer", ["/nopeer"])]},
        ],
        "upstreams": [
            {"name": "lb-upstream", "targets": [{"target": f"127.0.0.1:{up_a}"}, {"target": f"127.0.0.1:{up_b}"}]},
            {"name": "empty-upstream", "targets": []},
        ],
        "consumers": [
            {"username": "alice", "custom_id": "alice-1", "keyauth_credentials": [{"key": "alice-key"}],
             "jwt_secrets": [{"key": "alice-iss", "secret": JWT_SECRET}],
             "plugins": [{"name": "echo", "route": "cons", "config": {"mode": "exit", "tag": "alice-special"}}]},
            {"username": "bob", "keyauth_credentials": [{"key": "bob-key"}]},
        ],
    }


@pytest.fixture(scope="module")
def env(upstreams, tmp_path_factory) -> Iterator[dict[str, Any]]:
    a, b = upstreams
    log_path = str(tmp_path_factory.mktemp("log") / "log.jsonl")
    cfg = _config(a.port, b.port, free_port(), log_path)
    with StandIn(cfg, env={"STANDIN_TEST_SECRET": "from-env"}, plugins_dir=PLUGINS,
                 extra_args=["--pdk-timeout", "2"]) as kong:
        yield {"kong": kong, "a": a, "b": b, "log": log_path}


def _get(env: dict[str, Any], path: str, **kw: Any) -> requests.Response:
    return requests.request(kw.pop("method", "GET"), env["kong"].url + path, timeout=15, **kw)


def _last(up) -> dict[str, Any]:
    return up.requests[-1]


# ---------------------------------------------------------------- routing

def test_strip_path_and_service_path(env):
    r = _get(env, "/plain/x/y?q=1")
    assert r.status_code == 200
    assert r.json()["path"] == "/base/x/y?q=1"
    r = _get(env, "/nostrip/z")
    assert r.json()["path"] == "/base/nostrip/z"


def test_longest_prefix_wins(env):
    r = _get(env, "/plain/deeper/k")
    assert r.json()["path"] == "/base/plain/deeper/k"  # the strip_path=false longer route


def test_regex_route(env):
    assert _get(env, "/rx/v2/items").json()["path"] == "/base"
    assert _get(env, "/rx/vx/items").status_code == 404


def test_host_and_method_matching(env):
    r = _get(env, "/h", headers={"Host": "api.example.com"})
    assert r.status_code == 299 and r.json()["tag"] == "host-route"
    assert _get(env, "/h", headers={"Host": "other.example.com"}).status_code == 404
    assert _get(env, "/m", method="POST").json()["tag"] == "post-only"
    assert _get(env, "/m", method="GET").status_code == 404


def test_no_route_body_and_headers(env):
    r = _get(env, "/definitely-not-routed")
    assert r.status_code == 404
    assert r.json()["message"] == "no Route matched with those values"
    assert r.headers["Server"] == "kong/3.9.1"
    assert r.json()["request_id"] == r.headers["X-Kong-Request-Id"]
    assert "X-Kong-Response-Latency" in r.headers


def test_proxied_response_headers_and_upstream_headers(env):
    r = _get(env, "/plain/h", headers={"X-Forwarded-For": "10.9.8.7"})
    assert r.headers["Via"] == "1.1 kong/3.9.1"
    assert "X-Kong-Upstream-Latency" in r.headers and "X-Kong-Proxy-Latency" in r.headers
    up = r.json()["headers"]
    assert up["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
    assert up["x-real-ip"] == "127.0.0.1"
    assert up["x-forwarded-proto"] == "http"
    assert up["x-forwarded-path"] == "/plain/h"
    assert up["x-kong-request-id"] == r.headers["X-Kong-Request-Id"]
    assert up["host"] == f"127.0.0.1:{env['a'].port}"


# ---------------------------------------------------------------- auth

def test_key_auth(env):
    a = env["a"]
    before = len(a.requests)
    r = _get(env, "/key")
    assert r.status_code == 401
    assert r.json()["message"] == "No API key found in request"
    assert r.headers["WWW-Authenticate"] == "Key"
    r = _get(env, "/key", headers={"apikey": "wrong"})
    assert r.status_code == 401 and r.json()["message"] == "Unauthorized"
    assert len(a.requests) == before  # rejected requests never reach the upstream
    r = _get(env, "/key?apikey=alice-key")
    assert r.status_code == 200
    up = r.json()
    assert up["headers"]["x-consumer-username"] == "alice"
    assert up["headers"]["x-consumer-custom-id"] == "alice-1"
    assert "x-anonymous-consumer" not in up["headers"]
    assert "apikey" not in up["path"]  # hide_credentials
    r = _get(env, "/key", headers={"apikey": "bob-key"})
    assert r.json()["headers"]["x-consumer-username"] == "bob"
    assert "apikey" not in r.json()["headers"]


def test_key_auth_duplicate(env):
    r = _get(env, "/key?apikey=a&apikey=b")
    assert r.status_code == 401 and r.json()["message"] == "Duplicate API key found"


def test_jwt(env):
    r = _get(env, "/jwt")
    assert r.status_code == 401 and r.json() == {"message": "Unauthorized"}
    assert r.headers["WWW-Authenticate"] == "Bearer"
    good = pyjwt.encode({"iss": "alice-iss", "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")
    r = _get(env, "/jwt", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200
    assert r.json()["headers"]["x-consumer-username"] == "alice"
    assert r.json()["headers"]["x-credential-identifier"] == "alice-iss"
    expired = pyjwt.encode({"iss": "alice-iss", "exp": int(time.time()) - 10}, JWT_SECRET, algorithm="HS256")
    r = _get(env, "/jwt", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and r.json() == {"exp": "token expired"}
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    forged = pyjwt.encode({"iss": "alice-iss", "exp": int(time.time()) + 600}, "x" * 40, algorithm="HS256")
    r = _get(env, "/jwt", headers={"Authorization": f"Bearer {forged}"})
    assert r.json() == {"message": "Invalid signature"}
    unknown = pyjwt.encode({"iss": "nobody"}, JWT_SECRET, algorithm="HS256")
    r = _get(env, "/jwt?jwt=" + unknown)
    assert r.json() == {"message": "No credentials found for given 'iss'"}


# ---------------------------------------------------------------- plugins

def test_priority_order_and_set_header_visibility(env):
    r = _get(env, "/order")
    assert r.status_code == 299
    # tagger (priority 2000) ran before echo (900) and its set_header is visible to echo
    assert r.json()["seen"] == "first,echo"


def test_consumer_scoped_config_wins(env):
    r = _get(env, "/cons", headers={"apikey": "alice-key"})
    assert r.json()["tag"] == "alice-special"
    assert r.json()["consumer"] == "alice"
    r = _get(env, "/cons", headers={"apikey": "bob-key"})
    assert r.json()["tag"] == "route-level"


def test_vault_env_reference_in_referenceable_field_only(env):
    r = _get(env, "/vault")
    assert r.json()["secret"] == "from-env"
    assert r.json()["tag"] == "{vault://env/standin-test-secret}"  # tag is not referenceable


def test_exit_body_headers_and_defaults(env):
    r = _get(env, "/h?x=1&x=2&flag", headers={"Host": "api.example.com"})
    info = r.json()
    assert r.headers["X-Echo"] == "host-route"
    assert info["query"] == {"x": ["1", "2"], "flag": []}
    assert info["max"] == 10  # nested default filled inside a given record
    # a missing non-required record without default is null, as Kong's handle_missing_field
    assert _get(env, "/m", method="POST").json()["max"] is None
    assert info["route"] == "host"


def test_set_upstream_header(env):
    r = _get(env, "/up/a")
    assert r.json()["headers"]["x-seen-by"] == "set-upstream"


def test_unknown_pdk_method_fails_loudly(env):
    kong = env["kong"]
    r = _get(env, "/unknown")
    assert r.status_code == 500
    assert r.json()["message"] == "An unexpected error occurred"
    assert "kong.request.get_something_nobody_has" in kong.stats()["unimplemented_pdk"]
    assert "unimplemented PDK method kong.request.get_something_nobody_has" in kong.logs()


@pytest.mark.parametrize("server", ["kong-python-pluginserver", "aigw-pluginserver"])
def test_plugin_exception_does_not_hang_forever(server, tmp_path):
    # kong-pdk 0.36 never answers an event whose handler raised, and its handle_event holds a
    # lock while waiting, so every later event hangs too: hence a StandIn of its own. Our
    # launcher answers at once with kong.response.error(500), as Kong does for a Lua plugin.
    import sys

    cfg = {"_format_version": "3.0", "services": [{"name": "s", "url": "http://127.0.0.1:9", "routes": [
        {"name": "boom", "paths": ["/boom"], "plugins": [{"name": "boom"}]}]}]}
    prefix = tmp_path / "p"
    prefix.mkdir()
    start = (f"/usr/bin/env PYTHONPATH={Path(__file__).resolve().parents[2]} "
             f"{Path(sys.executable).parent / server} -d {PLUGINS} -p {prefix} --socket-name boom.sock -g --no-lua-style")
    with StandIn(cfg, plugins_dir=PLUGINS, extra_args=["--pdk-timeout", "1", "--prefix", str(prefix)],
                 env={"KONG_PLUGINSERVER_BOOM_START_CMD": start}) as kong:
        t0 = time.monotonic()
        r = requests.get(kong.url + "/boom", timeout=15)
        assert r.status_code == 500
        assert r.json()["message"] == "An unexpected error occurred"
        if server == "kong-python-pluginserver":
            assert kong.stats()["rpc_errors"] == 1
            assert "timeout" in kong.logs()
        else:
            assert time.monotonic() - t0 < 1  # answered, not timed out
            assert kong.stats()["rpc_errors"] == 0
            assert "access of boom raised RuntimeError at boom.py:13" in kong.logs()
            assert "RuntimeError: boom" not in kong.logs()  # never the message: it may hold request data
            r = requests.get(kong.url + "/boom", timeout=15)  # and the next event too
            assert r.status_code == 500


def test_pdk_call_counts(env):
    kong = env["kong"]
    kong.reset_stats()
    _get(env, "/order")
    stats = kong.stats()
    assert stats["requests"] == 1
    assert stats["pdk_calls"]["tagger"]["access"] == 3  # get_header, set_header, ctx.shared.set
    assert stats["pdk_calls_total"] == sum(sum(p.values()) for p in stats["pdk_calls"].values())


def test_log_phase_after_response(env):
    r = _get(env, "/logged/x")
    assert r.status_code == 200
    path = Path(env["log"])
    for _ in range(200):
        if path.exists() and path.read_text().strip():
            break
        time.sleep(0.02)
    entry = json.loads(path.read_text().strip().splitlines()[-1])
    assert entry["mark"] == "set-in-access"
    assert entry["route"]["name"] == "logged"
    assert entry["response"]["status"] == 200
    assert entry["status_seen"] == 200
    assert entry["request"]["id"] == r.headers["X-Kong-Request-Id"]


# ---------------------------------------------------------------- proxying

def test_streaming_first_chunk_before_upstream_finishes(env):
    a = env["a"]
    a.first_chunk_seen.clear()
    n = len(a.released_by_client)
    conn = http.client.HTTPConnection("127.0.0.1", env["kong"].port, timeout=20)
    conn.request("GET", "/stream/sse")
    resp = conn.getresponse()
    assert resp.status == 200
    first = resp.read1(65536)
    assert first.startswith(b"data: first")
    a.first_chunk_seen.set()  # only now may the upstream send the rest
    rest = resp.read()
    conn.close()
    assert b"data: second" in first + rest
    assert a.released_by_client[n] is True  # the upstream was still sending when chunk 1 arrived


def test_response_phase_makes_route_buffered(env):
    a = env["a"]
    a.first_chunk_seen.clear()
    # the upstream holds chunk 2 back until a client signal that cannot come (0.5 s cap)
    r = _get(env, "/buffered/stream?hold=0.5")
    assert r.status_code == 200
    assert r.headers["X-Body-Len"] == str(len(r.content))
    assert r.headers["X-Upstream-Status"] == "200"
    assert b"data: second" in r.content
    a.first_chunk_seen.set()


def test_round_robin_over_targets(env):
    seen = [_get(env, "/lb/x").headers["X-Upstream"] for _ in range(4)]
    assert sorted(seen) == ["a", "a", "b", "b"]
    assert seen[0] != seen[1]


def test_502_when_upstream_refuses(env):
    r = _get(env, "/dead")
    assert r.status_code == 502
    assert r.json()["message"] == "An invalid response was received from the upstream server"


def test_503_without_targets(env):
    r = _get(env, "/nopeer")
    assert r.status_code == 503
    assert r.json()["message"] == "failure to get a peer from the ring-balancer"


# ---------------------------------------------------------------- load-time errors

def test_schema_violation_names_the_field():
    cfg = {"_format_version": "3.0", "services": [{"name": "s", "url": "http://127.0.0.1:9", "routes": [
        {"name": "bad-route", "paths": ["/x"],
         "plugins": [{"name": "echo", "config": {"limits": {"max": 1000}}}]}]}]}
    with pytest.raises(StandInError) as ei:
        StandIn(cfg, plugins_dir=PLUGINS).start()
    msg = str(ei.value)
    assert "config.limits.max" in msg and "between 1 and 100" in msg and "bad-route" in msg


def test_unresolvable_vault_reference_is_a_load_error():
    cfg = {"_format_version": "3.0", "plugins": [
        {"name": "echo", "config": {"secret": "{vault://env/standin-missing-var}"}}]}
    with pytest.raises(StandInError) as ei:
        StandIn(cfg, plugins_dir=PLUGINS).start()
    assert "config.secret" in str(ei.value) and "STANDIN_MISSING_VAR" in str(ei.value)


def test_plugin_info_query_command_prints_one_plugin():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "aigw.pluginserver", "plugin-info", "-d", str(PLUGINS), "tagger"],
                         capture_output=True, check=True, cwd=Path(__file__).parents[2])
    info = json.loads(out.stdout)
    assert len(info) == 1 and info[0]["Name"] == "tagger" and info[0]["Priority"] == 2000
    assert info[0]["Phases"] == ["access"]
    assert info[0]["Schema"]["fields"][0]["config"]["fields"][0]["tag"]["required"] is True


def test_plugin_server_respawned_and_instances_restarted():
    import os
    import signal

    cfg = {"_format_version": "3.0", "services": [{"name": "s", "url": "http://127.0.0.1:9", "routes": [
        {"name": "r", "paths": ["/r"], "plugins": [{"name": "echo", "config": {"mode": "exit", "tag": "t"}}]}]}]}
    with StandIn(cfg, plugins_dir=PLUGINS) as kong:
        assert requests.get(kong.url + "/r", timeout=10).status_code == 299
        old = kong.pluginserver_pid()
        assert old
        os.kill(old, signal.SIGKILL)
        new = None
        for _ in range(300):  # respawned one second after it died (process.lua)
            new = kong.pluginserver_pid()
            if new and new != old:
                break
            time.sleep(0.02)
        assert new and new != old
        for _ in range(100):  # the new server may still be binding its socket
            r = requests.get(kong.url + "/r", timeout=10)
            if r.status_code != 500:
                break
            time.sleep(0.05)
        assert r.status_code == 299 and r.json()["tag"] == "t"
        # the new server knows no instance: the stand-in started one again, either after the
        # server's "no plugin instance" error (mp_rpc.lua handle_event) or because it reset the
        # plugin's instances when the old server's socket failed (plugin.lua 187-199); which of
        # the two depends on whether the first request came before the new socket was bound
        logs = kong.logs()
        assert "no plugin instance" in logs or "Connection refused" in logs or "No such file" in logs
        assert len(kong.started_instances()) >= 2


def test_get_headers_without_max_returns_at_most_100(env):
    """kong/pdk/request.lua 664-679 + globalpatches.lua: lua_max_req_headers = 100 by default."""
    headers = {f"x-h{i:03d}": "v" for i in range(150)}
    r = requests.get(env["kong"].url + "/h", headers={"Host": "api.example.com", **headers})
    assert r.status_code == 299
    seen = r.json()["headers"]
    assert len(seen) == 100 and "x-h149" not in seen
