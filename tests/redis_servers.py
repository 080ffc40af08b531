"""Private redis-servers that a test configures as it needs: a password, TLS, an eviction
policy, a replica, cluster mode, ACL users; and that it can freeze (SIGSTOP) and thaw.

Each listens on 127.0.0.1 on ports of its own and persists nothing, so it never touches the
session's Redis or one on 6379.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from hostedjobs.storage.embedded import find_redis_server
from tests.servers import free_port


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (``openssl``), in ``folder``."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a TLS certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    # fmt: off
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True, capture_output=True,
    )
    # fmt: on
    return cert, key


class RedisServer:
    """One redis-server child process with ``options`` on its command line.

    With ``password`` it requires it (``requirepass``); with ``tls`` it also listens for TLS
    on `tls_port` (a certificate made in ``data_dir``; `url` stays the plain port's).
    """

    def __init__(
        self,
        data_dir: Path,
        *options: str,
        password: str | None = None,
        tls: bool = False,
        binary: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port(cluster="--cluster-enabled" in options)
        self.password = password
        self.tls_port: int | None = None
        self.certificate: Path | None = None
        # fmt: off
        self.command = [
            binary or find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--daemonize", "no", "--dir", str(data_dir), "--logfile", str(data_dir / "redis.log"),
            "--save", "", "--appendonly", "no", *options,
        ]
        # fmt: on
        if password is not None:
            self.command += ["--requirepass", password]
        if tls:
            self.certificate, key = make_certificate(data_dir)
            self.tls_port = free_port()
            # fmt: off
            self.command += [
                "--tls-port", str(self.tls_port), "--tls-cert-file", str(self.certificate),
                "--tls-key-file", str(key), "--tls-ca-cert-file", str(self.certificate),
                "--tls-auth-clients", "no",
            ]
            # fmt: on
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The plain port's URL, without the password."""
        return f"redis://127.0.0.1:{self.port}/0"

    def admin(self) -> redis.Redis:
        """A (synchronous) client with the server's password; close it after use."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=30,
            socket_connect_timeout=30,
        )

    def info(self, section: str) -> dict[str, Any]:
        """``INFO section``, as the admin reads it."""
        admin = self.admin()
        try:
            return cast(dict[str, Any], admin.info(section))
        finally:
            admin.close()

    def start(self) -> RedisServer:
        """Start the server and wait until it answers."""
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while self._process.poll() is None and time.monotonic() < deadline:
            client = self.admin()
            try:
                if client.ping():
                    return self
            except (redis.RedisError, OSError):
                time.sleep(0.05)
            finally:
                client.close()
        self.stop()
        log = self.data_dir / "redis.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        if "TLS" in tail and "not" in tail.lower():
            raise NoTLSError(f"{self.command[0]} was built without TLS")
        raise RuntimeError(f"redis-server {self.command} did not start:\n{tail}")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it accepts connections but answers nothing."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a frozen server (SIGCONT)."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        assert self._process is not None
        self._process.kill()
        self._process.wait()

    def stop(self) -> None:
        """Stop the server (thawed first, so that it can)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class NoTLSError(RuntimeError):
    """The server binary was built without TLS."""


@contextlib.contextmanager
def redis_server(
    tmp_path_factory: pytest.TempPathFactory,
    *options: str,
    password: str | None = None,
    tls: bool = False,
) -> Iterator[RedisServer]:
    """A started `RedisServer`, stopped when the block ends."""
    server = RedisServer(
        tmp_path_factory.mktemp("redis-server"), *options, password=password, tls=tls
    )
    try:
        server.start()
    except NoTLSError as error:
        # The embedded extra's server may lack TLS; one installed on PATH may have it.
        others = [shutil.which(name) for name in ("redis-server", "valkey-server")]
        others = [path for path in others if path and path != server.command[0]]
        if not others:
            pytest.skip(str(error))
        server = RedisServer(
            tmp_path_factory.mktemp("redis-server"),
            *options,
            password=password,
            tls=tls,
            binary=others[0],
        )
        try:
            server.start()
        except NoTLSError as again:
            pytest.skip(f"{error}; {again}")
    try:
        yield server
    finally:
        server.stop()


SERVICE = "jobs"
"""The name the test sentinels know their primary by."""


class SentinelServer(RedisServer):
    """A redis-server running as a Sentinel (``--sentinel``) that watches ``primary`` as
    `SERVICE`, with timings short enough for a failover within seconds."""

    def __init__(self, data_dir: Path, primary: RedisServer, *, quorum: int) -> None:
        super().__init__(data_dir)
        config = data_dir / "sentinel.conf"  # Sentinel rewrites its config: it needs a file
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {data_dir}\n"
            f"logfile {data_dir / 'redis.log'}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} {quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 4000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.command = [find_redis_server(), str(config), "--sentinel"]

    def master(self) -> dict[str, Any]:
        """``SENTINEL MASTER jobs``: what this sentinel knows of the service."""
        admin = self.admin()
        try:
            return cast(dict[str, Any], admin.sentinel_master(SERVICE))  # type: ignore[no-untyped-call]
        finally:
            admin.close()


@dataclass
class SentinelSetup:
    """A primary, its replicas and three sentinels watching them, on loopback."""

    primary: RedisServer
    replicas: list[RedisServer]
    sentinels: list[SentinelServer]

    def url(self, service: str = SERVICE, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{service}/{db}"

    @property
    def replica(self) -> RedisServer:
        """The first replica."""
        return self.replicas[0]

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    def server_at(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def ready(self) -> bool:
        """True once every sentinel sees the primary up, each replica in sync and the two
        other sentinels."""
        try:
            for sentinel in self.sentinels:
                state = sentinel.master()
                if not state["is_master"] or state["is_sdown"] or state["is_odown"]:
                    return False
                if int(state["port"]) != self.primary.port or state["num-other-sentinels"] < 2:
                    return False
                admin = sentinel.admin()
                try:
                    replicas = admin.sentinel_slaves(SERVICE)  # type: ignore[no-untyped-call]
                finally:
                    admin.close()
                synced = [
                    r for r in replicas if not r["is_sdown"] and r.get("master-link-status") == "ok"
                ]
                if len(synced) < len(self.replicas):
                    return False
        except (redis.RedisError, OSError, KeyError):
            return False
        return True

    def failover(self, sentinel: int = 0) -> None:
        """``SENTINEL FAILOVER jobs``, asked of the ``sentinel``-th sentinel."""
        admin = self.sentinels[sentinel].admin()
        try:
            admin.execute_command("SENTINEL", "FAILOVER", SERVICE)  # type: ignore[no-untyped-call]
        finally:
            admin.close()

    def stop(self) -> None:
        for server in (*self.sentinels, *self.replicas, self.primary):
            server.stop()


@contextlib.contextmanager
def sentinel_setup(
    mktemp: Callable[[str], Path], *primary_options: str, replicas: int = 1
) -> Iterator[SentinelSetup]:
    """A started `SentinelSetup` (waited for until every sentinel sees all of it), stopped
    when the block ends. ``mktemp(name)`` makes each server's folder (a pytest
    ``tmp_path_factory.mktemp``); ``primary_options`` go on the primary's command line."""
    primary = RedisServer(mktemp("primary"), *primary_options)
    setup = SentinelSetup(primary, [], [])
    try:
        primary.start()
        for _ in range(replicas):
            replica = RedisServer(mktemp("replica"), "--replicaof", "127.0.0.1", str(primary.port))
            setup.replicas.append(replica)
            replica.start()
        for _ in range(3):
            sentinel = SentinelServer(mktemp("sentinel"), primary, quorum=2)
            setup.sentinels.append(sentinel)
            sentinel.start()
        deadline = time.monotonic() + 90
        while not setup.ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not see the primary, replica and each other")
            time.sleep(0.1)
        yield setup
    finally:
        setup.stop()


class ClusterServers:
    """A Redis Cluster of ``primaries`` nodes started from scratch: each its own
    `RedisServer` in cluster mode, the 16384 slots split evenly (``CLUSTER ADDSLOTSRANGE``),
    joined with ``CLUSTER MEET``. No replicas: a test moves slots itself (`migrate_slot`)."""

    def __init__(
        self, data_dir: Path, primaries: int = 3, binary: str | None = None, *, tls: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.binary = binary
        self.replicas: list[RedisServer] = []
        self.nodes: list[RedisServer] = []
        self.certificate: Path | None = None
        tls_options: list[str] = []
        if tls:
            # One certificate for all: the nodes' bus is TLS too (tls-cluster), as deployed.
            data_dir.mkdir(parents=True, exist_ok=True)
            self.certificate, key = make_certificate(data_dir)
            # fmt: off
            tls_options = [
                "--tls-cert-file", str(self.certificate), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(self.certificate), "--tls-auth-clients", "no",
                "--tls-cluster", "yes",
            ]
            # fmt: on
        for index in range(primaries):
            folder = data_dir / f"node{index}"
            folder.mkdir(parents=True)
            options = tls_options
            tls_port = None
            if tls:
                tls_port = free_port(cluster=True)  # its cluster bus is 10000 above it
                options = [*tls_options, "--tls-port", str(tls_port)]
            # fmt: off
            node = RedisServer(
                folder, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000", *options, binary=binary,
            )
            # fmt: on
            node.tls_port = tls_port
            self.nodes.append(node)

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every node (``rediss+cluster://`` and the TLS ports,
        trusting the certificate, for a TLS cluster)."""
        if self.certificate is not None:
            ports = ",".join(f"127.0.0.1:{node.tls_port}" for node in self.nodes)
            return f"rediss+cluster://{ports}?ssl_ca_certs={self.certificate}"
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> ClusterServers:
        """Start the nodes, give each its share of the slots, join them, and wait until every
        node says the cluster is ok and knows every other."""
        for node in self.nodes:
            node.start()
        share = 16384 // len(self.nodes)
        for index, node in enumerate(self.nodes):
            first = index * share
            last = 16383 if index == len(self.nodes) - 1 else first + share - 1
            self._call(node, "CLUSTER", "ADDSLOTSRANGE", first, last)
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            self._call(node, "CLUSTER", "MEET", "127.0.0.1", seed.tls_port or seed.port)
        deadline = time.monotonic() + 60
        while not self._settled():
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not come up within 60 s")
            time.sleep(0.05)
        return self

    def _settled(self) -> bool:
        for node in self.nodes:
            info = cast(str, self._call(node, "CLUSTER", "INFO").decode())
            facts = dict(line.split(":", 1) for line in info.split() if ":" in line)
            if facts.get("cluster_state") != "ok":
                return False
            if int(facts.get("cluster_known_nodes", 0)) != len(self.nodes):
                return False
        # Every node's view of who owns what agrees.
        views = {str(sorted(map(str, self._call(n, "CLUSTER", "SLOTS")))) for n in self.nodes}
        return len(views) == 1

    @staticmethod
    def _call(node: RedisServer, *args: Any) -> Any:
        admin = node.admin()
        try:
            return admin.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            admin.close()

    def node_id(self, node: RedisServer) -> str:
        """The node's cluster id."""
        return cast(bytes, self._call(node, "CLUSTER", "MYID")).decode()

    def owner(self, slot: int) -> RedisServer:
        """The node serving ``slot`` now."""
        for start, end, (_, port, *_), *_ in self._call(self.nodes[0], "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def migrate_slot(self, slot: int, target: RedisServer, batch: int = 100) -> None:
        """Move ``slot`` and its keys to ``target`` as ``redis-cli --cluster reshard`` does
        (IMPORTING, MIGRATING, MIGRATE ``batch`` keys at a time, then SETSLOT NODE on every
        node)."""
        source = self.owner(slot)
        if source is target:
            return
        source_id, target_id = self.node_id(source), self.node_id(target)
        self._call(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        self._call(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := self._call(source, "CLUSTER", "GETKEYSINSLOT", slot, batch):
            # fmt: off
            self._call(
                source, "MIGRATE", "127.0.0.1", target.port, "", 0, 30_000, "REPLACE",
                "KEYS", *keys,
            )
            # fmt: on
        for node in (target, source, *self.nodes):
            self._call(node, "CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def add_replica(self, primary: RedisServer) -> RedisServer:
        """Start a node that joins the cluster as a replica of ``primary``, and wait until it
        is in sync with it and every node knows it."""
        folder = self.data_dir / f"replica{len(self.replicas)}"
        folder.mkdir(parents=True)
        # fmt: off
        replica = RedisServer(
            folder, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "5000", binary=self.binary,
        ).start()
        # fmt: on
        self.replicas.append(replica)
        self._call(replica, "CLUSTER", "MEET", "127.0.0.1", primary.port)
        primary_id = self.node_id(primary)
        deadline = time.monotonic() + 60
        while True:
            try:
                self._call(replica, "CLUSTER", "REPLICATE", primary_id)
                break
            except redis.ResponseError:  # it does not know the primary yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        while (
            replica.info("replication").get("master_link_status") != "up"
            or any(
                int(dict(
                    line.split(":", 1)
                    for line in self._call(n, "CLUSTER", "INFO").decode().split()
                    if ":" in line
                )["cluster_known_nodes"]) != len(self.nodes) + len(self.replicas)
                for n in (*self.nodes, *self.replicas)
            )
        ):  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not join within 60 s")
            time.sleep(0.05)
        return replica

    def stop(self) -> None:
        """Stop every node."""
        for node in (*self.nodes, *self.replicas):
            node.stop()


@contextlib.contextmanager
def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    primaries: int = 3,
    binary: str | None = None,
    *,
    tls: bool = False,
) -> Iterator[ClusterServers]:
    """A started `ClusterServers`, stopped when the block ends. With ``tls`` and a server
    built without TLS, one on PATH is tried, else the test is skipped."""
    binaries = [binary or find_redis_server()]
    if tls and binary is None:
        binaries += [
            path
            for path in (shutil.which("redis-server"), shutil.which("valkey-server"))
            if path and path != binaries[0]
        ]
    for candidate in binaries:
        folder = tmp_path_factory.mktemp("redis-cluster")
        cluster = ClusterServers(folder, primaries, candidate, tls=tls)
        try:
            cluster.start()
        except NoTLSError:
            cluster.stop()
            continue
        except BaseException:
            cluster.stop()
            raise
        try:
            yield cluster
        finally:
            cluster.stop()
        return
    pytest.skip("no server here is built with TLS")
