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
