"""The ledger's analysis on hand-written records: what counts as lost, explained, doubled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.chaos.ledger import Ledger, analyse, table


def _ledger(tmp_path: Path, *records: dict[str, Any]) -> Ledger:
    lines = "".join(json.dumps(record) + "\n" for record in records)
    (tmp_path / "all.jsonl").write_text(lines + '{"e": "start", "job": "half-written')
    return Ledger(tmp_path)


def _run(
    job: str, attempt: int, pid: int, start: float, end: float | None, **extra: Any
) -> list[dict[str, Any]]:
    records = [{"e": "start", "job": job, "try": attempt, "pid": pid, "t": start, **extra}]
    if end is not None:
        records.append({"e": "end", "job": job, "try": attempt, "pid": pid, "t": end, **extra})
    return records


def test_a_rerun_after_a_kill_is_explained_and_timed(tmp_path: Path) -> None:
    """A run cut by a SIGKILL and run again elsewhere: explained, recovery from the kill."""
    ledger = _ledger(
        tmp_path,
        {"e": "accepted", "job": "a", "t": 0.0},
        *_run("a", 2, 11, 5.5, 6.0),  # files are read in any order
        {"e": "fault", "kind": "sigkill", "target": 10, "t": 2.0},
        *_run("a", 1, 10, 1.0, None),
    )
    report = analyse(ledger, "kill")
    assert (report.accepted, report.ran, report.lost, report.unexplained) == (1, 1, [], [])
    assert len(report.explained) == 1
    assert report.recovery_s == [3.5]


def test_a_job_that_ran_again_after_finishing_is_unexplained(tmp_path: Path) -> None:
    """A finished job running again (its outcome was lost in an outage) is a duplicate no
    fault explains; a job that never ran is lost."""
    ledger = _ledger(
        tmp_path,
        {"e": "accepted", "job": "a", "t": 0.0},
        {"e": "accepted", "job": "b", "t": 0.0},
        {"e": "fault", "kind": "redis-kill", "t": 1.0},
        *_run("a", 1, 10, 0.5, 2.0),
        {"e": "fault", "kind": "redis-start", "t": 3.0},
        *_run("a", 2, 10, 62.0, 62.5),
    )
    report = analyse(ledger, "outage")
    assert report.ran == 1
    assert report.lost == ["b (never ran)"]
    (duplicate,) = report.unexplained
    assert "during a Redis outage" in duplicate
    assert report.recovery_s == [59.0]  # Redis back at 3.0, the next run at 62.0


def test_a_given_back_try_must_not_count(tmp_path: Path) -> None:
    """A run given back at SIGTERM is explained; its next run must keep its try number."""
    ledger = _ledger(
        tmp_path,
        {"e": "accepted", "job": "a", "t": 0.0},
        *_run("a", 1, 10, 1.0, None),
        {"e": "fault", "kind": "sigterm", "target": 10, "t": 2.0},
        *_run("a", 2, 11, 3.0, 4.0),
    )
    report = analyse(ledger, "sigterm")
    assert len(report.explained) == 1
    assert report.unexplained == []
    (problem,) = report.problems
    assert "try was counted" in problem


def test_ticks_run_twice_are_double_and_runs_cut_by_the_stop_do_not_count(
    tmp_path: Path,
) -> None:
    """Per tick: two ends are a double tick; a run the final stop cut is neither lost nor
    counted; a crashed tick never run again is lost."""
    ledger = _ledger(
        tmp_path,
        *_run("t1", 1, 10, 1.0, 1.1, tick=1.0),
        *_run("t1", 1, 11, 1.2, 1.3, tick=1.0),
        *_run("t2", 1, 10, 2.0, None, tick=2.0),
        {"e": "fault", "kind": "sigkill", "target": 10, "t": 2.5},
        *_run("t3", 1, 11, 3.0, None, tick=3.0),
        {"e": "fault", "kind": "stop", "t": 3.5},
    )
    report = analyse(ledger, "cron", ticks=True)
    assert report.ticks == report.accepted == 2
    assert len(report.double_ticks) == 1
    assert len(report.lost) == 1 and "sigkill" in report.lost[0]
    assert "| cron | 2 | 1 | 1 | 0 / 1 |" in table([report])
