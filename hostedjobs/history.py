"""Run history: per-minute counts of finished runs and run-time histograms, per job type.

Workers add each batch of outcomes to the hash of the current minute in the same atomic step
that stores the outcomes (see `Store.commit`), and `Scheduler.cancel` adds the queued jobs it
cancels; `Scheduler.history` and `Scheduler.job_types` read them back. A minute's hash holds:

- ``s``, ``f``, ``r``, ``c``: the runs that succeeded, failed (for good), were retried (a failed
  try that will be tried again) and were cancelled, of every job type;
- ``s <type>`` (and ``f``, ``r``, ``c``): the same per job type (`job_type_of` its function);
- ``d<b> <type>``: how many tries of that type (succeeded, failed or retried ones, not
  cancelled ones or jobs that never started) ran for a time in bucket ``b``.

Run times go in log-spaced buckets, four per doubling, as HdrHistogram and Prometheus'
native histograms do: bucket ``b`` holds times in ``(2**((b-1)/4), 2**(b/4)]`` ms, bucket 0
everything up to 1 ms. A percentile is read as its bucket's geometric middle, within 9.05 %
(``2**(1/8) - 1``) of the true value; at most 4 buckets per doubling means about 100 for
anything from 1 ms to a day.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from .exceptions import ConfigurationError

__all__ = [
    "HISTORY_TTL_S",
    "MINUTE_MS",
    "HistoryPoint",
    "HistoryWindow",
    "JobTypeStats",
    "duration_bucket",
    "history_fields",
    "history_points",
    "job_type_of",
    "job_type_stats",
    "percentile_s",
]

MINUTE_MS = 60_000
HISTORY_TTL_S = 90_000
"""How long a minute's counts live: 25 h, so a full 24 h window is always there."""

_BUCKETS_PER_DOUBLING = 4

SUCCEEDED, FAILED, RETRIED, CANCELLED = "s", "f", "r", "c"
"""The field names of the four kinds of run (and the prefixes of their per-type fields)."""
KINDS = (SUCCEEDED, FAILED, RETRIED, CANCELLED)


def job_type_of(function: str) -> str:
    """The job type a run counts under: its function name without the ``@<version>`` of a
    versioned job type (as `JobInfo.job_type`), so every version of a type adds up."""
    name, _, version = function.rpartition("@")
    return name if name and version.isdigit() else function


def duration_bucket(duration_s: float) -> int:
    """The histogram bucket of a run time in seconds (see the module's docstring)."""
    ms = duration_s * 1000
    if ms <= 1:
        return 0
    return math.ceil(_BUCKETS_PER_DOUBLING * math.log2(ms) - 1e-9)


def bucket_seconds(bucket: int) -> float:
    """The run time a bucket stands for, in seconds: its geometric middle."""
    if bucket <= 0:
        return 0.001
    return float(2 ** ((bucket - 0.5) / _BUCKETS_PER_DOUBLING) / 1000)


def history_fields(
    outcomes: Iterable[tuple[str, str, float | None]],
) -> dict[str, int]:
    """The increments one batch adds to its minute's hash: ``outcomes`` are
    ``(kind, job type, run time in s or None)``, ``kind`` one of ``s``, ``f``, ``r``, ``c``; a
    job type of ``""`` (unknown) counts in the totals only."""
    fields: dict[str, int] = {}
    for kind, job_type, duration_s in outcomes:
        fields[kind] = fields.get(kind, 0) + 1
        if not job_type:
            continue
        field = f"{kind} {job_type}"
        fields[field] = fields.get(field, 0) + 1
        if duration_s is not None and kind != CANCELLED:
            field = f"d{duration_bucket(duration_s)} {job_type}"
            fields[field] = fields.get(field, 0) + 1
    return fields


def percentile_s(buckets: Mapping[int, int], fraction: float) -> float | None:
    """The run time (s) below which ``fraction`` (0..1) of the counted runs fall, from
    bucket counts; None if there are none."""
    total = sum(buckets.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen >= rank:
            return bucket_seconds(bucket)
    return bucket_seconds(max(buckets))  # pragma: no cover - the loop always reaches rank


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """The runs that ended in one minute (or a longer bin), of one job type or of all."""

    start: datetime
    """The bin's start, UTC."""
    succeeded: int = 0
    failed: int = 0
    """Failed for good (no tries left, or not retryable)."""
    retried: int = 0
    """Failed tries that were tried again."""
    cancelled: int = 0

    @property
    def total(self) -> int:
        """Every run counted in the bin."""
        return self.succeeded + self.failed + self.retried + self.cancelled


@dataclass(frozen=True, slots=True)
class JobTypeStats:
    """One job type's runs over a window: counts, and run-time percentiles in seconds."""

    name: str
    """The job's function name."""
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    p50_s: float | None = None
    """Median run time of its tries (succeeded, failed or retried), within 9.05 %; None if
    none ran."""
    p95_s: float | None = None
    """95th percentile run time, likewise."""

    @property
    def total(self) -> int:
        """Every run counted."""
        return self.succeeded + self.failed + self.retried + self.cancelled

    @property
    def failure_rate(self) -> float:
        """The share (0..1) of finished runs that failed for good; 0 with none."""
        done = self.succeeded + self.failed + self.cancelled
        return self.failed / done if done else 0.0


def job_type_stats(minutes: Iterable[Mapping[str, int]]) -> list[JobTypeStats]:
    """Every job type seen in ``minutes`` (hashes as `history_fields` builds them), busiest
    first, then by name."""
    counts: dict[str, dict[str, int]] = {}
    histograms: dict[str, dict[int, int]] = {}
    for minute in minutes:
        for field, value in minute.items():
            head, _, job_type = field.partition(" ")
            if not job_type:
                continue
            if head in KINDS:
                per_type = counts.setdefault(job_type, {})
                per_type[head] = per_type.get(head, 0) + value
            elif head.startswith("d") and head[1:].isdigit():
                histogram = histograms.setdefault(job_type, {})
                bucket = int(head[1:])
                histogram[bucket] = histogram.get(bucket, 0) + value
    stats = [
        JobTypeStats(
            name,
            succeeded=c.get(SUCCEEDED, 0),
            failed=c.get(FAILED, 0),
            retried=c.get(RETRIED, 0),
            cancelled=c.get(CANCELLED, 0),
            p50_s=percentile_s(histograms.get(name, {}), 0.5),
            p95_s=percentile_s(histograms.get(name, {}), 0.95),
        )
        for name, c in counts.items()
    ]
    return sorted(stats, key=lambda s: (-s.total, s.name))


KEPT_S = 86_400
"""The longest window the history answers for: 24 h."""


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """Which minutes a history read covers: ``bins`` bins of ``bin_minutes`` each, aligned
    to UTC multiples of the bin, the last one holding the current minute."""

    first_minute: int
    """The first bin's start (ms since the epoch // 60,000)."""
    last_minute: int
    """The current minute, the last one read."""
    bin_minutes: int
    bins: int

    @classmethod
    def of(cls, now_ms: int, since_s: float, bin_s: float) -> HistoryWindow:
        """The window of the last ``since_s`` seconds (60 to 86,400) by bins of ``bin_s``
        (a whole number of minutes, at most ``since_s``). Raises `ConfigurationError`."""
        if not 60 <= since_s <= KEPT_S:
            raise ConfigurationError(
                f"history is kept for 24 h by minute: since must be from 1 minute to 24 h, "
                f"got {since_s} s"
            )
        if bin_s < 60 or bin_s % 60 or bin_s > since_s:
            raise ConfigurationError(
                f"bin must be a whole number of minutes, at most since ({since_s} s), got {bin_s} s"
            )
        bin_minutes = int(bin_s // 60)
        now_minute = now_ms // MINUTE_MS
        bins = math.ceil(since_s / bin_s)
        first = (now_minute // bin_minutes - bins + 1) * bin_minutes
        return cls(first, now_minute, bin_minutes, bins)


def history_points(
    window: HistoryWindow, minutes: Iterable[Mapping[str, int]], job_type: str | None = None
) -> list[HistoryPoint]:
    """Bin ``minutes`` (the hashes of ``window.first_minute`` onwards, in order) into one
    `HistoryPoint` per bin of ``window``, oldest first: the counts of every job type, or of
    ``job_type``."""
    sums = [[0, 0, 0, 0] for _ in range(window.bins)]
    names = history_field_names(job_type)
    for offset, minute in enumerate(minutes):
        row = sums[min(offset // window.bin_minutes, window.bins - 1)]
        for i, name in enumerate(names):
            row[i] += minute.get(name, 0)
    return [
        HistoryPoint(
            datetime.fromtimestamp(
                (window.first_minute + i * window.bin_minutes) * MINUTE_MS / 1000, UTC
            ),
            *row,
        )
        for i, row in enumerate(sums)
    ]


def history_field_names(job_type: str | None) -> list[str]:
    """The fields a chart of ``job_type`` (None: every type) reads from each minute."""
    return list(KINDS) if job_type is None else [f"{k} {job_type}" for k in KINDS]
