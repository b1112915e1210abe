"""The side-by-side benchmark's own helpers (bench/peers.py, bench/streams.py): the stream
scenario really is 50 events 20 ms apart from the mock, the strace summary is read right,
and a system's CPU covers its child processes. The measurements themselves live in bench/."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import peers  # noqa: E402 (bench/ is not a package: on the path just above)
from peers import MockProvider  # noqa: E402


def _streams(url: str, body: bytes, concurrency: int) -> dict:
    spec = ROOT / "bench" / ".test-streams-spec.json"
    spec.write_bytes(orjson.dumps({"url": url, "headers": {"Content-Type": "application/json"},
                                   "body": body.decode(), "concurrency": concurrency, "per_worker": 1,
                                   "timeout": 20, "ramp_s": 0.1}))
    try:
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "streams.py"), str(spec)],
                             capture_output=True, check=True, timeout=120)
    finally:
        spec.unlink()
    return orjson.loads(out.stdout)


def test_stream_scenario_is_50_events_20ms_apart():
    with MockProvider(process=True, api_key=None) as mock:
        url = mock.url.rstrip("/") + "/v1/chat/completions"
        res = _streams(url, peers.stream_body(peers.MOCK_STREAM_MODEL, peers.STREAM_CHUNKS), 4)
        short = _streams(url, peers.stream_body(peers.MOCK_STREAM_MODEL, peers.SHORT_CHUNKS), 2)
    assert res["errors"] == {} and len(res["ttfb_s"]) == 4
    # the data events plus "data: [DONE]"
    assert res["events"] == [peers.STREAM_CHUNKS + 1] * 4
    assert short["events"] == [peers.SHORT_CHUNKS + 1] * 2
    gaps = sorted(res["gaps_s"])
    assert len(gaps) == 4 * peers.STREAM_CHUNKS
    assert 0.018 <= gaps[len(gaps) // 2] <= 0.1  # the mock sleeps 20 ms between events
    assert min(res["total_s"]) >= peers.STREAM_CHUNKS * peers.STREAM_DELAY_MS / 1000 * 0.95


def test_streams_client_counts_errors():
    with MockProvider(process=True, api_key=None) as mock:
        url = mock.url.rstrip("/") + "/v1/chat/completions"
        res = _streams(url, orjson.dumps({"model": "gpt-4o-fault-503", "stream": True,
                                          "messages": [{"role": "user", "content": "hi"}]}), 3)
    assert res["errors"] == {"503": 3} and res["ttfb_s"] == []


def test_parse_strace_summary():
    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.00    0.004000          10       400           sendto
 30.00    0.003000          10       300        12 recvfrom
 30.00    0.003000          30       100           epoll_wait
------ ----------- ----------- --------- --------- ----------------
100.00    0.010000          12       800        12 total
"""
    total, top = peers.parse_strace(text)
    assert total == 800
    assert top[0] == ("sendto", 400) and dict(top)["recvfrom"] == 300


def test_tree_and_cpu_cover_children():
    child = subprocess.Popen([sys.executable, "-c",
                              ("import subprocess,sys,time; p=subprocess.Popen([sys.executable,'-c',"
                              "'import time\\nwhile time.process_time()<0.4: pass\\ntime.sleep(30)']);"
                              " time.sleep(30)")])
    try:
        deadline, cpu, pids = time.time() + 30, 0.0, []
        while time.time() < deadline and cpu < 0.4:  # the grandchild burns 0.4 s of CPU
            time.sleep(0.2)
            pids = peers.tree(child.pid)
            cpu = peers.cpu_of({"all": pids})["all"]
        assert len(pids) == 2 and pids[0] == child.pid
        assert cpu >= 0.4  # the grandchild's CPU counts
    finally:
        for p in peers.tree(child.pid)[::-1]:
            subprocess.run(["kill", str(p)], check=False)
        child.wait(5)


def test_litellm_never_the_compromised_release():
    assert peers.LITELLM_VERSION not in peers.LITELLM_FORBIDDEN
    assert "1.107.0" in peers.LITELLM_FORBIDDEN
