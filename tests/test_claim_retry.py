"""Calls that Redis ran but whose reply was lost, then sent again by redis-py's retry.

- A claim: the second send found the jobs already claimed (no longer queued) and took
  nothing, so no error reached the worker, which held the jobs in Redis (kept by its live
  lease) but never ran them until it stopped. Seen in the Sentinel chaos run (a promotion
  notice closes the connections). Now a claim sent again answers as the first send did.
- A commit's MULTI/EXEC (the unchecked fast path): sent again, it queued again a job that
  another worker had claimed meanwhile, so it ran twice. Now it is not sent again; the
  checked script, sent next, drops what was already stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from hostedjobs import JobContext, JobHost, JobStatus, job_type
from hostedjobs.exceptions import RedisUnavailableError
from hostedjobs.storage import Requeued, Store, open_redis
from hostedjobs.testing import wait_for_job
from tests.waiting import eventually


def _now() -> int:
    return int(time.time() * 1000)


def _tcp(redis_url: str) -> tuple[str, int, str]:
    url = urlsplit(redis_url)
    if url.scheme != "redis" or url.hostname is None or url.port is None:
        pytest.skip("the proxy speaks TCP only")
    return url.hostname, url.port, url.path


async def test_a_claim_sent_again_answers_as_the_first(redis_url: str, queue_name: str) -> None:
    """The same claim twice (as a retry sends it): the second answers the same job, its
    record and try count as the first did, counts no second try, and no other worker can
    take the job meanwhile."""
    store = Store(Redis.from_url(redis_url), queue_name)
    a, b = f"{queue_name}-a", f"{queue_name}-b"  # job keys are not per queue
    try:
        now = _now()
        await store.enqueue(a, b'{"f":"t@1"}', due_ms=now - 5, ttl_ms=60_000)
        await store.enqueue(b, b'{"f":"t@2"}', due_ms=now - 5, ttl_ms=60_000)
        for worker in ("w", "other"):
            assert (await store.lease_worker(worker, lease_ms=60_000, take=True))[0]
        first, _, _ = await store.claim([a], worker_id="w", now_ms=now, limit=1)
        again, _, _ = await store.claim([a], worker_id="w", now_ms=now, limit=1)
        assert [(j.id, j.record, j.tries, j.aborted) for j in first] == [
            (a, b'{"f":"t@1"}', 1, False)
        ]
        assert [(j.id, j.record, j.tries, j.aborted) for j in again] == [
            (a, b'{"f":"t@1"}', 1, False)
        ]
        # Not another worker's, and not counted twice (a requeue after this try says 1).
        assert (await store.claim([a], worker_id="other", now_ms=now, limit=1))[0] == []
        assert await store.claims("w") == {a}
        # The limit counts a job held already: the resent claim takes no more than the first.
        both, _, _ = await store.claim([a, b], worker_id="w", now_ms=now, limit=1)
        assert [j.id for j in both] == [a]
        both, _, _ = await store.claim([a, b], worker_id="w", now_ms=now, limit=2)
        assert [(j.id, j.tries) for j in both] == [(a, 1), (b, 1)]
        assert await store.claims("w") == {a, b}
    finally:
        await store.close()


# -- end to end: the reply is dropped on the wire ---------------------------------------------


@job_type("tests.claim_retry.mark")
@dataclass
class Mark:
    ledger: str


class ReplyDropper:
    """A TCP proxy in front of Redis that, once, forwards a call (one holding ``marker``) to
    Redis, waits for Redis's reply (so the call ran) and then closes the client's connection
    without passing the reply on: it is lost after Redis applied the call, as in a failover
    or a restart. ``meanwhile`` runs between Redis's reply and the drop (another worker's
    move)."""

    def __init__(
        self,
        host: str,
        port: int,
        marker: bytes,
        meanwhile: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.host, self.port, self.marker = host, port, marker
        self.meanwhile = meanwhile
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
                    if not data.startswith(b"-"):  # not refused (NOSCRIPT): the call ran
                        self.dropped += 1
                        if self.meanwhile is not None:
                            await self.meanwhile()
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
    redis_host, redis_port, db = _tcp(redis_url)
    probe = Store(Redis.from_url(redis_url), queue_name)
    try:
        await probe.ping()
        sha = probe._scripts["claim"].sha.encode()
    finally:
        await probe.close()
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    proxy = ReplyDropper(redis_host, redis_port, sha)
    async with proxy.serving() as port:
        host = JobHost(
            redis_url=f"redis://127.0.0.1:{port}{db}", queue_name=queue_name, concurrency=2
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


async def test_a_commit_whose_reply_was_lost_is_not_applied_twice(
    redis_url: str, queue_name: str
) -> None:
    """A worker requeues its job with the fast MULTI/EXEC commit; Redis applies it, another
    worker claims the job, and the reply is lost. The commit is not sent again: the job
    stays the other worker's alone (before: queued again while that worker ran it)."""
    redis_host, redis_port, db = _tcp(redis_url)
    direct = Store(Redis.from_url(redis_url), queue_name)
    now = _now()
    a = f"{queue_name}-a"  # job keys are not per queue
    taken: list[str] = []

    async def another_worker_claims() -> None:
        claimed, _, _ = await direct.claim([a], worker_id="other", now_ms=_now(), limit=1)
        taken.extend(job.id for job in claimed)

    try:
        await direct.enqueue(a, b'{"f":"t@1"}', due_ms=now - 5, ttl_ms=60_000)
        for worker in ("w", "other"):
            assert (await direct.lease_worker(worker, lease_ms=60_000, take=True))[0]
        assert len((await direct.claim([a], worker_id="w", now_ms=now, limit=1))[0]) == 1
        proxy = ReplyDropper(redis_host, redis_port, b"MULTI", another_worker_claims)
        requeue = [Requeued(a, now - 5, error="boom", tries=1)]
        async with proxy.serving() as port:
            store = Store(await open_redis(f"redis://127.0.0.1:{port}{db}"), queue_name)
            try:
                try:
                    dropped = await store.commit(
                        requeue, worker_id="w", now_ms=_now(), max_age_ms=0, held=True
                    )
                except RedisUnavailableError:
                    # What the worker's committer does next: the checked script.
                    dropped = await store.commit(
                        requeue, worker_id="w", now_ms=_now(), max_age_ms=0
                    )
            finally:
                await store.close()
        assert proxy.dropped == 1
        assert taken == [a]
        assert (await direct.peek(10, now_ms=_now())).ids == []
        assert await direct.claims("other") == {a}
        assert await direct.redis.zscore(direct.keys.claimed, a) is not None
        assert dropped == [a]  # stored by the first send
    finally:
        await direct.close()
