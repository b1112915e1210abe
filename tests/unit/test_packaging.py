"""Static checks of what users run but CI cannot: docker compose, the Dockerfile,
the reference kong.yml with decK, and the pyproject pins."""
from __future__ import annotations

import functools
import operator
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ["ai-redact", "ai-router", "ai-cache", "ai-tokens", "ai-cost"]


def _compose_has_cli() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True,
                          check=False).returncode == 0


def test_compose_file():
    if _compose_has_cli():
        subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
                       check=True, cwd=ROOT)
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    svcs = doc["services"]
    assert {"kong", "mock", "redis", "prometheus"} <= set(svcs)
    kong = svcs["kong"]
    assert kong["build"] == "." and "8000:8000" in kong["ports"]
    env = kong["environment"]
    # every {vault://env/...} reference in kong.yml has its variable
    refs = set(re.findall(r"\{vault://env/([a-z0-9-]+)\}", (ROOT / "kong" / "kong.yml").read_text()))
    for r in refs:
        assert r.upper().replace("-", "_") in env, r
    assert env["AIGW_METRICS_PORT"] and env["AIGW_REDIS_URL"].startswith("redis://redis:")
    prom = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [f"kong:{env['AIGW_METRICS_PORT']}"]


def test_dockerfile_registers_one_pluginserver_entry_per_plugin():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM kong:3\.9", text, re.M)
    env = dict(re.findall(r"(KONG_[A-Z_]+)=(\"[^\"]*\"|\S+)", text))
    env = {k: v.strip('"') for k, v in env.items()}
    assert env["KONG_PLUGINSERVER_NAMES"].split(",") == PLUGINS
    assert env["KONG_PLUGINS"] == "bundled," + ",".join(PLUGINS)
    sockets = {env[f"KONG_PLUGINSERVER_{p.upper().replace('-', '_')}_SOCKET"] for p in PLUGINS}
    assert len(sockets) == 1  # one process, one socket: the relay lives there
    starts = [p for p in PLUGINS if f"KONG_PLUGINSERVER_{p.upper().replace('-', '_')}_START_CMD" in env]
    assert starts == [PLUGINS[0]]  # only one entry starts the process
    for p in PLUGINS:
        q = env[f"KONG_PLUGINSERVER_{p.upper().replace('-', '_')}_QUERY_CMD"]
        assert q.endswith(f"aigw-plugin-info -d /opt/aigw/plugins {p}")
    start = (ROOT / "docker" / "start-pluginserver.sh").read_text()
    assert "aigw-pluginserver" in start and "-g" in start and "--no-lua-style" in start
    for copied in ("aigw", "plugins", "schemas", "kong"):
        assert f"COPY {copied} " in text


def test_query_commands_print_what_kong_expects(tmp_path):
    """Run each query_cmd as Kong would (io.popen + JSON decode, element [1])."""
    import json
    import sys
    exe = Path(sys.executable).parent / "aigw-plugin-info"
    for p in PLUGINS:
        out = subprocess.run([str(exe), "-d", str(ROOT / "plugins"), p], capture_output=True,
                             text=True, check=True, timeout=60).stdout
        info = json.loads(out)[0]
        assert info["Name"] == p and set(info) >= {"Name", "Priority", "Version", "Schema", "Phases"}


@pytest.mark.skipif(not shutil.which("deck"), reason="decK is not installed (Debian package 'deck')")
def test_deck_validate_reference_config():
    subprocess.run(["deck", "validate", "-s", str(ROOT / "kong" / "kong.yml")], check=True, cwd=ROOT)


def test_dependencies_are_pinned():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = meta["dependencies"] + functools.reduce(operator.iadd, meta["optional-dependencies"].values(), [])
    for d in deps:
        assert "==" in d, f"unpinned dependency: {d}"


def test_entrypoint_declares_an_env_directive_for_every_aigw_variable(tmp_path):
    """docker/entrypoint.sh and the stand-in's forward_aigw_env follow one rule."""
    from aigw.standin.process import forward_aigw_env, worker_env

    fake = tmp_path / "entry.sh"
    fake.write_text((ROOT / "docker" / "entrypoint.sh").read_text()
                    .replace("exec /docker-entrypoint.sh", "printf '%s' \"$KONG_NGINX_MAIN_ENV\" #"))
    env = {"AIGW_REDIS_URL": "redis://r:6379/0", "AIGW_PROVIDER_OPENAI_BASE_URL": "http://m/v1",
           "OTEL_SERVICE_NAME": "gw", "AWS_REGION": "eu-west-1",
           "GOOGLE_APPLICATION_CREDENTIALS": "/run/sa.json", "GOOGLE_CLOUD_PROJECT_X": "no",
           "XAIGW_NOT": "no", "OPENAI_API_KEY": "sk-not-for-the-plugin-server",
           "KONG_NGINX_MAIN_ENV": "TZ"}
    out = subprocess.run(["sh", str(fake)], env=env, capture_output=True, text=True, check=True).stdout
    assert out == forward_aigw_env(env)["KONG_NGINX_MAIN_ENV"]
    assert out == ("TZ; env AIGW_PROVIDER_OPENAI_BASE_URL; env AIGW_REDIS_URL; env AWS_REGION; "
                   "env GOOGLE_APPLICATION_CREDENTIALS; env OTEL_SERVICE_NAME")
    passed = worker_env({**env, "KONG_NGINX_MAIN_ENV": out})
    assert set(passed) == {"AIGW_REDIS_URL", "AIGW_PROVIDER_OPENAI_BASE_URL", "AWS_REGION",
                           "GOOGLE_APPLICATION_CREDENTIALS", "OTEL_SERVICE_NAME"}
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/opt/aigw/bin/entrypoint"]' in text and 'CMD ["kong", "docker-start"]' in text
    assert "/proc/1/environ" not in (ROOT / "docker" / "start-pluginserver.sh").read_text()


def test_compose_healthcheck_needs_the_plugin_server():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert doc["services"]["kong"]["healthcheck"]["test"] == ["CMD", "/opt/aigw/bin/healthcheck"]
    check = (ROOT / "docker" / "healthcheck.sh").read_text()
    assert "kong health" in check and "aigw.pluginserver check /usr/local/kong/aigw.sock" in check
    start = (ROOT / "docker" / "start-pluginserver.sh").read_text()
    assert "--socket-name aigw.sock" in start and "-p /usr/local/kong" in start
