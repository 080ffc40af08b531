"""Worker heartbeats: every worker process writes its own, so probes can tell who is alive.

arq keeps one health key per queue that every worker overwrites (and only hourly by default);
here each worker process has a key of its own, renewed every couple of seconds with a short
expiry, plus a sorted-set index so readers never scan the keyspace.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, fields
from typing import Any

from .storage import Store

__all__ = [
    "BEAT_INTERVAL_S",
    "BEAT_TTL_S",
    "WorkerBeat",
    "new_worker_id",
    "read_beats",
    "write_beat",
]

BEAT_INTERVAL_S = 2.0
"""How often a worker writes its heartbeat."""
BEAT_TTL_S = 10.0
"""A heartbeat older than this means the worker is gone (or its loop is stuck)."""
_INDEX_KEPT_S = 600

logger = logging.getLogger("hostedjobs.health")


def new_worker_id() -> str:
    """``host:pid:random``: unique per worker process, readable in a list."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """What a worker says about itself at each heartbeat."""

    worker_id: str
    hostname: str
    pid: int
    queue: str
    started_at: float
    beat_at: float
    running: int
    completed: int
    failed: int
    retried: int
    functions: tuple[str, ...] = ()
    """The job functions the worker can run (``"type@version"``, distributed cron jobs)."""

    @property
    def age_s(self) -> float:
        """Seconds since this heartbeat was written."""
        return time.time() - self.beat_at


async def write_beat(store: Store, beat: WorkerBeat) -> None:
    """Store ``beat`` (expiring after `BEAT_TTL_S`) and index it by time."""
    await store.write_beat(
        beat.worker_id,
        json.dumps(asdict(beat)),
        now_ms=int(beat.beat_at * 1000),
        ttl_ms=int(BEAT_TTL_S * 1000),
        index_kept_ms=_INDEX_KEPT_S * 1000,
    )


async def read_beats(store: Store, *, max_age_s: float = BEAT_TTL_S) -> list[WorkerBeat]:
    """Workers of the store's queue whose last heartbeat is at most ``max_age_s`` old,
    newest first."""
    raw = await store.read_beats(since_ms=int((time.time() - max_age_s) * 1000))
    beats: list[WorkerBeat] = []
    known = {f.name for f in fields(WorkerBeat)}
    for item in raw:
        # Beats of other hostedjobs versions may lack fields or carry new ones; one not
        # written by hostedjobs at all is skipped, not a reason to fail every reader.
        try:
            data: dict[str, Any] = json.loads(item)
            data = {key: value for key, value in data.items() if key in known}
            functions = data.get("functions") or ()
            data["functions"] = (
                tuple(str(f) for f in functions) if isinstance(functions, list) else ()
            )
            beat = WorkerBeat(**data)
            if isinstance(beat.beat_at, bool) or not isinstance(beat.beat_at, int | float):
                raise TypeError(f"beat_at is {beat.beat_at!r}, not a time")
        except (ValueError, TypeError, AttributeError) as exc:
            logger.warning("skipped a worker heartbeat hostedjobs cannot read: %s", exc)
            continue
        beats.append(beat)
    return [beat for beat in beats if beat.age_s <= max_age_s]
