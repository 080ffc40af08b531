"""`CronSchedule` against a brute-force reference (tests/cron_reference.py), on random expressions.

Every day-field form (``*``, steps, lists, ranges, names, ``L``, ``W``, ``#``, ``L5``/``5L``,
``?``) in both day fields, with random time fields, 5 and 6 fields, in UTC and in DST zones
(starts often within two days of a transition). ``HOSTEDJOBS_CRON_EXAMPLES`` sets how many
examples run (default 200, a few seconds).
"""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostedjobs.cron import CronSchedule
from hostedjobs.exceptions import ConfigurationError
from tests import cron_reference as reference
from tests.cron_reference import (
    BOUNDS,
    DAY,
    HOUR,
    MINUTE,
    MONTH,
    MONTH_NAMES,
    SECOND,
    WEEKDAY,
    WEEKDAY_NAMES,
    Expression,
    Item,
)

EXAMPLES = int(os.environ.get("HOSTEDJOBS_CRON_EXAMPLES", "200"))
ZONES = ("UTC", "Europe/Prague", "America/New_York", "Australia/Lord_Howe")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
ONE_DAY = timedelta(days=1)


def _zone(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


@functools.cache
def _transitions(name: str) -> tuple[datetime, ...]:
    """The zone's offset changes in 2020-2040, to the second."""
    zone = _zone(name)
    found = []
    moment = datetime(2020, 1, 1, tzinfo=UTC)
    while moment.year < 2041:
        later = moment + timedelta(days=1)
        if moment.astimezone(zone).utcoffset() != later.astimezone(zone).utcoffset():
            low, high = moment, later
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                same = middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset()
                low, high = (middle, high) if same else (low, middle)
            found.append(high)
        moment = later
    return tuple(found)


# -- expressions -------------------------------------------------------------------------------


# Strategies are made once: building them inside every draw costs more than the test.
@functools.cache
def _between(low: int, high: int) -> st.SearchStrategy[int]:
    return st.integers(low, high)


_BOOLEANS = st.booleans()
_CASES = st.sampled_from([str.upper, str.lower, str.title])
_PLAIN_KINDS = st.sampled_from(["star", "value", "value", "range", "range", "from"])
_DAY_KINDS = st.sampled_from(["plain", "plain", "last", "to_last"])
_DAY_SHAPES = st.sampled_from(["list", "list", "list", "nearest", "question"])
_WEEKDAY_SHAPES = st.sampled_from(["plain", "plain", "special", "mixed", "question"])
_TRANSITION_HOURS = st.sampled_from([1, 2, 3])


def _spelled(draw: st.DrawFn, index: int, value: int) -> str:
    """``value`` as a number, or as a name in some letter case where the field has names."""
    names = {MONTH: ("", *MONTH_NAMES), WEEKDAY: WEEKDAY_NAMES}.get(index)
    if names is None or value >= len(names) or not draw(_BOOLEANS):
        return str(value)
    return draw(_CASES)(names[value])


@st.composite
def _plain_item(draw: st.DrawFn, index: int) -> Item:
    bottom, top = BOUNDS[index]
    kind = draw(_PLAIN_KINDS)
    step = draw(_between(1, top - bottom + 1))
    stepped = draw(_BOOLEANS)
    if kind == "star":
        return Item("star", f"*/{step}", step=step) if stepped else Item("star", "*")
    if index == HOUR and draw(_BOOLEANS):  # around the DST transitions, often
        low = draw(_TRANSITION_HOURS)
    else:
        low = draw(_between(bottom, top))
    if kind == "value":
        return Item("value", _spelled(draw, index, low), low=low)
    if kind == "from":
        return Item("from", f"{low}/{step}", low=low, step=step)
    high = draw(_between(low, top))
    text = f"{_spelled(draw, index, low)}-{_spelled(draw, index, high)}"
    if stepped:
        return Item("range", f"{text}/{step}", low=low, high=high, step=step)
    return Item("range", text, low=low, high=high)


_PLAIN_FIELDS = {
    index: st.lists(_plain_item(index), min_size=1, max_size=3).map(tuple)
    for index in (SECOND, MINUTE, HOUR, MONTH, WEEKDAY)
}
_PLAIN_DAY = _plain_item(DAY)


@st.composite
def _day_of_month_item(draw: st.DrawFn) -> Item:
    kind = draw(_DAY_KINDS)
    if kind == "plain":
        return draw(_PLAIN_DAY)
    if kind == "last":
        return Item("last", "L" if draw(_BOOLEANS) else "l")
    low = draw(_between(1, 31))
    step = draw(_between(1, 10))
    text = f"{low}-L" if step == 1 else f"{low}-L/{step}"
    return Item("to_last", text, low=low, step=step)


_DAY_ITEMS = st.lists(_day_of_month_item(), min_size=1, max_size=3)


@st.composite
def _day_of_month(draw: st.DrawFn) -> tuple[Item, ...]:
    shape = draw(_DAY_SHAPES)
    if shape == "question":
        return (Item("question", "?"),)
    if shape == "nearest":  # W stands alone (croniter refuses it in a list)
        day = draw(_between(1, 31))
        return (Item("nearest", f"{day}{'W' if draw(_BOOLEANS) else 'w'}", low=day),)
    return tuple(draw(_DAY_ITEMS))


@st.composite
def _special_weekday(draw: st.DrawFn) -> Item:
    weekday = draw(_between(0, 7))
    spelled = _spelled(draw, WEEKDAY, weekday)
    if draw(_BOOLEANS):
        nth = draw(_between(1, 5))
        return Item("nth", f"{spelled}#{nth}", low=weekday, high=nth)
    text = (f"L{weekday}", f"{spelled}L", f"{spelled}l")[draw(_between(0, 2))]
    return Item("last_weekday", text, low=weekday)


_SPECIALS = st.lists(_special_weekday(), min_size=1, max_size=3)


@st.composite
def _day_of_week(draw: st.DrawFn) -> tuple[Item, ...]:
    shape = draw(_WEEKDAY_SHAPES)
    if shape == "question":
        return (Item("question", "?"),)
    if shape == "plain":
        return draw(_PLAIN_FIELDS[WEEKDAY])
    specials = draw(_SPECIALS)
    if shape == "special":
        return tuple(specials)
    # croniter refuses a plain weekday beside '#'/'L' items unless it is one of theirs (or *).
    extras = [Item("star", "*")] + [Item("value", str(i.low), low=i.low) for i in specials]
    items = [*specials, extras[draw(_between(0, len(extras) - 1))]]
    position = draw(_between(0, len(items) - 1))
    items.insert(position, items.pop())
    return tuple(items)


@st.composite
def expressions(draw: st.DrawFn) -> Expression:
    """A random expression, 5 or 6 fields, with every day-field form."""
    return Expression(
        seconds=draw(_PLAIN_FIELDS[SECOND]) if draw(_BOOLEANS) else None,
        minutes=draw(_PLAIN_FIELDS[MINUTE]),
        hours=draw(_PLAIN_FIELDS[HOUR]),
        days=draw(_day_of_month()),
        months=draw(_PLAIN_FIELDS[MONTH]),
        weekdays=draw(_day_of_week()),
    )


@st.composite
def _starts(draw: st.DrawFn, zone: str) -> datetime:
    """An instant in 2000-2060, or within two days of one of the zone's DST transitions."""
    if zone != "UTC" and draw(_BOOLEANS):
        transitions = _transitions(zone)
        transition = transitions[draw(_between(0, len(transitions) - 1))]
        return transition + timedelta(seconds=draw(_between(-2 * 86400, 2 * 86400)))
    return EPOCH + timedelta(seconds=draw(_between(0, 60 * 365 * 86400)))


_STARTS = {zone: _starts(zone) for zone in ZONES}


# -- the comparison ----------------------------------------------------------------------------


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(expression=expressions(), zone_name=st.sampled_from(ZONES), data=st.data())
def test_ticks_agree_with_the_reference(
    expression: Expression, zone_name: str, data: st.DataObject
) -> None:
    """Three chained next ticks and the previous tick equal the reference's; refusals too."""
    zone = _zone(zone_name)
    start = data.draw(_STARTS[zone_name], label="start")
    try:
        schedule = CronSchedule.parse(expression.text, zone_name)
    except ConfigurationError as exc:
        assert "never fires" in str(exc), exc  # noqa: PT017
        assert expression.never_fires(), f"{expression.text!r} does fire"
        return

    moment = start
    for _ in range(3):
        expected = reference.next_tick(expression, zone, moment)
        if expected is None:  # nothing within the reference's horizon: nor in ours
            assert schedule.next_tick(moment) > moment + reference.HORIZON - ONE_DAY
            break
        assert schedule.next_tick(moment) == expected, (expression.text, zone_name, moment)
        moment = expected

    expected = reference.previous_tick(expression, zone, start)
    previous = schedule.previous_tick(start)
    if expected is None:
        assert previous is None or previous < start - reference.HORIZON + ONE_DAY
    else:
        assert previous == expected, (expression.text, zone_name, start)
