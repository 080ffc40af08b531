"""Which days a cron expression fires on: the day-of-month/day-of-week rule of `CronSchedule`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hostedjobs.cron import CronSchedule

NEW_YEAR_2024 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday


def days(expression: str, count: int, timezone: str = "UTC") -> list[str]:
    """The dates of the first ``count`` ticks after 2024-01-01 00:00 UTC, as ``MM-DD``."""
    ticks = CronSchedule.parse(expression, timezone).ticks(NEW_YEAR_2024, count)
    return [tick.strftime("%m-%d") for tick in ticks]


# -- both fields restricted: either one matching is enough -------------------------------------


def test_day_of_month_or_nth_weekday() -> None:
    """``0 0 8 * 5#3`` fires on the 8th and on third Fridays, as ``0 0 8 * 5`` fires on both."""
    assert days("0 0 8 * 5#3", 4) == ["01-08", "01-19", "02-08", "02-16"]
    assert days("0 0 8 * 5", 4) == ["01-05", "01-08", "01-12", "01-19"]


def test_first_of_the_month_or_second_friday() -> None:
    """``0 0 1 * FRI#2``: the 1st of each month and each second Friday (2024-03-01 is both)."""
    assert days("0 0 1 * FRI#2", 6) == ["01-12", "02-01", "02-09", "03-01", "03-08", "04-01"]


def test_last_day_or_first_friday() -> None:
    """``0 0 L * FRI#1``: the last day of each month and each first Friday."""
    assert days("0 0 L * FRI#1", 6) == ["01-05", "01-31", "02-02", "02-29", "03-01", "03-31"]


def test_previous_tick_follows_the_same_rule() -> None:
    """previous_tick (misfire catch-up) sees the day-of-month side of ``0 0 8 * 5#3`` too."""
    schedule = CronSchedule.parse("0 0 8 * 5#3")
    assert schedule.previous_tick(datetime(2024, 2, 10, tzinfo=UTC)) == datetime(
        2024, 2, 8, tzinfo=UTC
    )
    assert schedule.previous_tick(datetime(2024, 2, 7, tzinfo=UTC)) == datetime(
        2024, 1, 19, tzinfo=UTC
    )


def test_nearest_weekday_or_weekday() -> None:
    """``0 0 15W * 1``: the weekday nearest the 15th, and every Monday."""
    assert days("0 0 15W * 1", 8) == [
        "01-08",
        "01-15",
        "01-22",
        "01-29",
        "02-05",
        "02-12",
        "02-15",
        "02-19",
    ]


def test_last_weekday_spellings() -> None:
    """``5L``, ``FRIL`` and ``L5`` all mean the last Friday, and union with the 8th."""
    expected = ["01-08", "01-26", "02-08", "02-23", "03-08", "03-29"]
    for spelling in ("5L", "fril", "L5", "FRIL"):
        assert days(f"0 0 8 * {spelling}", 6) == expected, spelling
    assert days("0 0 * * 7L", 2) == ["01-28", "02-25"]  # 7 is Sunday, like 0


def test_restricted_range_covering_the_month_still_unions() -> None:
    """``1-31`` does not begin with ``*``: with a weekday it fires every day (cronie does too)."""
    assert days("0 0 1-31 * 1", 3) == ["01-02", "01-03", "01-04"]


# -- a field beginning with "*": both must match ----------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # Odd days that are Mondays: */2 begins with "*" (croniter would take every odd day
        # and every Monday).
        ("0 0 */2 * 1", ["01-15", "01-29", "02-05", "02-19"]),
        # The 8th when it is a Sunday, Tuesday, Thursday or Saturday.
        ("0 0 8 * */2", ["02-08", "06-08", "08-08", "09-08"]),
        # "*,5#3" covers every weekday: the day-of-month alone decides.
        ("0 0 8 * *,5#3", ["01-08", "02-08", "03-08", "04-08"]),
        ("0 0 * * *,5#3", ["01-02", "01-03", "01-04", "01-05"]),
        # Third Fridays that are the 15th to the 21st: all of them.
        ("0 0 * * 5#3", ["01-19", "02-16", "03-15", "04-19"]),
        # "?" (Quartz's "no specific value") reads like "*".
        ("0 0 ? * 5#3", ["01-19", "02-16", "03-15", "04-19"]),
        ("0 0 8 * ?", ["01-08", "02-08", "03-08", "04-08"]),
        ("0 0 */10 * L5", ["05-31"]),
    ],
)
def test_a_field_beginning_with_a_star_narrows_the_other(
    expression: str, expected: list[str]
) -> None:
    """When either day field begins with ``*`` a day must match both fields (Vixie cron)."""
    assert days(expression, len(expected)) == expected


def test_items_of_a_field_add_up() -> None:
    """A list is the union of its items: ``1#1,1`` is every Monday, not only the first."""
    assert days("0 0 * * 1#1,1", 3) == ["01-08", "01-15", "01-22"]
    assert days("0 0 L,15 * 5#1", 5) == ["01-05", "01-15", "01-31", "02-02", "02-15"]


def test_six_fields_and_a_zone_follow_the_same_rule() -> None:
    """The rule reads local dates: ``0 0 0 8 * 5#3`` in New York fires at 05:00 UTC."""
    schedule = CronSchedule.parse("0 0 0 8 * 5#3", "America/New_York")
    assert schedule.ticks(NEW_YEAR_2024, 2) == [
        datetime(2024, 1, 8, 5, tzinfo=UTC),
        datetime(2024, 1, 19, 5, tzinfo=UTC),
    ]
