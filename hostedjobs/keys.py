"""The Redis key layout: arq's keys, plus the few hostedjobs adds beside them."""

from __future__ import annotations

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

__all__ = [
    "ABORT_KEY",
    "EVENTS_PREFIX",
    "FINISHED_KEPT",
    "IN_PROGRESS_PREFIX",
    "JOB_PREFIX",
    "META_PREFIX",
    "RESULT_PREFIX",
    "RETRY_PREFIX",
    "WAKE_TOKENS_KEPT",
    "events_channel",
    "finished_index",
    "meta_key",
    "running_index",
    "wake_key",
]

JOB_PREFIX: str = job_key_prefix
IN_PROGRESS_PREFIX: str = in_progress_key_prefix
RESULT_PREFIX: str = result_key_prefix
RETRY_PREFIX: str = retry_key_prefix
ABORT_KEY: str = abort_jobs_ss
META_PREFIX = "hostedjobs:meta:"
"""A hash per on-demand job: progress, progress message, last error of a retried try."""

WAKE_TOKENS_KEPT = 64
"""Enough tokens to wake every idle worker of a large fleet; more would only be stale."""


def wake_key(queue_name: str) -> str:
    """The list idle workers block on; enqueuers push a token so pickup needs no polling."""
    return f"{queue_name}:wake"


EVENTS_PREFIX = "hostedjobs:events:"
"""A pub/sub channel per job: ``running``, ``progress``, ``finished``, ``requeued``, ``deleted``."""


def events_channel(job_id: str) -> str:
    """Where a job's state changes are published, for `Scheduler.watch`."""
    return EVENTS_PREFIX + job_id


def meta_key(job_id: str) -> str:
    """The hash with a job's progress and last error."""
    return META_PREFIX + job_id


FINISHED_KEPT = 10_000
"""How many finished jobs of each state the indexes remember (newest first)."""


def running_index(queue_name: str) -> str:
    """A zset of the jobs hostedjobs workers are running, scored by start time (ms)."""
    return f"hostedjobs:{queue_name}:running"


def finished_index(queue_name: str, state: str) -> str:
    """A zset of finished jobs in ``state`` (succeeded, failed, cancelled), by finish time (ms).

    The indexes let the dashboard page through jobs by state without scanning the keyspace;
    they are trimmed to `FINISHED_KEPT` entries and to the host's result lifetime.
    """
    return f"hostedjobs:{queue_name}:{state}"
