"""Cron schedules: parsing, ticks, time zones and the DST rules of `CronSchedule`."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

import hostedjobs.cron as cron
from hostedjobs.cron import CronSchedule
from hostedjobs.exceptions import ConfigurationError

PRAGUE = ZoneInfo("Europe/Prague")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")

# 2026 transitions used below (local wall clock):
#   Europe/Prague        2026-03-29 02:00 -> 03:00      2026-10-25 03:00 -> 02:00
#   America/New_York     2026-03-08 02:00 -> 03:00      2026-11-01 02:00 -> 01:00
#   Australia/Lord_Howe  2026-10-04 02:00 -> 02:30      2026-04-05 02:00 -> 01:30
DST_DAYS = [
    ("Europe/Prague", datetime(2026, 3, 29)),
    ("Europe/Prague", datetime(2026, 10, 25)),
    ("America/New_York", datetime(2026, 3, 8)),
    ("America/New_York", datetime(2026, 11, 1)),
    ("Australia/Lord_Howe", datetime(2026, 10, 4)),
    ("Australia/Lord_Howe", datetime(2026, 4, 5)),
]
# (expression, does its hour field cover every hour)
DST_EXPRESSIONS = [
    ("*/30 * * * *", True),
    ("*/7 * * * *", True),
    ("0 * * * *", True),
    ("0 */2 * * *", True),
    ("* * * * *", True),
    ("*/20 * * * * *", True),
    ("15,45 2 * * *", False),
    ("30 1-3 * * *", False),
    ("*/15 1,2 * * *", False),
    ("0 30 2 * * *", False),
    ("0 0 * * *", False),
]


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """An aware UTC datetime."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(
    zone: ZoneInfo,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    """A wall time of ``zone`` (``fold=1``: the second pass of a repeated time), in UTC.

    Converted to UTC because an aware datetime with fold=1 never compares equal across zones.
    """
    wall = datetime(year, month, day, hour, minute, second, tzinfo=zone, fold=fold)
    return wall.astimezone(UTC)


def walls(ticks: list[datetime], zone: ZoneInfo) -> list[str]:
    """Ticks as local wall times with their zone abbreviation, for readable assertions."""
    return [t.astimezone(zone).strftime("%H:%M:%S %Z") for t in ticks]


def reference_ticks(
    expression: str, zone: ZoneInfo, wildcard_hour: bool, start: datetime, end: datetime
) -> list[datetime]:
    """Ticks in ``(start, end]`` by brute force: croniter's naive walls mapped one by one."""
    fields = expression.split()
    walls_iter = croniter(
        expression,
        start.astimezone(zone).replace(tzinfo=None) - timedelta(hours=6),
        second_at_beginning=len(fields) == 6,
    )
    wall_end = end.astimezone(zone).replace(tzinfo=None) + timedelta(hours=6)
    found: set[datetime] = set()
    while (wall := walls_iter.get_next(datetime)) <= wall_end:
        roundtrip = wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)
        if roundtrip.replace(tzinfo=None) != wall:
            # Skipped: the first instant whose wall time is later than `wall`.
            moment = wall.replace(tzinfo=zone).astimezone(UTC) - timedelta(hours=3)
            while moment.astimezone(zone).replace(tzinfo=None) <= wall:
                moment += timedelta(minutes=1)
            found.add(moment)
            continue
        both = sorted({wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1)})
        found.update(both if wildcard_hour else both[:1])
    return sorted(t for t in found if start < t <= end)


def chain(schedule: CronSchedule, start: datetime, end: datetime) -> list[datetime]:
    """``t = next_tick(t)`` from ``start`` until past ``end``."""
    result: list[datetime] = []
    moment = schedule.next_tick(start)
    while moment <= end:
        result.append(moment)
        moment = schedule.next_tick(moment)
    return result


# -- module surface ----------------------------------------------------------------------------


def test_public_surface_is_pinned() -> None:
    """The module exports exactly CronSchedule."""
    assert cron.__all__ == ["CronSchedule"]


def test_parse_keeps_expression_and_zone() -> None:
    """parse returns a frozen, hashable value holding the expression and zone as given."""
    schedule = CronSchedule.parse("0 */6 * * *", "Europe/Prague")
    assert schedule.expression == "0 */6 * * *"
    assert schedule.timezone == "Europe/Prague"
    assert schedule == CronSchedule("0 */6 * * *", "Europe/Prague")
    assert hash(schedule) == hash(CronSchedule("0 */6 * * *", "Europe/Prague"))
    assert CronSchedule.parse("* * * * *").timezone == "UTC"
    with pytest.raises(AttributeError):
        schedule.expression = "* * * * *"  # type: ignore[misc]


def test_describe_names_expression_and_zone() -> None:
    """describe() shows the expression followed by its zone in parentheses."""
    assert CronSchedule.parse("0 */6 * * *", "Europe/Prague").describe() == (
        "0 */6 * * * (Europe/Prague)"
    )
    assert CronSchedule.parse("@daily").describe() == "@daily (UTC)"


# -- 5 and 6 fields ----------------------------------------------------------------------------


def test_five_fields_every_five_minutes() -> None:
    """A 5-field expression fires on whole minutes, strictly after the given instant."""
    schedule = CronSchedule.parse("*/5 * * * *")
    assert schedule.ticks(utc(2026, 1, 1, 10, 3, 20), 3) == [
        utc(2026, 1, 1, 10, 5),
        utc(2026, 1, 1, 10, 10),
        utc(2026, 1, 1, 10, 15),
    ]


def test_next_tick_is_strictly_after() -> None:
    """A tick exactly at ``after`` is skipped, one microsecond before it is not."""
    schedule = CronSchedule.parse("0 * * * *")
    assert schedule.next_tick(utc(2026, 1, 1, 10)) == utc(2026, 1, 1, 11)
    just_before = utc(2026, 1, 1, 10) - timedelta(microseconds=1)
    assert schedule.next_tick(just_before) == utc(2026, 1, 1, 10)


def test_next_tick_returns_aware_utc_for_any_input_zone() -> None:
    """An ``after`` in another zone is the same instant; the result is in UTC."""
    schedule = CronSchedule.parse("0 12 * * *")
    result = schedule.next_tick(datetime(2026, 7, 1, 13, 0, tzinfo=PRAGUE))  # 11:00 UTC
    assert result == utc(2026, 7, 1, 12)
    assert result.tzinfo is UTC


def test_six_fields_every_second() -> None:
    """``* * * * * *`` fires every second."""
    schedule = CronSchedule.parse("* * * * * *")
    assert schedule.ticks(utc(2026, 1, 1, 0, 0, 59), 3) == [
        utc(2026, 1, 1, 0, 1, 0),
        utc(2026, 1, 1, 0, 1, 1),
        utc(2026, 1, 1, 0, 1, 2),
    ]


def test_six_fields_every_ten_seconds() -> None:
    """``*/10 * * * * *`` fires every ten seconds (the seconds field leads)."""
    schedule = CronSchedule.parse("*/10 * * * * *")
    assert schedule.ticks(utc(2026, 1, 1, 0, 0, 45), 3) == [
        utc(2026, 1, 1, 0, 0, 50),
        utc(2026, 1, 1, 0, 1, 0),
        utc(2026, 1, 1, 0, 1, 10),
    ]


def test_leading_field_is_seconds() -> None:
    """In ``30 5 * * * *`` 30 is the second and 5 the minute: every hour at :05:30."""
    schedule = CronSchedule.parse("30 5 * * * *")
    assert schedule.ticks(utc(2026, 1, 1, 0, 0), 2) == [
        utc(2026, 1, 1, 0, 5, 30),
        utc(2026, 1, 1, 1, 5, 30),
    ]
    assert CronSchedule.parse("0 30 2 * * *").next_tick(utc(2026, 1, 1)) == utc(2026, 1, 1, 2, 30)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("@yearly", utc(2027, 1, 1)),
        ("@annually", utc(2027, 1, 1)),
        ("@monthly", utc(2026, 6, 1)),
        ("@weekly", utc(2026, 5, 17)),  # a Sunday
        ("@daily", utc(2026, 5, 14)),
        ("@midnight", utc(2026, 5, 14)),
        ("@hourly", utc(2026, 5, 13, 11)),
        ("@DAILY", utc(2026, 5, 14)),
    ],
)
def test_aliases(alias: str, expected: datetime) -> None:
    """Each standard alias fires at the start of its period."""
    assert CronSchedule.parse(alias).next_tick(utc(2026, 5, 13, 10, 30)) == expected


def test_day_and_month_names() -> None:
    """MON-FRI and JAN,JUL names work like their numbers."""
    schedule = CronSchedule.parse("0 9 * jan,jul mon-fri")
    ticks = schedule.ticks(utc(2026, 1, 29), 4)
    assert ticks == [
        utc(2026, 1, 29, 9),
        utc(2026, 1, 30, 9),
        utc(2026, 7, 1, 9),
        utc(2026, 7, 2, 9),
    ]
    assert all(t.weekday() < 5 for t in ticks)


def test_last_day_nth_weekday_and_nearest_weekday() -> None:
    """L (last day), FRI#2 (second Friday) and 15W (weekday nearest the 15th) work."""
    assert CronSchedule.parse("0 0 L * *").ticks(utc(2026, 1, 31, 1), 2) == [
        utc(2026, 2, 28),
        utc(2026, 3, 31),
    ]
    assert CronSchedule.parse("0 0 * * fri#2").next_tick(utc(2026, 3, 1)) == utc(2026, 3, 13)
    # 2026-08-15 is a Saturday: its nearest weekday is Friday the 14th.
    assert CronSchedule.parse("0 0 15W * *").next_tick(utc(2026, 8, 1)) == utc(2026, 8, 14)


def test_day_of_month_or_day_of_week() -> None:
    """When both day fields are restricted, either one matching is enough (cron's OR)."""
    schedule = CronSchedule.parse("0 0 13 * fri")
    assert schedule.ticks(utc(2026, 3, 1), 3) == [
        utc(2026, 3, 6),
        utc(2026, 3, 13),
        utc(2026, 3, 20),
    ]


def test_a_range_with_equal_ends_is_that_one_value() -> None:
    """``9-9`` is 9, as in cron: croniter alone reads such a range as the whole field."""
    start = utc(2026, 1, 1)  # a Thursday
    assert CronSchedule.parse("0 9-9 * * *").ticks(start, 2) == [
        utc(2026, 1, 1, 9),
        utc(2026, 1, 2, 9),
    ]
    assert CronSchedule.parse("5-5/2 * * * *").ticks(start, 2) == [
        utc(2026, 1, 1, 0, 5),
        utc(2026, 1, 1, 1, 5),
    ]
    assert CronSchedule.parse("0 0 1 mar-MAR *").next_tick(start) == utc(2026, 3, 1)
    assert CronSchedule.parse("0 0 3-3 * *").ticks(start, 2) == [
        utc(2026, 1, 3),
        utc(2026, 2, 3),
    ]
    assert CronSchedule.parse("0 0 31-L * *").ticks(start, 2) == [  # from the 31st to the last
        utc(2026, 1, 31),
        utc(2026, 3, 31),
    ]
    # Day of week: 7 is Sunday, so "7-0" and "sun-sun" are Sunday and "0-7" is every day.
    for sunday in ("7-0", "sun-SUN", "7-7/2"):
        assert CronSchedule.parse(f"0 0 * * {sunday}").next_tick(start) == utc(2026, 1, 4)
    assert CronSchedule.parse("0 0 * * 0-7").next_tick(start) == utc(2026, 1, 2)


def test_leap_day() -> None:
    """29 February fires only in leap years."""
    assert CronSchedule.parse("0 0 29 2 *").ticks(utc(2026, 1, 1), 2) == [
        utc(2028, 2, 29),
        utc(2032, 2, 29),
    ]


def test_matches_croniter_in_utc() -> None:
    """In UTC the ticks agree with croniter's where croniter reads cron's rules.

    tests/test_cron_days.py has the day-field forms where it does not.
    """
    rng = random.Random(20260329)
    expressions = [
        "*/5 * * * *",
        "0 */6 * * *",
        "15 10 * * mon-fri",
        "0 0 1,15 * *",
        "0 0 L * *",
        "0 12 * * 5#2",
        "0 12 * * L5",
        "0 8 15W * *",
        "0 0 13 * fri",
        "0 0 1-7 * 1",
        "5-10/2 3,4 * feb-apr sun",
        "0 0 29 2 *",
        "0 0 31 * *",
        "59/15 * * * *",
        "*/10 * * * * *",
        "30 15 10 1 * *",
        "0 0 0 * * 1#1,3#3",
    ]
    for expression in expressions:
        schedule = CronSchedule.parse(expression)
        for _ in range(25):
            start = datetime(2024, 1, 1) + timedelta(seconds=rng.randrange(4 * 365 * 86400))
            reference = croniter(
                expression, start, second_at_beginning=len(expression.split()) == 6
            )
            expected = reference.get_next(datetime).replace(tzinfo=UTC)
            assert schedule.next_tick(start.replace(tzinfo=UTC)) == expected, (expression, start)


# -- time zones --------------------------------------------------------------------------------


def test_daily_job_in_new_york_follows_local_time() -> None:
    """A daily 09:00 New York job is 14:00 UTC in winter and 13:00 UTC in summer."""
    schedule = CronSchedule.parse("0 9 * * *", "America/New_York")
    assert schedule.next_tick(utc(2026, 1, 15)) == utc(2026, 1, 15, 14)
    assert schedule.next_tick(utc(2026, 7, 15)) == utc(2026, 7, 15, 13)


def test_zone_alias_names_of_utc() -> None:
    """Etc/UTC and friends behave exactly like UTC."""
    for name in ("Etc/UTC", "GMT", "UTC"):
        assert CronSchedule.parse("0 2 * * *", name).next_tick(utc(2026, 3, 29)) == utc(
            2026, 3, 29, 2
        )


# -- DST: skipped times ------------------------------------------------------------------------


def test_gap_tick_fires_at_end_of_gap_prague() -> None:
    """02:30 does not exist on 2026-03-29 in Prague: it fires at 03:00 CEST (01:00 UTC)."""
    schedule = CronSchedule.parse("30 2 * * *", "Europe/Prague")
    ticks = schedule.ticks(local(PRAGUE, 2026, 3, 28, 12), 2)
    assert ticks == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]
    assert walls(ticks, PRAGUE) == ["03:00:00 CEST", "02:30:00 CEST"]


def test_gap_tick_fires_at_end_of_gap_new_york() -> None:
    """02:30 does not exist on 2026-03-08 in New York: it fires at 03:00 EDT (07:00 UTC)."""
    schedule = CronSchedule.parse("30 2 * * *", "America/New_York")
    ticks = schedule.ticks(local(NEW_YORK, 2026, 3, 7, 12), 3)
    assert ticks == [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)]


def test_several_gap_ticks_coalesce_into_one_run() -> None:
    """Every tick of ``*/15 2 * * *`` falls in the gap: one run at 03:00, then the next day."""
    schedule = CronSchedule.parse("*/15 2 * * *", "Europe/Prague")
    ticks = schedule.ticks(local(PRAGUE, 2026, 3, 29, 1), 3)
    assert ticks == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0), utc(2026, 3, 30, 0, 15)]


def test_gap_ticks_coalesce_with_the_tick_at_gap_end() -> None:
    """``*/30 * * * *``: 02:00, 02:30 and 03:00 of the spring-forward night make one run."""
    schedule = CronSchedule.parse("*/30 * * * *", "Europe/Prague")
    ticks = schedule.ticks(local(PRAGUE, 2026, 3, 29, 1, 15), 4)
    assert walls(ticks, PRAGUE) == [
        "01:30:00 CET",
        "03:00:00 CEST",
        "03:30:00 CEST",
        "04:00:00 CEST",
    ]


def test_gap_from_inside_the_gap() -> None:
    """Asked from within the gap's hour (in UTC), the gap tick still comes exactly once."""
    schedule = CronSchedule.parse("30 2 * * *", "Europe/Prague")
    assert schedule.next_tick(utc(2026, 3, 29, 0, 59, 59)) == utc(2026, 3, 29, 1)
    assert schedule.next_tick(utc(2026, 3, 29, 1)) == utc(2026, 3, 30, 0, 30)


def test_gap_of_thirty_minutes_lord_howe() -> None:
    """Lord Howe skips 02:00-02:30: a 02:15 tick runs at 02:30, once."""
    schedule = CronSchedule.parse("15 2 * * *", "Australia/Lord_Howe")
    ticks = schedule.ticks(local(LORD_HOWE, 2026, 10, 3, 12), 2)
    assert ticks[0] == local(LORD_HOWE, 2026, 10, 4, 2, 30)
    assert ticks[0] == utc(2026, 10, 3, 15, 30)
    assert ticks[1] == local(LORD_HOWE, 2026, 10, 5, 2, 15)


def test_six_field_ticks_in_gap_coalesce() -> None:
    """Every 20 seconds through the gap: the whole skipped hour is one run at its end."""
    schedule = CronSchedule.parse("*/20 * * * * *", "Europe/Prague")
    ticks = schedule.ticks(local(PRAGUE, 2026, 3, 29, 1, 59, 30), 3)
    assert walls(ticks, PRAGUE) == ["01:59:40 CET", "03:00:00 CEST", "03:00:20 CEST"]


# -- DST: repeated times -----------------------------------------------------------------------


def test_repeated_hour_fixed_hour_runs_once_prague() -> None:
    """02:30 happens twice on 2026-10-25 in Prague: a fixed-hour job runs at the first (CEST)."""
    schedule = CronSchedule.parse("30 2 * * *", "Europe/Prague")
    ticks = schedule.ticks(local(PRAGUE, 2026, 10, 24, 12), 2)
    assert ticks == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert walls(ticks, PRAGUE) == ["02:30:00 CEST", "02:30:00 CET"]


def test_repeated_hour_fixed_hour_from_second_pass() -> None:
    """Asked during the second 02:xx pass, a fixed-hour 02:45 job waits for the next day."""
    schedule = CronSchedule.parse("45 2 * * *", "Europe/Prague")
    second_pass = local(PRAGUE, 2026, 10, 25, 2, 10, fold=1)
    assert schedule.next_tick(second_pass) == local(PRAGUE, 2026, 10, 26, 2, 45)


def test_repeated_hour_fixed_hour_new_york() -> None:
    """01:30 happens twice on 2026-11-01 in New York: the job runs once, at 01:30 EDT."""
    schedule = CronSchedule.parse("30 1 * * *", "America/New_York")
    ticks = schedule.ticks(local(NEW_YORK, 2026, 10, 31, 12), 2)
    assert ticks == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_repeated_hour_every_thirty_minutes_runs_in_both_passes() -> None:
    """``*/30 * * * *`` fires at 02:00 and 02:30 CEST, then 02:00 and 02:30 CET, then 03:00."""
    schedule = CronSchedule.parse("*/30 * * * *", "Europe/Prague")
    ticks = schedule.ticks(local(PRAGUE, 2026, 10, 25, 1, 45), 5)
    assert walls(ticks, PRAGUE) == [
        "02:00:00 CEST",
        "02:30:00 CEST",
        "02:00:00 CET",
        "02:30:00 CET",
        "03:00:00 CET",
    ]
    assert [t - ticks[0] for t in ticks] == [timedelta(minutes=30 * i) for i in range(5)]


def test_repeated_hour_hourly_step_runs_in_both_passes() -> None:
    """``0 */2 * * *`` runs at 02:00 CEST and 02:00 CET: every two hours has no hole."""
    schedule = CronSchedule.parse("0 */2 * * *", "Europe/Prague")
    ticks = schedule.ticks(local(PRAGUE, 2026, 10, 25, 0, 30), 3)
    assert walls(ticks, PRAGUE) == ["02:00:00 CEST", "02:00:00 CET", "04:00:00 CET"]


def test_second_pass_found_from_late_first_pass() -> None:
    """From 02:50 CEST, the next ``*/30`` tick is 02:00 CET ten minutes later, not 03:00."""
    schedule = CronSchedule.parse("*/30 * * * *", "Europe/Prague")
    after = local(PRAGUE, 2026, 10, 25, 2, 50)
    assert schedule.next_tick(after) == local(PRAGUE, 2026, 10, 25, 2, 0, fold=1)
    assert schedule.next_tick(after) - after == timedelta(minutes=10)


def test_repeated_half_hour_lord_howe() -> None:
    """Lord Howe repeats 01:30-02:00: ``*/15`` runs in both passes, ``45 1`` only in the first."""
    every = CronSchedule.parse("*/15 * * * *", "Australia/Lord_Howe")
    ticks = every.ticks(local(LORD_HOWE, 2026, 4, 5, 1, 20), 6)
    assert [t - ticks[0] for t in ticks] == [timedelta(minutes=15 * i) for i in range(6)]
    assert [t.astimezone(LORD_HOWE).strftime("%H:%M") for t in ticks] == [
        "01:30",
        "01:45",
        "01:30",
        "01:45",
        "02:00",
        "02:15",
    ]
    fixed = CronSchedule.parse("45 1 * * *", "Australia/Lord_Howe")
    assert fixed.ticks(local(LORD_HOWE, 2026, 4, 5, 1), 2) == [
        utc(2026, 4, 4, 14, 45),  # 01:45 +11:00, the first pass
        utc(2026, 4, 5, 15, 15),  # 01:45 +10:30 the next day
    ]


@pytest.mark.parametrize(("zone_name", "day"), DST_DAYS)
def test_whole_dst_day_matches_brute_force(zone_name: str, day: datetime) -> None:
    """Across each DST day the tick chain is strictly increasing and equals a brute-force map."""
    zone = ZoneInfo(zone_name)
    start = day.replace(tzinfo=zone) - timedelta(hours=2)
    end = day.replace(tzinfo=zone) + timedelta(hours=26)
    for expression, wildcard_hour in DST_EXPRESSIONS:
        schedule = CronSchedule.parse(expression, zone_name)
        ticks = chain(schedule, start, end)
        assert all(a < b for a, b in itertools.pairwise(ticks)), expression
        expected = reference_ticks(expression, zone, wildcard_hour, start, end)
        assert ticks == expected, (expression, zone_name, day)


@pytest.mark.parametrize(("zone_name", "day"), DST_DAYS)
def test_next_tick_from_any_second_of_a_dst_night(zone_name: str, day: datetime) -> None:
    """From every minute of a DST night, next_tick is the first brute-force tick after it."""
    zone = ZoneInfo(zone_name)
    start = day.replace(tzinfo=zone)
    for expression, wildcard_hour in DST_EXPRESSIONS:
        if expression.startswith(("* ", "*/20")):
            continue
        schedule = CronSchedule.parse(expression, zone_name)
        expected = reference_ticks(
            expression, zone, wildcard_hour, start, start + timedelta(days=2)
        )
        for minute in range(6 * 60):
            after = start + timedelta(minutes=minute, seconds=17)
            want = next(t for t in expected if t > after)
            assert schedule.next_tick(after) == want, (expression, zone_name, after)


# -- previous_tick -----------------------------------------------------------------------------


def test_previous_tick_includes_the_instant_itself() -> None:
    """previous_tick returns the latest tick at or before the instant."""
    schedule = CronSchedule.parse("0 */6 * * *")
    assert schedule.previous_tick(utc(2026, 5, 1, 12)) == utc(2026, 5, 1, 12)
    assert schedule.previous_tick(utc(2026, 5, 1, 11, 59, 59)) == utc(2026, 5, 1, 6)
    assert schedule.previous_tick(utc(2026, 5, 1, 0, 0, 0)) == utc(2026, 5, 1)


def test_previous_tick_in_a_zone() -> None:
    """previous_tick reads the zone's wall clock: 09:00 New York in summer is 13:00 UTC."""
    schedule = CronSchedule.parse("0 9 * * *", "America/New_York")
    assert schedule.previous_tick(utc(2026, 7, 15, 12)) == utc(2026, 7, 14, 13)
    assert schedule.previous_tick(utc(2026, 1, 15, 15)) == utc(2026, 1, 15, 14)


def test_previous_tick_around_dst() -> None:
    """previous_tick finds the gap run and both passes of a repeated hour."""
    fixed = CronSchedule.parse("30 2 * * *", "Europe/Prague")
    assert fixed.previous_tick(local(PRAGUE, 2026, 3, 29, 3, 10)) == utc(2026, 3, 29, 1)
    # In the second 02:xx pass the 02:30 run already happened, in the first pass.
    second_pass = local(PRAGUE, 2026, 10, 25, 2, 10, fold=1)
    assert fixed.previous_tick(second_pass) == local(PRAGUE, 2026, 10, 25, 2, 30)
    every = CronSchedule.parse("*/30 * * * *", "Europe/Prague")
    assert every.previous_tick(second_pass) == local(PRAGUE, 2026, 10, 25, 2, 0, fold=1)
    late_first = local(PRAGUE, 2026, 10, 25, 2, 50)
    assert every.previous_tick(late_first) == local(PRAGUE, 2026, 10, 25, 2, 30)


@pytest.mark.parametrize(("zone_name", "day"), DST_DAYS)
def test_previous_tick_agrees_with_next_tick(zone_name: str, day: datetime) -> None:
    """For every minute of a DST night, no tick lies between previous_tick(t) and t."""
    zone = ZoneInfo(zone_name)
    start = day.replace(tzinfo=zone)
    for expression, _ in DST_EXPRESSIONS:
        schedule = CronSchedule.parse(expression, zone_name)
        for minute in range(0, 6 * 60, 3):
            moment = start + timedelta(minutes=minute, seconds=31)
            previous = schedule.previous_tick(moment)
            assert previous is not None
            assert previous <= moment
            assert schedule.next_tick(previous) > moment, (expression, moment)
            assert schedule.previous_tick(previous) == previous


# -- ticks -------------------------------------------------------------------------------------


def test_ticks_count() -> None:
    """ticks() returns the next ``count`` ticks; zero gives none, negative is an error."""
    schedule = CronSchedule.parse("@hourly")
    assert schedule.ticks(utc(2026, 1, 1), 0) == []
    assert len(schedule.ticks(utc(2026, 1, 1), 48)) == 48
    with pytest.raises(ValueError, match="count"):
        schedule.ticks(utc(2026, 1, 1), -1)


# -- errors ------------------------------------------------------------------------------------


def test_configuration_error_is_a_value_error() -> None:
    """Parse errors can be caught as ValueError."""
    with pytest.raises(ValueError, match="invalid cron expression"):
        CronSchedule.parse("61 * * * *")


@pytest.mark.parametrize("expression", ["", "   "])
def test_empty_expression(expression: str) -> None:
    """An empty expression is refused with the expected format."""
    with pytest.raises(ConfigurationError, match=r"empty cron expression; expected 5 fields"):
        CronSchedule.parse(expression)


@pytest.mark.parametrize(("expression", "count"), [("* * * * * * *", 7), ("* * * *", 4)])
def test_wrong_field_count(expression: str, count: int) -> None:
    """Neither 5 nor 6 fields: the message gives the expected shapes and the count found."""
    with pytest.raises(ConfigurationError) as info:
        CronSchedule.parse(expression)
    assert str(info.value) == (
        "expected 5 fields (minute hour day month weekday) or 6 with leading seconds, "
        f"got {count}: {expression!r}"
    )


@pytest.mark.parametrize(
    "expression",
    [
        "61 * * * *",
        "0 24 * * *",
        "* * 0 * *",
        "*/0 * * * *",
        "0 0 * foo *",
        "a b c d e",
        "60 * * * * *",
    ],
)
def test_invalid_field_values(expression: str) -> None:
    """Out-of-range or malformed fields name the expression and croniter's complaint."""
    with pytest.raises(ConfigurationError) as info:
        CronSchedule.parse(expression)
    message = str(info.value)
    assert message.startswith(f"invalid cron expression {expression!r}: ")
    assert "expected 5 fields" in message


def test_invalid_value_message_wraps_croniter() -> None:
    """The message for ``61 * * * *`` carries croniter's own reason (out of range)."""
    with pytest.raises(
        ConfigurationError, match=r"^invalid cron expression '61 \* \* \* \*': .*out of range"
    ):
        CronSchedule.parse("61 * * * *")


def test_unknown_alias() -> None:
    """An unknown @alias lists the supported ones."""
    with pytest.raises(
        ConfigurationError, match=r"unknown cron alias '@minutely'; use one of @yearly"
    ):
        CronSchedule.parse("@minutely")


@pytest.mark.parametrize("expression", ["R * * * *", "H H * * *", "0 H(0-5) * * *"])
def test_random_and_hashed_values_refused(expression: str) -> None:
    """R and H would give each process different ticks, so they are refused."""
    with pytest.raises(ConfigurationError, match="random \\(R\\) and hashed \\(H\\)"):
        CronSchedule.parse(expression)


def test_unknown_time_zone() -> None:
    """A misspelt zone is refused with a hint at IANA names."""
    with pytest.raises(ConfigurationError) as info:
        CronSchedule.parse("0 2 * * *", "Europe/Pargue")
    assert str(info.value) == (
        "unknown time zone 'Europe/Pargue'; use an IANA name like 'Europe/Prague' or 'UTC'"
    )


@pytest.mark.parametrize("zone", ["", "../etc/passwd", "Not A Zone"])
def test_malformed_time_zone(zone: str) -> None:
    """Empty or malformed zone names are refused the same way."""
    with pytest.raises(ConfigurationError, match="IANA name"):
        CronSchedule.parse("0 2 * * *", zone)


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 0 31 2 *"])
def test_never_firing_expression(expression: str) -> None:
    """An expression with no possible date is refused at parse time."""
    with pytest.raises(ConfigurationError, match=r"never fires"):
        CronSchedule.parse(expression)


def test_non_string_expression() -> None:
    """A non-string expression is a configuration error, not a crash."""
    with pytest.raises(ConfigurationError, match="must be a string"):
        CronSchedule.parse(5)  # type: ignore[arg-type]


def test_naive_datetimes_are_refused() -> None:
    """next_tick, previous_tick and ticks refuse naive datetimes with ValueError."""
    schedule = CronSchedule.parse("* * * * *")
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="aware datetime"):
        schedule.next_tick(naive)
    with pytest.raises(ValueError, match="aware datetime"):
        schedule.previous_tick(naive)
    with pytest.raises(ValueError, match="aware datetime"):
        schedule.ticks(naive, 1)
