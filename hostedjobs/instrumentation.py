"""The instrumentation seam: the events hostedjobs reports about enqueues and runs.

A host holds at most one `Instrumentation` (several given to ``JobHost(instrumentation=...)``
are combined into one). With none, the scheduler and the runners skip every hook after a
single ``is None`` check, so metrics and tracing cost nothing unless they are enabled.

Two are shipped, each behind its extra: `hostedjobs.metrics.PrometheusMetrics` and
`hostedjobs.tracing.OpenTelemetryTracing`. Subclass `Instrumentation` to report elsewhere;
every hook has a no-op default, so a subclass overrides only what it needs.

The events:

- `Instrumentation.enqueue` wraps storing on-demand jobs (and manual distributed cron runs);
  what it yields is a W3C ``traceparent`` stored with the jobs, or None;
- `Instrumentation.run_started` is called as a run starts (with the ``traceparent`` stored by
  its enqueue, if any) and returns a `RunObserver`, whose `RunObserver.end` is called once
  with the run's `RunOutcome`;
- `Instrumentation.attach` hands over the host's storage while the host is connected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from .context import JobContext
from .exceptions import ConfigurationError
from .outcomes import JobKind, Outcome

if TYPE_CHECKING:
    from .storage import Store

__all__ = ["Instrumentation", "RunKind", "RunObserver", "RunOutcome", "combine"]


RunKind = JobKind
"""What kind of job a run belongs to (the one vocabulary: `hostedjobs.outcomes.JobKind`)."""

RunOutcome = Outcome
"""How a run ended (the one vocabulary: `hostedjobs.outcomes.Outcome`); instrumentation sees
succeeded, failed, retried and cancelled (a skipped tick is not a run)."""


class RunObserver:
    """Follows one run; `Instrumentation.run_started` returns one, and its `end` is called once."""

    __slots__ = ()

    def end(self, outcome: RunOutcome, error: BaseException | None = None) -> None:
        """The run ended with ``outcome``; ``error`` is what failed it (or its try), if known."""


_UNOBSERVED = RunObserver()


class Instrumentation:
    """Receives hostedjobs' events; the base class ignores them all.

    Pass instances to ``JobHost(instrumentation=[...])``. Hooks are called on the event loop,
    in the middle of the runs they describe: keep them quick and never let them raise.
    """

    def attach(self, queue_name: str, store: Store | None) -> None:
        """The host of ``queue_name`` connected to Redis (``store``), or disconnected (None)."""

    def enqueue(
        self, job_type: str | None, job_id: str | None, count: int = 1
    ) -> contextlib.AbstractContextManager[str | None]:
        """Wraps storing ``count`` jobs of ``job_type`` (None: several types, `enqueue_many`).

        ``job_id`` is the job's id when a single job is stored. Yields the W3C
        ``traceparent`` to store with the jobs (given back to `run_started`), or None. An
        exception leaving the block failed the enqueue.
        """
        return contextlib.nullcontext()

    def run_started(
        self, kind: RunKind, ctx: JobContext, traceparent: str | None, *, manual: bool = False
    ) -> RunObserver:
        """A run starts: ``ctx`` says which, ``traceparent`` came from its enqueue.

        ``manual`` is True for runs started by ``host.trigger`` rather than by a schedule
        (their ``ctx.scheduled_at`` is the trigger time, not a tick).
        """
        return _UNOBSERVED


def combine(instrumentation: Iterable[Instrumentation]) -> Instrumentation | None:
    """One `Instrumentation` for several: None for none, the same object for one."""
    parts = tuple(instrumentation)
    for part in parts:
        if not isinstance(part, Instrumentation):
            raise ConfigurationError(
                f"instrumentation must be Instrumentation objects (e.g. "
                f"hostedjobs.metrics.PrometheusMetrics()), got {part!r}"
            )
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return _Combined(parts)


class _CombinedRun(RunObserver):
    __slots__ = ("_observers",)

    def __init__(self, observers: tuple[RunObserver, ...]) -> None:
        self._observers = observers

    def end(self, outcome: RunOutcome, error: BaseException | None = None) -> None:
        for observer in reversed(self._observers):
            observer.end(outcome, error)


class _Combined(Instrumentation):
    """Several instrumentations, called in order (and ended in reverse order)."""

    def __init__(self, parts: tuple[Instrumentation, ...]) -> None:
        self.parts = parts

    def attach(self, queue_name: str, store: Store | None) -> None:
        for part in self.parts:
            part.attach(queue_name, store)

    @contextlib.contextmanager
    def _enqueue(
        self, job_type: str | None, job_id: str | None, count: int
    ) -> Iterator[str | None]:
        with contextlib.ExitStack() as stack:
            traces = [stack.enter_context(p.enqueue(job_type, job_id, count)) for p in self.parts]
            yield next((t for t in traces if t is not None), None)

    def enqueue(
        self, job_type: str | None, job_id: str | None, count: int = 1
    ) -> contextlib.AbstractContextManager[str | None]:
        return self._enqueue(job_type, job_id, count)

    def run_started(
        self, kind: RunKind, ctx: JobContext, traceparent: str | None, *, manual: bool = False
    ) -> RunObserver:
        return _CombinedRun(
            tuple(p.run_started(kind, ctx, traceparent, manual=manual) for p in self.parts)
        )
