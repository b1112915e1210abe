"""Real Redis Sentinel and Redis Cluster deployments for tests, from the local redis-server.

Each topology runs in its own temp dir on free ports, is started by the test
(``with SentinelSet() as s: ...``) and torn down (every process killed by
pid, its files removed).  Timeouts are short so failovers finish in seconds.
"""
from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server") or "redis-server"
REDIS_CLI = shutil.which("redis-cli") or "redis-cli"


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int, cluster_bus: bool = False) -> list[int]:
    """``n`` free ports; with ``cluster_bus`` each port + 10000 (Redis Cluster's bus) too."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 45000)
        if port in ports or (port + 10000) in ports:
            continue
        if _bindable(port) and (not cluster_bus or _bindable(port + 10000)):
            ports.append(port)
    return ports


def wait_until(check, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what} ({last!r})")


class _Processes:
    def __init__(self, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"aigw-{name}-"))
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self, port: int, lines: list[str], sentinel: bool = False) -> None:
        conf = self.dir / f"{port}.conf"
        conf.write_text("\n".join([f"port {port}", "bind 127.0.0.1", f"dir {self.dir}",
                                   "save \"\"", "appendonly no", "protected-mode no",
                                   "repl-diskless-sync-delay 0",
                                   f"logfile {self.dir}/{port}.log", *lines]) + "\n")
        args = [REDIS_SERVER, str(conf)] + (["--sentinel"] if sentinel else [])
        self.procs[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
        proc = self.procs[port]

        def up() -> bool:
            if proc.poll() is not None:
                log = (self.dir / f"{port}.log")
                raise RuntimeError(f"redis-server on {port} exited: "
                                   + (log.read_text()[-500:] if log.exists() else "no log"))
            return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
        wait_until(up, what=f"redis on {port}")

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def close(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelSet:
    """One master, one replica, three Sentinels (quorum 2) watching master ``name``."""

    def __init__(self, name: str = "aigwmaster") -> None:
        self.name = name
        ports = free_ports(5)
        self.data_ports, self.sentinel_ports = ports[:2], ports[2:]
        self._p = _Processes("sentinel")

    def __enter__(self) -> SentinelSet:
        try:
            master, replica = self.data_ports
            self._p.start(master, [])
            self._p.start(replica, [f"replicaof 127.0.0.1 {master}"])
            wait_until(lambda: redis.Redis(port=replica).info("replication")
                       .get("master_link_status") == "up", what="replication link")
            for port in self.sentinel_ports:
                self._p.start(port, [f"sentinel monitor {self.name} 127.0.0.1 {master} 2",
                                     f"sentinel down-after-milliseconds {self.name} 1000",
                                     f"sentinel failover-timeout {self.name} 5000",
                                     f"sentinel parallel-syncs {self.name} 1"], sentinel=True)
            wait_until(lambda: all(
                int(redis.Redis(port=p).sentinel_master(self.name).get("num-other-sentinels", 0))
                >= 2 for p in self.sentinel_ports), what="sentinels discovering each other")
            wait_until(lambda: all(
                int(redis.Redis(port=p).sentinel_master(self.name).get("num-slaves", 0)) >= 1
                for p in self.sentinel_ports), what="sentinels discovering the replica")
        except BaseException:
            self._p.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._p.close()

    def master_port(self) -> int:
        _host, port = redis.Redis(port=self.sentinel_ports[0]).sentinel_get_master_addr_by_name(
            self.name)
        return int(port)

    def failover(self) -> int:
        """SENTINEL FAILOVER; returns the new master's port once the Sentinels agree."""
        old = self.master_port()
        redis.Redis(port=self.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER",
                                                                  self.name)
        return self._await_new_master(old)

    def kill_master(self) -> int:
        """SIGKILL the master; returns the promoted replica's port."""
        old = self.master_port()
        self._p.kill(old)
        return self._await_new_master(old)

    def _await_new_master(self, old: int) -> int:
        def promoted():
            port = self.master_port()
            if port == old:
                return None
            role = redis.Redis(port=port, socket_timeout=0.5).info("replication")["role"]
            return port if role == "master" else None
        return wait_until(promoted, timeout=30, what="a new master")

    def config(self) -> dict:
        """The plugins' ``redis`` record for this deployment."""
        return {"sentinel_master": self.name, "sentinel_role": "master",
                "sentinel_nodes": [{"host": "127.0.0.1", "port": p} for p in self.sentinel_ports]}


class ClusterSet:
    """A Redis Cluster of three masters with one replica each, made by ``redis-cli --cluster``."""

    def __init__(self) -> None:
        self.ports = free_ports(6, cluster_bus=True)
        self._p = _Processes("cluster")

    def __enter__(self) -> ClusterSet:
        try:
            for port in self.ports:
                self._p.start(port, ["cluster-enabled yes",
                                     f"cluster-config-file nodes-{port}.conf",
                                     "cluster-node-timeout 1000",
                                     "cluster-replica-validity-factor 0"])
            subprocess.run([REDIS_CLI, "--cluster", "create",
                            *[f"127.0.0.1:{p}" for p in self.ports],
                            "--cluster-replicas", "1", "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
            wait_until(self._healthy, timeout=30, what="cluster state ok")
            wait_until(self._replicas_synced, timeout=30, what="replicas in sync")
        except BaseException:
            self._p.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._p.close()

    def _healthy(self) -> bool:
        for port in self.ports:
            if port not in self._p.procs:
                continue
            info = redis.Redis(port=port, socket_timeout=0.5).cluster("info")
            if info.get("cluster_state") != "ok":
                return False
        return True

    def _replicas_synced(self) -> bool:
        replicas = 0
        for port in self.ports:
            info = redis.Redis(port=port, socket_timeout=0.5).info("replication")
            if info["role"] == "slave":
                if info.get("master_link_status") != "up" or info.get("master_sync_in_progress"):
                    return False
                replicas += 1
        return replicas == 3

    def master_of(self, key: str) -> int:
        """Port of the master serving ``key``'s slot."""
        for port in self.ports:
            if port not in self._p.procs:
                continue
            r = redis.Redis(port=port, socket_timeout=0.5)
            if r.info("replication")["role"] != "master":
                continue
            slot = r.cluster("keyslot", key)
            for start, end, master, *_ in r.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise LookupError(key)

    def kill(self, port: int) -> None:
        self._p.kill(port)

    def wait_healthy(self, timeout: float = 30) -> None:
        wait_until(self._healthy, timeout=timeout, what="cluster state ok after failover")

    def config(self) -> dict:
        return {"cluster_nodes": [{"ip": "127.0.0.1", "port": p} for p in self.ports]}
