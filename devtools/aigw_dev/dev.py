"""`make dev`: the gateway on http://127.0.0.1:8000 with mock providers.

Starts the mock providers, then the Kong stand-in (which starts the real
kong-python-pluginserver with our plugins and the relay) on the reference
``kong/kong.yml``.  The config stays production-shaped: providers are pointed
at the mock through ``AIGW_PROVIDER_<NAME>_BASE_URL`` and secrets come from
the environment through Kong's ``{vault://env/...}`` references.
Ctrl-C stops every process it started.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request

import jwt

from . import REPO_ROOT
from .standin.process import forward_aigw_env

DEMO_JWT_SECRET = "demo-jwt-secret-change-me-0123456789"
MOCK_KEY = "mock-key"
DEMO_API_KEY = "demo-app-key-change-me"  # the demo consumer's key-auth key (x-api-key)


def gateway_env(mock_url: str, redis_url: str = "redis://127.0.0.1:6379/0") -> dict[str, str]:
    """Environment for kong/kong.yml against the mock provider (dev, tests, bench)."""
    m = mock_url.rstrip("/")
    return {
        # {vault://env/...} references of kong/kong.yml (Kong's env vault: upper-case, - → _)
        "OPENAI_API_KEY": MOCK_KEY, "AZURE_OPENAI_API_KEY": MOCK_KEY, "ANTHROPIC_API_KEY": MOCK_KEY,
        "GEMINI_API_KEY": MOCK_KEY, "MISTRAL_API_KEY": MOCK_KEY, "AIGW_INTERNAL_KEY": MOCK_KEY,
        "AIGW_REDIS_URL": redis_url,
        # providers → mock
        "AIGW_PROVIDER_OPENAI_BASE_URL": f"{m}/v1",
        "AIGW_PROVIDER_AZURE_EU_BASE_URL": m,
        "AIGW_PROVIDER_ANTHROPIC_BASE_URL": m,
        "AIGW_PROVIDER_GEMINI_BASE_URL": m,
        "AIGW_PROVIDER_MISTRAL_BASE_URL": f"{m}/v1",
        "AIGW_PROVIDER_VLLM_BASE_URL": f"{m}/v1",
    }


def demo_token(secret: str = DEMO_JWT_SECRET, key: str = "demo-app", days: int = 30) -> str:
    """A JWT for the demo consumer: what an OpenAI-SDK app passes as ``api_key``."""
    return jwt.encode({"iss": key, "exp": int(time.time()) + days * 86400}, secret, algorithm="HS256")


def _wait(url: str, timeout: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"a gateway process exited early (code {p.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {url}")


def _ensure_redis() -> None:
    script = REPO_ROOT / ".ci" / "ensure-redis"
    if script.exists():
        subprocess.run([str(script)], check=False)


def main() -> None:
    if "--token" in sys.argv[1:]:
        # a demo JWT for the demo consumer, e.g. for `docker compose up`
        print(demo_token(os.environ.get("DEMO_JWT_SECRET", DEMO_JWT_SECRET)))
        return
    port = int(os.environ.get("PORT", "8000"))
    mock_port = int(os.environ.get("MOCK_PORT", "9100"))
    _ensure_redis()
    # AIGW_* settings reach the plugin server through nginx `env` directives, as under Kong
    env = forward_aigw_env({**os.environ, **gateway_env(f"http://127.0.0.1:{mock_port}")})
    procs: list[subprocess.Popen] = []

    def stop(*_):
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        raise SystemExit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    procs.append(subprocess.Popen([sys.executable, "-m", "aigw_dev.mock", "--port", str(mock_port),
                                   "--api-key", MOCK_KEY], env=env, start_new_session=True))
    procs.append(subprocess.Popen([sys.executable, "-m", "aigw_dev.standin", "--config", str(REPO_ROOT / "kong" / "kong.yml"),
                                   "--port", str(port), "--admin-port", str(port + 1),
                                   "--plugins-dir", str(REPO_ROOT / "plugins")],
                                  env=env, cwd=str(REPO_ROOT), start_new_session=True))
    _wait(f"http://127.0.0.1:{mock_port}/_mock/health", 30, procs)
    _wait(f"http://127.0.0.1:{port + 1}/status", 60, procs)
    token = demo_token()
    print(f"""
Kong AI gateway (Kong stand-in + plugin server + relay + mock providers) on http://127.0.0.1:{port}

  curl http://127.0.0.1:{port}/v1/chat/completions \\
    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
    -d '{{"model": "chat", "messages": [{{"role": "user", "content": "Hello, my email is jane@example.com"}}]}}'

  OpenAI SDK:    OpenAI(base_url="http://127.0.0.1:{port}/v1", api_key="{token}")
  Anthropic SDK: Anthropic(base_url="http://127.0.0.1:{port}", api_key="{token}")

Ctrl-C stops everything.
""", flush=True)
    while True:
        for p in procs:
            if p.poll() is not None:
                print(f"process {p.args[2]} exited with {p.returncode}; stopping", file=sys.stderr)
                stop()
        time.sleep(0.5)


if __name__ == "__main__":
    main()
