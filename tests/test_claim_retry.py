"""A claim that Redis ran but whose reply was lost, then sent again by redis-py's retry.

Before: the second send found the jobs already claimed (no longer queued) and took nothing,
so no error reached the worker, which held the jobs in Redis (kept by its live lease) but
never ran them until it stopped. Seen in the Sentinel chaos run (a promotion notice closes
the connections). Now a claim sent again answers as the first send did.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from hostedjobs import JobContext, JobHost, JobStatus, job_type
from hostedjobs.storage import Store
from hostedjobs.testing import wait_for_job
from tests.waiting import eventually


def _now() -> int:
    return int(time.time() * 1000)


async def test_a_claim_sent_again_answers_as_the_first(redis_url: str, queue_name: str) -> None:
    """The same claim twice (as a retry sends it): the second answers the same job, its
    record and try count as the first did, counts no second try, and no other worker can
    take the job meanwhile."""
    store = Store(Redis.from_url(redis_url), queue_name)
    try:
        now = _now()
        await store.enqueue("a", b'{"f":"t@1"}', due_ms=now - 5, ttl_ms=60_000)
        await store.enqueue("b", b'{"f":"t@2"}', due_ms=now - 5, ttl_ms=60_000)
        for worker in ("w", "other"):
            assert (await store.lease_worker(worker, lease_ms=60_000, take=True))[0]
        first, _, _ = await store.claim(["a"], worker_id="w", now_ms=now, limit=1)
        again, _, _ = await store.claim(["a"], worker_id="w", now_ms=now, limit=1)
        assert [(j.id, j.record, j.tries, j.aborted) for j in first] == [
            ("a", b'{"f":"t@1"}', 1, False)
        ]
        assert [(j.id, j.record, j.tries, j.aborted) for j in again] == [
            ("a", b'{"f":"t@1"}', 1, False)
        ]
        # Not another worker's, and not counted twice (a requeue after this try says 1).
        assert (await store.claim(["a"], worker_id="other", now_ms=now, limit=1))[0] == []
        assert await store.claims("w") == {"a"}
        # The limit counts a job held already: the resent claim takes no more than the first.
        both, _, _ = await store.claim(["a", "b"], worker_id="w", now_ms=now, limit=1)
        assert [j.id for j in both] == ["a"]
        both, _, _ = await store.claim(["a", "b"], worker_id="w", now_ms=now, limit=2)
        assert [(j.id, j.tries) for j in both] == [("a", 1), ("b", 1)]
        assert await store.claims("w") == {"a", "b"}
    finally:
        await store.close()


# -- end to end: the reply is dropped on the wire ---------------------------------------------


@job_type("tests.claim_retry.mark")
@dataclass
class Mark:
    ledger: str


class ReplyDropper:
    """A TCP proxy in front of Redis that, once, forwards a claim to Redis, waits for Redis's
    reply (so the claim ran) and then closes the client's connection without passing it on:
    the reply is lost after Redis applied the claim, as in a failover or a restart."""

    def __init__(self, host: str, port: int, marker: bytes) -> None:
        self.host, self.port, self.marker = host, port, marker
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        armed: asyncio.Event | None,
        client: asyncio.StreamWriter,
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if armed is not None and armed.is_set():
                    armed.clear()
                    if not data.startswith(b"-"):  # not refused (NOSCRIPT): the claim ran
                        self.dropped += 1
                        break
                writer.write(data)
                await writer.drain()
        client.close()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        armed = asyncio.Event()
        replies = asyncio.create_task(self._pump(up_reader, writer, armed, writer))
        self._tasks.add(replies)
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if not self.dropped and self.marker in data:
                    armed.set()
                up_writer.write(data)
                await up_writer.drain()
        up_writer.close()
        writer.close()
        await asyncio.gather(replies, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_a_claim_whose_reply_was_lost_runs_its_job_once(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """A worker's claim runs in Redis, then its connection drops before the reply arrives;
    redis-py sends the claim again. The job runs (before: never, while the worker lived),
    once, as its first try."""
    url = urlsplit(redis_url)
    if url.scheme != "redis" or url.hostname is None or url.port is None:
        pytest.skip("the proxy speaks TCP only")
    probe = Store(Redis.from_url(redis_url), queue_name)
    try:
        await probe.ping()
        sha = probe._scripts["claim"].sha.encode()
    finally:
        await probe.close()
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    proxy = ReplyDropper(url.hostname, url.port, sha)
    async with proxy.serving() as port:
        host = JobHost(
            redis_url=f"redis://127.0.0.1:{port}{url.path}", queue_name=queue_name, concurrency=2
        )

        @host.handler(Mark)
        async def mark(job: Mark, ctx: JobContext) -> None:
            with Path(job.ledger).open("a") as file:
                file.write(f"{ctx.run_id} {ctx.attempt}\n")

        async with host.run():
            job_id = await host.scheduler.enqueue(Mark(str(ledger)))
            info = await wait_for_job(host, job_id, timeout=60)
            assert info.status is JobStatus.SUCCEEDED, info
            assert info.tries == 1
            await eventually(lambda: proxy.dropped == 1, what="the claim's reply dropped")
    assert ledger.read_text().splitlines() == [f"{job_id} 1"]
