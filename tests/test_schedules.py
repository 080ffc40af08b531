"""Runtime schedules (`host.schedules`) on a real Redis, fired by several real processes."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from hostedjobs import JobHost, job_type
from hostedjobs.cli import main
from hostedjobs.exceptions import (
    ConfigurationError,
    HostNotRunningError,
    RedisUnavailableError,
    UnknownJobError,
)
from tests.conftest import RestartableRedis
from tests.schedules_app import Ping, cli_host, make_host
from tests.script_keys import ScriptKeyWatch, summarize
from tests.servers import ROOT, subprocess_env
from tests.waiting import DEADLINE_S, eventually

EVERY_SECOND = "* * * * * *"
YEARLY = "0 0 1 1 *"


@job_type("schedule-unhandled")
@dataclass
class Unhandled:
    n: int


@pytest.fixture
async def host(redis_url: str, queue_name: str) -> AsyncIterator[JobHost]:
    """A host connected to the session's Redis: it changes schedules, fires none."""
    host = make_host(queue_name, None, run_worker=False)
    async with host.connected():
        yield host


class Fleet:
    """Host processes (``tests.schedules_app``), each running a worker, appending the job
    ids of the runs it ran to one file."""

    def __init__(self, redis_url: str, queue: str, runs: Path) -> None:
        self.redis_url, self.queue, self.runs = redis_url, queue, runs
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, count: int) -> None:
        started = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.schedules_app",
                self.queue,
                str(self.runs),
                cwd=ROOT,
                env=subprocess_env(HOSTEDJOBS_REDIS_URL=self.redis_url),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for _ in range(count)
        ]
        for process in started:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), DEADLINE_S)
            assert line.strip() == b"ready", f"exit {process.returncode}"
        self.processes += started

    async def stop(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(b"\n")
            await process.stdin.drain()
        for process in self.processes:
            assert await asyncio.wait_for(process.wait(), DEADLINE_S) == 0
        self.processes = []

    def ticks(self, name: str) -> Counter[int]:
        """How many times each tick (ms) of the schedule ``name`` ran."""
        lines = self.runs.read_text().split() if self.runs.exists() else []
        marker = f":schedule:{name}:"
        return Counter(int(line.rsplit(":", 1)[1]) for line in lines if marker in line)


@pytest.fixture
async def fleet(redis_url: str, queue_name: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    fleet = Fleet(redis_url, queue_name, tmp_path / "runs.txt")
    try:
        yield fleet
    finally:
        for process in fleet.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_changes_need_a_running_host(queue_name: str) -> None:
    host = make_host(queue_name, None)
    with pytest.raises(HostNotRunningError):
        await host.schedules.add("nightly", YEARLY, Ping("a"))


async def test_bad_schedules_are_refused_with_clear_errors(host: JobHost) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "", "cron": YEARLY, "job": Ping("a")}, "non-empty"),
        ({"name": "  ", "cron": YEARLY, "job": Ping("a")}, "non-empty"),
        ({"name": "a\nb", "cron": YEARLY, "job": Ping("a")}, "control characters"),
        ({"name": "x", "cron": "61 * * * *", "job": Ping("a")}, "61"),
        ({"name": "x", "cron": YEARLY, "job": Ping("a"), "timezone": "Mars/Base"}, "Mars/Base"),
        ({"name": "x", "cron": YEARLY, "job": {"customer": "a"}}, "not a job type"),
        ({"name": "x", "cron": YEARLY, "job": Unhandled(1)}, "no handler"),
        ({"name": "x", "cron": YEARLY, "job": Ping(object())}, "customer"),  # type: ignore[arg-type]
        ({"name": "x", "cron": YEARLY, "job": Ping("a"), "misfire": "later"}, "misfire"),
        ({"name": "x", "cron": YEARLY, "job": Ping("a"), "paused": "yes"}, "paused"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(ConfigurationError, match=expected):
            await host.schedules.add(**kwargs)
    assert await host.schedules.count() == 0
    await host.schedules.add("x", YEARLY, Ping("a"))
    with pytest.raises(ConfigurationError, match=r"already exists.*update"):
        await host.schedules.add("x", EVERY_SECOND, Ping("b"))
    with pytest.raises(UnknownJobError):
        await host.schedules.update("missing", cron=YEARLY)
    with pytest.raises(ConfigurationError, match="Mars"):
        await host.schedules.update("x", timezone="Mars/Base")
    with pytest.raises(ConfigurationError, match="offset"):
        await host.schedules.list(-1, 10)
    for offset, limit in ((0, 10**30), (10**30, 10), (0, 10_001)):
        with pytest.raises(ConfigurationError, match="a page"):
            await host.schedules.list(offset, limit)
    found = await host.schedules.get("x")
    assert found is not None and found.payload == {"customer": "a"} and found.cron == YEARLY


async def test_add_get_list_update_pause_resume_remove(host: JobHost) -> None:
    for i in range(5):
        await host.schedules.add(f"customer-{i}", YEARLY, Ping(f"c{i}"), timezone="Europe/Prague")
    assert await host.schedules.count() == 5
    page = await host.schedules.list(1, 2)
    assert [s.name for s in page] == ["customer-1", "customer-2"]
    assert all(s.next_tick is not None and not s.paused for s in page)
    updated = await host.schedules.update("customer-1", cron="0 3 * * *", job=Ping("new"))
    assert (updated.cron, updated.payload, updated.timezone) == (
        "0 3 * * *",
        {"customer": "new"},
        "Europe/Prague",
    )
    assert await host.schedules.pause("customer-1")
    assert not await host.schedules.pause("customer-1")
    paused = await host.schedules.get("customer-1")
    assert paused is not None and paused.paused and paused.next_tick is None
    assert await host.schedules.resume("customer-1")
    resumed = await host.schedules.get("customer-1")
    assert resumed is not None and not resumed.paused and resumed.next_tick is not None
    assert await host.schedules.remove("customer-1")
    assert not await host.schedules.remove("customer-1")
    assert await host.schedules.get("customer-1") is None
    assert await host.schedules.count() == 4


async def test_each_tick_runs_once_across_three_processes(
    host: JobHost, fleet: Fleet, redis_url: str
) -> None:
    await fleet.start(3)
    added = await host.schedules.add("every-second", EVERY_SECOND, Ping("acme"))
    assert added.next_tick is not None
    first_ms = int(added.next_tick.timestamp() * 1000)
    await eventually(lambda: len(fleet.ticks("every-second")) >= 4, what="four ticks ran")
    assert await host.schedules.remove("every-second")
    # A tick fired just before the removal may still be queued: let it run before counting.
    await eventually(lambda: _all_ran(fleet, "every-second", host), what="the queued runs finished")
    await fleet.stop()
    ticks = fleet.ticks("every-second")
    assert set(ticks.values()) == {1}, ticks  # no tick ran twice
    ran = sorted(ticks)
    # ...and none was left out, from the first tick after the add on.
    assert ran == list(range(first_ms, ran[-1] + 1, 1000))


async def _all_ran(fleet: Fleet, name: str, host: JobHost) -> bool:
    queued = await host.scheduler.store.redis.zrange(host.scheduler.store.keys.waiting, 0, -1)
    return not any(f":schedule:{name}:".encode() in item for item in queued)


async def test_a_change_in_one_process_is_obeyed_by_another_at_once(
    host: JobHost, fleet: Fleet
) -> None:
    await fleet.start(1)
    # The fleet process sleeps until the earliest tick (a year away) unless it is told.
    await host.schedules.add("yearly", YEARLY, Ping("idle"))
    await asyncio.sleep(0.5)  # let it read the earliest tick and go to sleep on it
    added = await host.schedules.add("soon", EVERY_SECOND, Ping("acme"))
    assert added.next_tick is not None
    first_ms = int(added.next_tick.timestamp() * 1000)
    await eventually(lambda: fleet.ticks("soon"), what="a run of the new schedule")
    # Without the notice it would have slept RECHECK_S (30 s) before firing any tick.
    assert min(fleet.ticks("soon")) == first_ms
    first = await host.scheduler.get(host.scheduler.store.keys.schedule_run_id("soon", first_ms))
    assert first is not None and first.enqueued_at is not None
    # Enqueued at its tick, not at the sleeper's next 30 s recheck (generous for a loaded
    # machine: it is typically a few ms).
    assert first.enqueued_at.timestamp() * 1000 - first_ms < 10_000

    assert await host.schedules.pause("soon")
    paused_ms = int(time.time() * 1000)
    await asyncio.sleep(3)  # a window in which nothing may run: the pause reached the fleet
    assert all(tick <= paused_ms + 1000 for tick in fleet.ticks("soon")), fleet.ticks("soon")
    assert await host.schedules.resume("soon")
    resumed_ms = int(time.time() * 1000)
    await eventually(lambda: max(fleet.ticks("soon")) > resumed_ms, what="a run after the resume")
    assert await host.schedules.remove("soon")
    removed_ms = int(time.time() * 1000)
    await asyncio.sleep(3)  # a window in which nothing may run: the removal reached it
    assert max(fleet.ticks("soon")) <= removed_ms + 1000
    await fleet.stop()


async def test_schedules_survive_a_restart_of_every_host(
    host: JobHost, fleet: Fleet, queue_name: str
) -> None:
    await fleet.start(2)
    await host.schedules.add("survivor", EVERY_SECOND, Ping("acme"))
    await eventually(lambda: fleet.ticks("survivor"), what="a run before the restart")
    await fleet.stop()
    stopped_ms = int(time.time() * 1000)
    await fleet.start(2)
    await eventually(
        lambda: max(fleet.ticks("survivor")) > stopped_ms, what="a run after the restart"
    )
    assert await host.schedules.remove("survivor")
    await eventually(lambda: _all_ran(fleet, "survivor", host), what="the queued runs finished")
    await fleet.stop()
    assert set(fleet.ticks("survivor").values()) == {1}


async def test_a_missed_tick_is_skipped_or_run_once(host: JobHost, queue_name: str) -> None:
    await host.schedules.add("skipper", EVERY_SECOND, Ping("a"))
    await host.schedules.add("catcher", EVERY_SECOND, Ping("b"), misfire="run_once")
    store = host.scheduler.store
    long_ago = int(time.time() * 1000) - 3_600_000
    # As if every process had been down for an hour since the schedules' last tick.
    await store.redis.zadd(store.keys.schedules_due, {"skipper": long_ago, "catcher": long_ago})
    firing = make_host(queue_name, None, run_worker=False)
    came_ms = int(time.time() * 1000)
    async with firing.run():
        await eventually(
            lambda: _queued_ticks(host, "skipper", "catcher"),
            what="both schedules went on after the missed hour",
        )
        await host.schedules.remove("skipper")
        await host.schedules.remove("catcher")
    queued = [item.decode() for item in await store.redis.zrange(store.keys.waiting, 0, -1)]
    skipped = [int(job.rsplit(":", 1)[1]) for job in queued if ":schedule:skipper:" in job]
    caught = [int(job.rsplit(":", 1)[1]) for job in queued if ":schedule:catcher:" in job]
    # Of the hour of missed ticks, "skip" ran none and "run_once" the latest (the last one
    # before the process came), once; then both went on with the ticks after that.
    assert skipped and caught
    assert all(tick >= came_ms - 1000 for tick in skipped + caught), (came_ms, skipped, caught)
    assert len([tick for tick in caught if tick < min(skipped)]) == 1, (skipped, caught)


async def _queued_ticks(host: JobHost, *names: str) -> bool:
    store = host.scheduler.store
    queued = await store.redis.zrange(store.keys.waiting, 0, -1)
    return all(
        len([job for job in queued if f":schedule:{name}:".encode() in job]) >= 2 for name in names
    )


async def test_redis_down_raises_and_writes_nothing(
    restartable_redis: RestartableRedis, queue_name: str
) -> None:
    host = JobHost(
        redis_url=restartable_redis.url, queue_name=queue_name, run_worker=False, redis_timeout=1
    )
    host.add_handler(Ping, _noop)
    async with host.connected():
        await host.schedules.add("kept", YEARLY, Ping("a"))
        restartable_redis.stop()
        with pytest.raises(RedisUnavailableError):
            await host.schedules.add("lost", YEARLY, Ping("b"))
        with pytest.raises(RedisUnavailableError):
            await host.schedules.pause("kept")
        restartable_redis.start()
        assert await host.schedules.get("lost") is None
        kept = await host.schedules.get("kept")
        assert kept is not None and not kept.paused and kept.next_tick is not None


async def _noop(job: Ping) -> None:
    return None


async def test_scripts_touch_only_their_keys(
    redis_url: str, host: JobHost, queue_name: str
) -> None:
    async with ScriptKeyWatch(redis_url, flush_scripts=True) as watch:
        await host.schedules.add("watched", EVERY_SECOND, Ping("a"))
        firing = make_host(queue_name, None, run_worker=False)
        async with firing.run():
            await eventually(lambda: firing.schedules.fired >= 1, what="a fired tick")
        await host.schedules.pause("watched")
    assert not watch.findings, summarize(watch.findings)


async def _commands(host: JobHost) -> int:
    stats = await host.scheduler.store.redis.info("stats")
    return int(stats["total_commands_processed"])


async def _idle_rate(host: JobHost, queue: str) -> float:
    """Redis commands per second while a firing host (no worker) sits idle."""
    firing = make_host(queue, None, run_worker=False)
    async with firing.run():
        await asyncio.sleep(1)  # settle: start-up reads are not idle cost
        before, began = await _commands(host), time.monotonic()
        await asyncio.sleep(5)
        after, ended = await _commands(host), time.monotonic()
    return (after - before - 1) / (ended - began)


async def test_idle_cost_does_not_grow_with_the_number_of_schedules(
    host: JobHost, queue_name: str
) -> None:
    empty = await _idle_rate(host, queue_name)
    for start in range(0, 10_000, 500):
        await asyncio.gather(
            *(
                host.schedules.add(f"customer-{i}", YEARLY, Ping(f"c{i}"))
                for i in range(start, start + 500)
            )
        )
    assert await host.schedules.count() == 10_000
    full = await _idle_rate(host, queue_name)
    # The firing host reads the earliest tick, not the schedules: O(1) per second (the rest
    # is the host's own heartbeats, the same with no schedule at all).
    assert full <= empty + 3, (empty, full)
    assert full < 50, (empty, full)


async def _reset_cli_schedules(*names: str) -> None:
    async with cli_host.connected():
        for name in names:
            await cli_host.schedules.remove(name)
        await cli_host.schedules.add(names[0], YEARLY, Ping("acme"), timezone="Europe/Prague")
        await cli_host.schedules.add(names[1], EVERY_SECOND, Ping("globex"), paused=True)


def test_schedules_command(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`hostedjobs schedules MODULE:ATTR list|pause|resume|remove`."""
    monkeypatch.setenv("HOSTEDJOBS_REDIS_URL", redis_url)
    target = "tests.schedules_app:cli_host"
    asyncio.run(_reset_cli_schedules("report:acme", "report:globex"))
    assert main(["schedules", target, "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "CRON", "ZONE", "NEXT", "TICK", "(UTC)", "PAUSED", "JOB"]
    acme = next(line for line in lines if line.startswith("report:acme"))
    assert "Europe/Prague" in acme and acme.split()[-2:] == ["no", "schedule-ping@1"]
    globex = next(line for line in lines if line.startswith("report:globex"))
    assert " - " in globex and globex.split()[-2:] == ["yes", "schedule-ping@1"]
    assert main(["schedules", target, "resume", "report:globex"]) == 0
    assert capsys.readouterr().out.strip() == "resumed report:globex"
    assert main(["schedules", target, "pause", "report:acme"]) == 0
    assert capsys.readouterr().out.strip() == "paused report:acme"
    assert main(["schedules", target, "pause", "report:acme"]) == 0
    assert capsys.readouterr().out.strip() == "report:acme: already paused"
    assert main(["schedules", target, "list", "--json", "--limit", "1"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["name"], listed["paused"], listed["next_tick"]) == ("report:acme", True, None)
    assert main(["schedules", target, "remove", "report:acme"]) == 0
    assert capsys.readouterr().out.strip() == "removed report:acme"
    assert main(["schedules", target, "remove", "report:acme"]) == 1
    assert "no schedule named 'report:acme'" in capsys.readouterr().err
    assert main(["schedules", target, "resume", "nope"]) == 1
    assert "no schedule named 'nope'" in capsys.readouterr().err
    assert main(["schedules", target, "remove", "report:globex"]) == 0


async def test_console_lists_and_changes_schedules_with_auth_and_csrf(host: JobHost) -> None:
    await host.schedules.add("report:acme", YEARLY, Ping("acme"), timezone="Europe/Prague")
    await host.schedules.add("report:a/b", YEARLY, Ping("slash"), paused=True)
    async with client_for(host, auth=None) as client:  # read-only
        page = await client.get("/schedules")
        assert page.status_code == 200
        assert "report:acme" in page.text and "Europe/Prague" in page.text
        assert 'class="pill paused"' in page.text and "csrf_token" not in page.text
        refused = await client.post("/schedules/report:acme/pause", data={"csrf_token": "x" * 64})
        assert refused.status_code == 403
        assert (await client.get("/schedules?page=0")).status_code == 400
        # A page past any offset Redis takes was a 503 ("Redis unavailable").
        assert (await client.get("/schedules?page=" + "9" * 25)).status_code == 400
        assert (await client.get("/schedules?sort=name")).status_code == 400
    async with client_for(host, auth=allow_all) as client:
        page = await client.get("/schedules")
        token = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
        assert token is not None
        data = {"csrf_token": token.group(1)}
        assert (await client.post("/schedules/report:acme/pause", data={})).status_code == 403
        paused = await client.post("/schedules/report:acme/pause", data=data)
        assert paused.status_code == 303
        assert paused.headers["location"].endswith("/schedules?notice=schedule-paused")
        found = await host.schedules.get("report:acme")
        assert found is not None and found.paused
        resumed = await client.post("/schedules/report:a/b/resume", data=data)
        assert resumed.headers["location"].endswith("notice=schedule-resumed")
        removed = await client.post("/schedules/report:acme/remove", data=data)
        assert removed.headers["location"].endswith("notice=schedule-removed")
        gone = await client.post("/schedules/report:acme/remove", data=data)
        assert gone.headers["location"].endswith("notice=no-such-schedule")
        assert await host.schedules.get("report:acme") is None
        shown = await client.get("/schedules?notice=schedule-removed")
        assert "The schedule was removed" in shown.text


def test_schedules_command_adds_and_updates(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`hostedjobs schedules MODULE:ATTR add|update`, with clear errors for bad input."""
    monkeypatch.setenv("HOSTEDJOBS_REDIS_URL", redis_url)
    target = "tests.schedules_app:cli_host"
    name = "report:cli-added"

    async def reset() -> None:
        async with cli_host.connected():
            await cli_host.schedules.remove(name)

    async def read() -> Any:
        async with cli_host.connected():
            return await cli_host.schedules.get(name)

    asyncio.run(reset())
    add = ["schedules", target, "add", name]
    assert main([*add, "0 7 * * *", "schedule-ping", "--payload", '{"customer": "acme"}']) == 0
    assert capsys.readouterr().out.startswith(f"added {name}: next tick ")
    found = asyncio.run(read())
    assert (found.cron, found.job_type, found.payload) == (
        "0 7 * * *",
        "schedule-ping@1",
        {"customer": "acme"},
    )
    bad = {
        "already exists": [*add, "0 7 * * *", "schedule-ping", "--payload", '{"customer": "x"}'],
        "no handler for job type 'nope'": [*add[:-1], "other", "@daily", "nope"],
        "the payload is not JSON": [
            *add[:-1],
            "other",
            "@daily",
            "schedule-ping",
            "--payload",
            "{",
        ],
        "the payload does not fit schedule-ping@1": [
            *add[:-1],
            "other",
            "@daily",
            "schedule-ping",
            "--payload",
            '{"customer": 1}',
        ],
        "61 * * * *": [
            *add[:-1],
            "other",
            "61 * * * *",
            "schedule-ping",
            "--payload",
            '{"customer": "x"}',
        ],
    }
    for message, argv in bad.items():
        assert main(argv) == 1, argv
        assert message.lower() in capsys.readouterr().err.lower(), argv
    update = ["schedules", target, "update", name]
    assert main([*update, "--payload", '{"customer": "globex"}', "--timezone", "Asia/Tokyo"]) == 0
    assert capsys.readouterr().out.startswith(f"updated {name}: next tick ")
    found = asyncio.run(read())
    assert (found.cron, found.timezone, found.payload) == (
        "0 7 * * *",
        "Asia/Tokyo",
        {"customer": "globex"},
    )
    assert main([*update, "--cron", "not cron"]) == 1
    assert "cron" in capsys.readouterr().err
    assert main(["schedules", target, "update", "nope", "--cron", "@daily"]) == 1
    assert "no schedule named 'nope'" in capsys.readouterr().err
    assert asyncio.run(read()).cron == "0 7 * * *"  # a refused change writes nothing
    asyncio.run(reset())


async def test_console_adds_and_edits_schedules_keeping_what_was_typed(host: JobHost) -> None:
    """The add form and the edit page: a bad field is a 400 naming it, with the form as
    typed; read-only without auth."""
    async with client_for(host, auth=None) as client:
        page = await client.get("/schedules")
        assert 'id="schedule-form"' not in page.text
        refused = await client.post("/schedules/add", data={"csrf_token": "x" * 64})
        assert refused.status_code == 403
    async with client_for(host, auth=allow_all) as client:
        page = await client.get("/schedules")
        assert 'id="schedule-form"' in page.text and "schedule-ping@1" in page.text
        token = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
        assert token is not None
        form = {
            "csrf_token": token.group(1),
            "name": "report:console",
            "cron": "0 9 * * 1",
            "timezone": "Europe/Prague",
            "job_type": "schedule-ping@1",
            "misfire": "run_once",
            "payload": '{"customer": "acme"',
        }
        typo = await client.post("/schedules/add", data=form)
        assert typo.status_code == 400
        assert "the payload is not JSON" in typo.text
        assert "0 9 * * 1" in typo.text and "Europe/Prague" in typo.text
        assert "{&#34;customer&#34;: &#34;acme&#34;" in typo.text  # kept, escaped
        assert await host.schedules.get("report:console") is None
        for field, value, message in (
            ("cron", "0 25 * * *", "cron"),
            ("timezone", "Mars/Olympus", "Mars/Olympus"),
            ("job_type", "nope@1", "no handler for job type"),
            ("payload", '{"customer": 42}', "does not fit schedule-ping@1"),
            ("name", "", "name"),
            ("misfire", "later", "misfire"),
        ):
            wrong = await client.post(
                "/schedules/add", data={**form, "payload": '{"customer": "acme"}', field: value}
            )
            assert wrong.status_code == 400 and message in wrong.text, (field, wrong.text[-600:])
        added = await client.post(
            "/schedules/add", data={**form, "payload": '{"customer": "acme"}'}
        )
        assert added.status_code == 303
        assert added.headers["location"].endswith("/schedules?notice=schedule-added")
        found = await host.schedules.get("report:console")
        assert found is not None and found.misfire == "run_once"
        assert (found.payload, found.timezone) == ({"customer": "acme"}, "Europe/Prague")
        taken = await client.post("/schedules/add", data={**form, "payload": '{"customer": "x"}'})
        assert taken.status_code == 400 and "already exists" in taken.text

        edit = await client.get("/schedules/edit?name=report:console")
        assert edit.status_code == 200 and "0 9 * * 1" in edit.text
        assert (await client.get("/schedules/edit?name=nope")).status_code == 404
        assert (await client.get("/schedules/edit?name=x&page=1")).status_code == 400
        url = "/schedules/edit?name=report:console"
        changed = {**form, "cron": "30 9 * * 1", "payload": '{"customer": "globex"}'}
        bad = await client.post(url, data={**changed, "cron": "bogus"})
        assert bad.status_code == 400 and "bogus" in bad.text
        assert (await host.schedules.get("report:console")).cron == "0 9 * * 1"  # type: ignore[union-attr]
        saved = await client.post(url, data=changed)
        assert saved.status_code == 303
        assert saved.headers["location"].endswith("notice=schedule-updated")
        found = await host.schedules.get("report:console")
        assert found is not None
        assert (found.cron, found.payload) == ("30 9 * * 1", {"customer": "globex"})
        gone = await client.post("/schedules/edit?name=nope", data=changed)
        assert gone.headers["location"].endswith("notice=no-such-schedule")


_TOO_DEEP = "[" * 5000 + "]" * 5000
"""A payload nested deeper than Python's json can parse (it raised RecursionError)."""


async def test_a_payload_nested_too_deep_is_refused_not_a_crash(host: JobHost) -> None:
    """A payload nested too deep to parse is a ConfigurationError from `schedules.job`, a
    400 with the form kept in the console's add and edit forms (it was a 500)."""
    with pytest.raises(ConfigurationError, match="the payload is not JSON"):
        host.schedules.job("schedule-ping", _TOO_DEEP)
    async with client_for(host, auth=allow_all) as client:
        page = await client.get("/schedules")
        token = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
        assert token is not None
        form = {
            "csrf_token": token.group(1),
            "name": "report:too-deep",
            "cron": "0 9 * * 1",
            "timezone": "UTC",
            "job_type": "schedule-ping@1",
            "misfire": "skip",
            "payload": _TOO_DEEP,
        }
        added = await client.post("/schedules/add", data=form)
        assert added.status_code == 400 and "the payload is not JSON" in added.text
        assert await host.schedules.get("report:too-deep") is None
        await host.schedules.add("report:too-deep", "0 9 * * 1", Ping("acme"))
        edited = await client.post("/schedules/edit?name=report:too-deep", data=form)
        assert edited.status_code == 400 and "the payload is not JSON" in edited.text
        found = await host.schedules.get("report:too-deep")
        assert found is not None and found.payload == {"customer": "acme"}
        await host.schedules.remove("report:too-deep")


def client_for(host: JobHost, auth: Any = None) -> httpx2.AsyncClient:
    app = Starlette(routes=[Mount("/ops", app=host.dashboard(auth=auth))])
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://testserver/ops"
    )


def allow_all(request: Request) -> bool:
    return True


def test_a_host_fires_in_one_event_loop_after_another(
    redis_url: str, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A host run under ``asyncio.run`` twice (scripts, tests) fires in both runs."""
    firing = make_host(queue_name, None, run_worker=False)

    async def one_run(name: str) -> None:
        async with firing.run():
            await firing.schedules.add(name, EVERY_SECOND, Ping(name))
            fired = firing.schedules.fired
            await eventually(lambda: firing.schedules.fired > fired, what=f"a tick of {name}")
            await firing.schedules.remove(name)
            before = await _commands(firing)
            await asyncio.sleep(1)  # a window in which the idle host must stay quiet
            quiet.append(await _commands(firing) - before)

    quiet: list[int] = []
    asyncio.run(one_run("first"))
    asyncio.run(one_run("second"))
    assert "cannot fire" not in caplog.text
    assert max(quiet) < 50, quiet  # sleeping, not spinning on an event of the first loop


async def test_a_sharded_host_keeps_schedules_on_shard_0(redis_url: str, queue_name: str) -> None:
    sharded = JobHost(queue_name=queue_name, shards=3, fallback_poll=0.2)
    ran: list[str] = []

    @sharded.handler(Ping)
    async def ping(job: Ping) -> None:
        ran.append(job.customer)

    async with sharded.run():
        added = await sharded.schedules.add("sharded", EVERY_SECOND, Ping("acme"))
        assert added.next_tick is not None
        await eventually(lambda: ran, what="a run of the sharded host's schedule")
        tick_ms = int(added.next_tick.timestamp() * 1000)
        shard0 = sharded.scheduler.stores[0]
        run_id = shard0.keys.schedule_run_id("sharded", tick_ms)
        info = await sharded.scheduler.get(run_id)
        assert info is not None and (info.job_type, info.version) == ("schedule-ping", 1)
        assert await shard0.redis.hexists(shard0.keys.schedules, "sharded")  # type: ignore[misc]
        await sharded.schedules.remove("sharded")
