"""Start the mock inside a test (background thread) or as a child process.

    with MockProvider() as mock:
        client = openai.OpenAI(base_url=mock.url + "/v1", api_key=mock.api_key)
        ...
        assert mock.requests()[-1]["headers"]["authorization"] == "Bearer mock-key"
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.request
from typing import Any

import orjson

from .. import child_pythonpath
from .server import DEFAULT_API_KEY, MockServer, make_server


class MockProvider:
    """The mock on a free port; ``process=True`` runs it as ``python -m aigw_dev.mock``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = DEFAULT_API_KEY, process: bool = False) -> None:
        self.host, self.port, self.api_key, self.process = host, port, api_key, process
        self.url = ""
        self._server: MockServer | None = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> MockProvider:
        if self.process:
            self._start_process()
        else:
            self._server = make_server(self.host, self.port, self.api_key)
            self.url = self._server.url
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name="aigw-mock", daemon=True)
            self._thread.start()
        return self

    def _start_process(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = child_pythonpath(env.get("PYTHONPATH"))
        cmd = [sys.executable, "-m", "aigw_dev.mock", "--host", self.host,
               "--port", str(self.port), "--api-key", self.api_key or ""]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if "listening on " not in line:
            self._proc.kill()
            raise RuntimeError("aigw-mock did not start")
        self.url = line.rsplit(" ", 1)[1].strip()

    def requests(self) -> list[dict[str, Any]]:
        """Requests received so far (oldest first), as recorded by the server."""
        if self._server is not None:
            return self._server.state.requests()
        with urllib.request.urlopen(self.url + "/_mock/requests") as resp:
            return orjson.loads(resp.read())

    def clear(self) -> None:
        if self._server is not None:
            self._server.state.clear()
            return
        req = urllib.request.Request(self.url + "/_mock/requests", method="DELETE")
        urllib.request.urlopen(req).close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout:
                self._proc.stdout.close()
            self._proc = None

    def __enter__(self) -> MockProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
