"""The Redis key layout: every key and channel name hostedjobs uses, built in this one place.

On-demand jobs use arq's layout (``arq:job:<id>``, ``arq:in-progress:<id>``,
``arq:retry:<id>``, ``arq:result:<id>``, the queue zset named after the queue, and
``arq:abort``), so stock `arq.jobs.Job` handles read hostedjobs' jobs and a stock arq worker
can share the queue. Everything hostedjobs adds lives under ``hostedjobs:<queue>:``.

Scripts never build a key: every key a script touches is one of these, passed in KEYS (so a
proxy or a cluster can route each call). Pub/sub channels are not keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, result_key_prefix

from ..outcomes import JobStatus

__all__ = [
    "FINISHED_KEPT",
    "WAKE_TOKENS_KEPT",
    "WORKER_INDEX_TTL_MS",
    "CronKeys",
    "HostedKeys",
    "KeyLayout",
    "LockKeys",
]

WAKE_TOKENS_KEPT = 64
"""Enough tokens to wake every idle worker of a large fleet; more would only be stale."""

FINISHED_KEPT = 100_000
"""How many finished jobs of each state the indexes remember (newest first); the same bound
holds for each job type's and each worker's index of a state. An entry costs about 140 bytes
of Redis memory, a third of a small result record (kept for ``keep_result`` anyway)."""

WORKER_INDEX_TTL_MS = 86_400_000
"""How long a worker's finished-job indexes live after its last commit (worker ids are new
in every process, so an index of a stopped worker must go by itself)."""


@dataclass(frozen=True, slots=True)
class CronKeys:
    """The keys of one distributed cron job."""

    prefix: str

    @property
    def last_tick(self) -> str:
        """The newest tick any process fired (ms), for misfire handling."""
        return f"{self.prefix}:last_tick"

    @property
    def lease(self) -> str:
        """Held by the live run, renewed by its heartbeat."""
        return f"{self.prefix}:lease"

    @property
    def pending(self) -> str:
        """The id of the newest enqueued run."""
        return f"{self.prefix}:pending"

    @property
    def state(self) -> str:
        """A hash: next run, last run's times, outcome and message, the running run."""
        return f"{self.prefix}:state"

    @property
    def history(self) -> str:
        """A capped list of recent runs (JSON), newest first."""
        return f"{self.prefix}:history"

    def claim(self, tick_ms: int) -> str:
        """Set by the one process that fires ``tick_ms``."""
        return f"{self.prefix}:claim:{tick_ms}"


@dataclass(frozen=True, slots=True)
class HostedKeys:
    """The shared keys of one continuous or per-process cron job (its runs in every process)."""

    prefix: str

    @property
    def runs(self) -> str:
        """A capped list of recent finished (or skipped) runs from every process (JSON),
        newest first."""
        return f"{self.prefix}:runs"

    @property
    def last(self) -> str:
        """The newest run that ran (not a skipped tick), from whichever process (JSON)."""
        return f"{self.prefix}:last"


@dataclass(frozen=True, slots=True)
class LockKeys:
    """The keys of one named lock (`hostedjobs.locks`). The kind comes before the name, so
    no lock's name can spell another lock's key."""

    namespace: str
    name: str

    @property
    def owner(self) -> str:
        """The holder's owner id, expiring with the lock's TTL unless renewed."""
        return f"{self.namespace}:lock:{self.name}"

    @property
    def fence(self) -> str:
        """The fencing token counter: incremented at each acquisition, never expiring (a
        token must never go back, whatever happens to the lock)."""
        return f"{self.namespace}:lock-fence:{self.name}"

    @property
    def released(self) -> str:
        """A list of at most one token, pushed at each release, that waiters block on."""
        return f"{self.namespace}:lock-released:{self.name}"


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """The keys of one queue.

    By default arq's layout (``arq:job:<id>`` and friends), so stock arq reads and runs the
    jobs. With ``hash_tag=True`` every key of the queue starts with ``{hostedjobs:<queue>}``
    instead, so all of them hash to one Redis Cluster slot and every script and transaction
    of the queue runs on one node; stock arq then no longer reads the jobs.
    """

    queue: str
    """The queue's name."""
    hash_tag: bool = False

    @property
    def namespace(self) -> str:
        """What every key hostedjobs adds for the queue starts with (then a colon)."""
        return f"{{hostedjobs:{self.queue}}}" if self.hash_tag else f"hostedjobs:{self.queue}"

    @property
    def _own(self) -> str:
        return self.namespace

    def _arq(self, prefix: str, job_id: str) -> str:
        return (
            f"{self._own}:{prefix.removeprefix('arq:')}{job_id}"
            if self.hash_tag
            else prefix + job_id
        )

    # -- arq's keys ------------------------------------------------------------------------------

    @property
    def waiting(self) -> str:
        """The queue itself: a zset of waiting job ids scored by due time (ms); arq's queue
        key, named after the queue."""
        return f"{self._own}:queue" if self.hash_tag else self.queue

    def job(self, job_id: str) -> str:
        """The stored job (arq's record: function, args, kwargs, enqueue time)."""
        return self._arq(job_key_prefix, job_id)

    def lock(self, job_id: str) -> str:
        """Exists while a stock arq worker runs the job (arq's in-progress key); hostedjobs
        workers move the jobs they run to `claimed` instead."""
        return self._arq(in_progress_key_prefix, job_id)

    def result(self, job_id: str) -> str:
        """A finished job's result record (arq's layout, plus hostedjobs' outcome fields)."""
        return self._arq(result_key_prefix, job_id)

    @property
    def abort(self) -> str:
        """arq's zset of job ids to abort (``Job.abort``, ``Scheduler.cancel``)."""
        return f"{self._own}:abort" if self.hash_tag else abort_jobs_ss

    # -- hostedjobs' keys ----------------------------------------------------------------------

    @property
    def wake(self) -> str:
        """The list idle workers block on; enqueuers push a token so pickup needs no polling."""
        return f"{self._own}:wake" if self.hash_tag else f"{self.queue}:wake"

    def worker_wake(self, worker_id: str) -> str:
        """One worker's own wake list (a deferred job came due, or it is stopping)."""
        return f"{self.wake}:{worker_id}"

    def meta(self, job_id: str) -> str:
        """A hash per on-demand job: progress, its message, the last failed try's error."""
        return f"{self._own}:meta:{job_id}" if self.hash_tag else f"hostedjobs:meta:{job_id}"

    @property
    def claimed(self) -> str:
        """A zset of the jobs hostedjobs workers run, scored by when each was claimed (ms)."""
        return f"{self._own}:claimed"

    @property
    def leases(self) -> str:
        """A zset of worker ids scored by when each worker's lease lapses (Redis's clock, ms)
        unless renewed: the jobs a lapsed worker claimed go back to the queue."""
        return f"{self._own}:leases"

    def claims(self, worker_id: str) -> str:
        """A set of the job ids one worker has claimed and not yet committed."""
        return f"{self._own}:claims:{worker_id}"

    @property
    def parked_functions(self) -> str:
        """A set of the function names that have parked jobs (see `parked`)."""
        return f"{self._own}:parked"

    def parked(self, function: str) -> str:
        """A zset of jobs set aside for a worker that can run ``function`` (the workers that
        claimed them could not), scored by when each was due (ms)."""
        return f"{self._own}:parked:{function}"

    def concurrency_slots(self, job_type: str, group: str) -> str:
        """A hash of the concurrency slots in use for ``job_type`` (its ``group``, a key's
        value, or ``""``): job id -> the worker id running it."""
        return f"{self._own}:concurrency:{job_type}:{group}"

    def concurrency_waiting(self, job_type: str, group: str) -> str:
        """A zset of the jobs of ``job_type`` (and ``group``) waiting for a concurrency slot,
        scored by when each was due (ms)."""
        return f"{self._own}:concurrency-waiting:{job_type}:{group}"

    @property
    def concurrency_groups(self) -> str:
        """A hash of the concurrency groups with waiting jobs: ``"<job type>\\n<group>"`` ->
        the group's limit (see `concurrency_waiting`)."""
        return f"{self._own}:concurrency-groups"

    @property
    def tries(self) -> str:
        """A hash: job id -> ``"<tries started> <last start, ms>"``, while the job lives."""
        return f"{self._own}:tries"

    def finished(self, status: JobStatus) -> str:
        """A zset of finished jobs in ``status``, scored by finish time (ms), trimmed."""
        return f"{self._own}:{status}"

    def finished_by_type(self, status: JobStatus, job_type: str) -> str:
        """A zset of the finished jobs of one job type (its name, no version) in ``status``,
        scored by finish time (ms), trimmed like `finished`; it expires once unused."""
        return f"{self._own}:{status}:type:{job_type}"

    def finished_by_worker(self, status: JobStatus, worker_id: str) -> str:
        """A zset of the jobs one worker finished in ``status``, scored by finish time (ms),
        trimmed like `finished`; it expires `WORKER_INDEX_TTL_MS` after the worker's last."""
        return f"{self._own}:{status}:worker:{worker_id}"

    def deleted(self, job_id: str) -> str:
        """A deleted job's tombstone: its record as cancelled (message ``deleted``), kept for
        the result's lifetime outside arq's keys, so the id stays free for a new job."""
        return f"{self._own}:deleted:{job_id}"

    @property
    def events(self) -> str:
        """The pub/sub channel of the queue's job events (``<event> <id> [<id> ...]``)."""
        return f"{self._own}:events"

    @property
    def workers(self) -> str:
        """A zset of worker ids scored by their last heartbeat (ms)."""
        return f"{self._own}:workers"

    def worker(self, worker_id: str) -> str:
        """One worker's heartbeat (JSON), expiring when it stops beating."""
        return f"{self._own}:worker:{worker_id}"

    def history(self, minute: int) -> str:
        """A hash of one minute's run counts and run-time buckets (see `hostedjobs.history`);
        ``minute`` is ms since the epoch // 60,000. Expires after 25 h."""
        return f"{self._own}:history:{minute}"

    def cron(self, name: str) -> CronKeys:
        """The keys of the distributed cron job ``name``."""
        return CronKeys(f"{self._own}:cron:{name}")

    def cron_run_id(self, name: str, tick_ms: int) -> str:
        """The job id of the run for one tick: the same in every process."""
        return f"{self._own}:cron:{name}:{tick_ms}"

    @property
    def schedules(self) -> str:
        """A hash of the runtime schedules' definitions (JSON) by name
        (`hostedjobs.schedules`)."""
        return f"{self._own}:schedules"

    @property
    def schedules_due(self) -> str:
        """A zset of the unpaused runtime schedules scored by their next tick (ms)."""
        return f"{self._own}:schedules:due"

    @property
    def schedule_names(self) -> str:
        """A zset of every runtime schedule's name, all scored 0 (read in name order)."""
        return f"{self._own}:schedules:names"

    def schedule_run_id(self, name: str, tick_ms: int) -> str:
        """The job id of a runtime schedule's run for one tick: the same in every process."""
        return f"{self._own}:schedule:{name}:{tick_ms}"

    def named_lock(self, name: str) -> LockKeys:
        """The keys of the named lock ``name`` (`hostedjobs.locks`); under the queue's
        namespace, so with ``hash_tag`` they share the queue's slot."""
        return LockKeys(self._own, name)

    def hosted(self, name: str) -> HostedKeys:
        """The shared keys of the continuous or per-process cron job ``name``."""
        return HostedKeys(f"{self._own}:hosted:{name}")

    @property
    def hosted_processes(self) -> str:
        """A zset of the processes that publish hosted-job runs, scored by when each one's
        snapshot lapses (ms) unless it publishes again."""
        return f"{self._own}:hosted-processes"

    def hosted_process(self, process: str) -> str:
        """One process's snapshot of its hosted jobs (JSON: running runs, next run per job),
        expiring unless refreshed, so a killed process's running runs lapse."""
        return f"{self._own}:hosted-process:{process}"

    def paused(self, what: str) -> str:
        """A set of the paused names of one kind: ``paused("hosted")`` holds the names of
        paused hosted jobs (other kinds, such as job types, may follow)."""
        return f"{self._own}:paused:{what}"

    @property
    def paused_jobs(self) -> str:
        """A hash of the pauses of on-demand job types: each field a pause (JSON:
        ``{"type": ..., "where": {...}}``, keys sorted), its value when it began (ms)."""
        return f"{self._own}:paused-jobs"

    def rate(self, kind: str, job_type: str, key: str | None) -> str:
        """The state of one flow-control limit of a job type (`hostedjobs.rates`): ``kind``
        ``"rate"`` (a zset of recent starts, scored by ms), ``"debounce"`` (the key's latest
        job id) or ``"cooldown"`` (exists during the cooldown); per ``key``, or for the whole
        type with None. Type and key are JSON-quoted, so no pair reads as another."""
        what = json.dumps(job_type) if key is None else json.dumps([job_type, key])
        return f"{self._own}:{kind}:{what}"

    @property
    def control(self) -> str:
        """The pub/sub channel of operator notices to every process (``pause hosted <name>``,
        ``resume hosted <name>``, ``pause jobs``, ``resume jobs``); each process also re-reads
        the pauses, so a missed notice only delays it."""
        return f"{self._own}:control"
