"""The chaos suite's ledger: what really ran, recorded outside the Redis under test.

Every process appends JSON lines to its own file in one directory. A worker's handler writes
``start`` and ``end`` for each run (job id, try, pid, time, and the tick of a distributed cron
run); the driver writes what its producers saw ``accepted`` or ``refused`` and every ``fault``
it injected. One ``os.write`` per line, on a file opened ``O_APPEND``: a SIGKILL loses nothing
already written, and Redis being down, frozen or full changes nothing here.

`analyse` reads it back and answers the suite's questions: did every accepted job run to its
end (lost), which ran more than once and why (a duplicate is explained by a fault that cut its
earlier run short, or it is not), how many seconds a crash or outage cost (recovery), and did
any distributed tick run twice.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import os
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Fault", "Ledger", "LedgerWriter", "Report", "Run", "analyse", "digest", "table"]

KILLED = "sigkill"
TERMINATED = "sigterm"
OUTAGE_STARTS = {"redis-kill": "redis-start", "redis-freeze": "redis-thaw"}
"""Fault kinds that open an outage, and the kind that ends it."""
STOPPED = "stop"
"""The scenario's end: every remaining process is stopped gracefully."""


def digest(value: Any) -> str:
    """A short fingerprint of a JSON-like value, equal for equal JSON (key order aside)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LedgerWriter:
    """Appends this process's records to ``<directory>/<role>-<pid>.jsonl``."""

    def __init__(self, directory: str | os.PathLike[str], role: str) -> None:
        path = Path(directory) / f"{role}-{os.getpid()}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, event: str, **fields: Any) -> None:
        """One record: ``event``, this pid, the wall time (s), and ``fields``."""
        record = {"e": event, "pid": os.getpid(), "t": time.time(), **fields}
        os.write(self._fd, (json.dumps(record) + "\n").encode())

    def close(self) -> None:
        """Close the file (records already written stay)."""
        os.close(self._fd)


@dataclass
class Run:
    """One run of one job (or tick): from its handler's start to its end, if it ended."""

    job: str
    attempt: int
    pid: int
    start: float
    end: float | None = None
    tick: float | None = None
    digest: str | None = None


@dataclass(frozen=True)
class Fault:
    """Something the driver did to the system: a signal to a process, an outage, the stop."""

    kind: str
    t: float
    pid: int | None = None


class Ledger:
    """Every process's records in one directory, read incrementally (`refresh`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.runs: dict[str, list[Run]] = defaultdict(list)
        """Runs by job id (a distributed cron run's job id names its tick), by start time."""
        self.accepted: dict[str, dict[str, Any]] = {}
        self.refused: dict[str, dict[str, Any]] = {}
        self.faults: list[Fault] = []
        self.up: list[dict[str, Any]] = []
        """A record per worker process that finished its start-up and takes jobs."""
        self._offsets: dict[Path, int] = {}
        self._open: dict[tuple[str, int, int], Run] = {}

    def refresh(self) -> Ledger:
        """Read the lines added since the last refresh; returns self."""
        for path in sorted(self.directory.glob("*.jsonl")):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as file:
                file.seek(offset)
                data = file.read()
            complete = data[: data.rfind(b"\n") + 1]
            self._offsets[path] = offset + len(complete)
            for line in complete.splitlines():
                self._add(json.loads(line))
        return self

    def _add(self, record: dict[str, Any]) -> None:
        event = record["e"]
        if event == "start":
            run = Run(record["job"], record["try"], record["pid"], record["t"])
            run.tick = record.get("tick")
            # Files are read one after another: keep each job's runs in start order.
            bisect.insort(self.runs[run.job], run, key=lambda r: r.start)
            self._open[(run.job, run.attempt, run.pid)] = run
        elif event == "end":
            ended = self._open.pop((record["job"], record["try"], record["pid"]), None)
            if ended is not None:
                ended.end = record["t"]
                ended.digest = record.get("digest")
        elif event == "accepted":
            self.accepted[record["job"]] = record
        elif event == "refused":
            self.refused[record["job"]] = record
        elif event == "fault":
            self.faults.append(Fault(record["kind"], record["t"], record.get("target")))
        elif event == "up":
            self.up.append(record)

    def open_runs(self) -> dict[int, list[Run]]:
        """Runs that started and have not ended, by pid."""
        by_pid: dict[int, list[Run]] = defaultdict(list)
        for run in self._open.values():
            by_pid[run.pid].append(run)
        return by_pid

    def completed(self, job: str) -> bool:
        """True once a run of ``job`` has ended."""
        return any(run.end is not None for run in self.runs.get(job, ()))

    def outages(self) -> list[tuple[float, float]]:
        """``(start, end)`` of each Redis outage (kill to restart, freeze to thaw)."""
        windows, opened = [], None
        for fault in self.faults:
            if fault.kind in OUTAGE_STARTS:
                opened = fault
            elif opened is not None and fault.kind == OUTAGE_STARTS[opened.kind]:
                windows.append((opened.t, fault.t))
                opened = None
        return windows


@dataclass
class Report:
    """One scenario's figures, and what broke its guarantees."""

    scenario: str
    accepted: int = 0
    ran: int = 0
    lost: list[str] = field(default_factory=list)
    explained: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)
    recovery_s: list[float] = field(default_factory=list)
    ticks: int | None = None
    double_ticks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Broken guarantees besides the counters (hung calls, a give-back that counted a try,
    jobs Redis still holds after they ran, a worker that died by itself...)."""
    notes: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        """Every broken guarantee: lost jobs, unexplained duplicates, double ticks, problems."""
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} lost: {_some(self.lost)}")
        if self.unexplained:
            found.append(
                f"{len(self.unexplained)} unexplained duplicates: {_some(self.unexplained)}"
            )
        if self.double_ticks:
            found.append(f"{len(self.double_ticks)} double ticks: {_some(self.double_ticks)}")
        return found + self.problems

    def describe(self) -> str:
        """The report as text: figures, failures, notes."""
        lines = [table([self])]
        lines += [f"FAILED: {failure}" for failure in self.failures()]
        lines += [f"explained: {_some(self.explained)}"] if self.explained else []
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _some(items: list[str], count: int = 3) -> str:
    more = f" (and {len(items) - count} more)" if len(items) > count else ""
    return "; ".join(items[:count]) + more


def _fault_ending(run: Run, faults: list[Fault]) -> Fault | None:
    """The signal that cut ``run`` short: the first one sent to its process after it began."""
    for fault in faults:
        if fault.pid == run.pid and fault.kind in (KILLED, TERMINATED) and fault.t >= run.start:
            return fault
    return None


def _within(t: float, windows: list[tuple[float, float]]) -> bool:
    return any(start <= t <= end for start, end in windows)


def analyse(ledger: Ledger, scenario: str, *, ticks: bool = False) -> Report:
    """Count and explain what ran: per accepted job, or (``ticks``) per distributed tick.

    A run after an earlier run of the same job is a duplicate. It is explained when the
    earlier run never ended because its process was SIGKILLed (a crash: the job must run
    again) or SIGTERMed (a graceful shutdown gave it back; the next run must have the same
    try number, or that is a problem). Anything else is unexplained: a job that ran again
    after it had finished, or while its earlier run was still going. A job is lost if no run
    of it ended. With ``ticks``, a tick whose run the scenario's final stop cut short is
    neither lost nor counted, and a tick that ran to its end twice, or ran again unexplained,
    is a double tick.
    """
    ledger.refresh()
    report = Report(scenario)
    faults = ledger.faults
    stop = next((f.t for f in faults if f.kind == STOPPED), float("inf"))
    outages = ledger.outages()
    if ticks:
        by_tick: dict[float, list[Run]] = defaultdict(list)
        for runs in ledger.runs.values():
            for run in runs:
                if run.tick is not None:
                    by_tick[run.tick].append(run)
        groups = {
            f"tick {tick:.0f}": sorted(runs, key=lambda r: r.start)
            for tick, runs in sorted(by_tick.items())
        }
    else:
        groups = {job: ledger.runs.get(job, []) for job in ledger.accepted}
    cut_by_stop = 0
    for key, runs in groups.items():
        unexplained_before = len(report.unexplained)
        for earlier, later in itertools.pairwise(runs):
            _explain(report, key, earlier, later, faults, outages)
        ended = sum(1 for run in runs if run.end is not None)
        if ticks and (ended > 1 or len(report.unexplained) > unexplained_before):
            report.double_ticks.append(f"{key} ran {len(runs)} times, {ended} to the end")
        if ended:
            report.ran += 1
            continue
        if not runs:
            report.lost.append(f"{key} (never ran)")
            continue
        last = runs[-1]
        cut = _fault_ending(last, faults)
        if cut is not None:
            report.lost.append(
                f"{key} ({cut.kind} cut its run on pid {last.pid}; not re-run by the end)"
            )
        elif ticks and last.start < stop:
            cut_by_stop += 1
        else:
            report.lost.append(f"{key} (its run on pid {last.pid} had not ended at the end)")
    report.accepted = len(groups) - cut_by_stop
    if ticks:
        report.ticks = report.accepted
        if cut_by_stop:
            report.notes.append(f"{cut_by_stop} tick(s) still running at the final stop")
    for start, end in outages:
        resumed = [r.start for rs in ledger.runs.values() for r in rs if r.start >= end]
        if resumed:
            report.recovery_s.append(min(resumed) - end)
        report.notes.append(f"Redis out for {end - start:.1f}s")
    return report


def _explain(
    report: Report,
    key: str,
    earlier: Run,
    later: Run,
    faults: list[Fault],
    outages: list[tuple[float, float]],
) -> None:
    if earlier.end is None:
        cut = _fault_ending(earlier, faults)
        if cut is None:
            report.unexplained.append(
                f"{key} ran again (pid {later.pid}, try {later.attempt}) while its run on live "
                f"pid {earlier.pid} (try {earlier.attempt}) had not ended"
            )
            return
        report.recovery_s.append(later.start - cut.t)
        if cut.kind == KILLED:
            report.explained.append(f"{key}: ran on pid {earlier.pid}, SIGKILLed mid-run")
            return
        report.explained.append(f"{key}: given back by pid {earlier.pid} at SIGTERM")
        if later.attempt != earlier.attempt:
            report.problems.append(
                f"{key} was given back at SIGTERM but its try was counted "
                f"(try {earlier.attempt} then {later.attempt})"
            )
        return
    if later.start < earlier.end:
        report.unexplained.append(f"{key} ran twice at once (pids {earlier.pid} and {later.pid})")
        return
    during = " during a Redis outage" if _within(earlier.end, outages) else ""
    report.unexplained.append(
        f"{key} finished on pid {earlier.pid}{during} and ran again "
        f"{later.start - earlier.end:.1f}s later (try {later.attempt})"
    )


def _seconds(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {max(values):.1f}"


HEADER = (
    "scenario",
    "accepted",
    "ran",
    "lost",
    "duplicates explained / unexplained",
    "recovery s p50 / max",
    "ticks",
    "double ticks",
)


def table(reports: list[Report]) -> str:
    """A Markdown table of the reports, one row each."""
    rows = [HEADER, tuple("---" for _ in HEADER)]
    for r in reports:
        rows.append(
            (
                r.scenario,
                str(r.accepted),
                str(r.ran),
                str(len(r.lost)),
                f"{len(r.explained)} / {len(r.unexplained)}",
                _seconds(r.recovery_s),
                "-" if r.ticks is None else str(r.ticks),
                "-" if r.ticks is None else str(len(r.double_ticks)),
            )
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)
