"""A brute-force cron matcher, written from the rules in docs/cron-jobs.md, to test against.

It shares nothing with `hostedjobs.cron` and does not use croniter: an expression is built
from `Item`s (rendered to text for `CronSchedule`), each field's values come straight from
its items, a date matches or not by looking at that date in the calendar (its weekday, its
week of the month, the month's length), and ticks are found by walking the local calendar
day by day and each matching day's times in order, mapping every wall time to its instants
by asking `zoneinfo` about that wall time. Slow and obvious on purpose.
"""

from __future__ import annotations

import calendar
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo

# Field bounds, as the docs give them; 7 is another Sunday.
SECOND, MINUTE, HOUR, DAY, MONTH, WEEKDAY = range(6)
BOUNDS = {
    SECOND: (0, 59),
    MINUTE: (0, 59),
    HOUR: (0, 23),
    DAY: (1, 31),
    MONTH: (1, 12),
    WEEKDAY: (0, 7),
}
MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# How far the walk looks for a tick.
HORIZON = timedelta(days=41 * 366)


@dataclass(frozen=True)
class Item:
    """One comma-separated item of a field.

    ``kind``: ``star`` (``*`` or ``*/step``), ``value`` (``low``), ``range`` (``low-high``
    or ``low-high/step``), ``from`` (``low/step``: low, low+step, ... to the field's top;
    Saturday for the day of week, with 7 read as 0 first), ``question`` (``?``); in the
    day of month ``last`` (``L``), ``nearest`` (``lowW``) and ``to_last`` (``low-L``,
    ``low-L/step``); in the day of week ``nth`` (``low#high``: the high-th such weekday of
    the month) and ``last_weekday`` (``Llow``, ``lowL``: the month's last such weekday).
    ``text`` is how it is written.
    """

    kind: str
    text: str
    low: int = 0
    high: int = 0
    step: int = 1

    def values(self, index: int) -> frozenset[int]:
        """The values of a plain item in field ``index`` (7 stays 7 in the day of week)."""
        bottom, top = BOUNDS[index]
        if self.kind in ("star", "question"):
            return frozenset(range(bottom, top + 1, self.step))
        if self.kind == "value":
            return frozenset({self.low})
        if self.kind == "range":
            return frozenset(range(self.low, self.high + 1, self.step))
        if self.kind == "from":
            low = 0 if index == WEEKDAY and self.low == 7 else self.low
            return frozenset(range(low, (6 if index == WEEKDAY else top) + 1, self.step))
        raise AssertionError(f"{self.kind} is not a plain item")

    def day_of_month(self, day: date) -> bool:
        """Does ``day`` match this day-of-month item."""
        length = calendar.monthrange(day.year, day.month)[1]
        if self.kind == "last":
            return day.day == length
        if self.kind == "to_last":
            return day.day >= self.low and (day.day - self.low) % self.step == 0
        if self.kind == "nearest":
            target = min(self.low, length)
            weekdays = [
                d for d in range(1, length + 1) if date(day.year, day.month, d).weekday() < 5
            ]
            return day.day == min(weekdays, key=lambda d: abs(d - target))
        return day.day in self.values(DAY)

    def day_of_week(self, day: date) -> bool:
        """Does ``day`` match this day-of-week item."""
        weekday = (day.weekday() + 1) % 7  # 0 = Sunday
        if self.kind == "nth":
            return weekday == self.low % 7 and (day.day - 1) // 7 + 1 == self.high
        if self.kind == "last_weekday":
            length = calendar.monthrange(day.year, day.month)[1]
            return weekday == self.low % 7 and day.day + 7 > length
        return weekday in {value % 7 for value in self.values(WEEKDAY)}


@functools.cache
def plain(items: tuple[Item, ...], index: int) -> list[int]:
    """The values of a field of plain items, ascending."""
    return sorted(set().union(*(item.values(index) for item in items)))


@dataclass(frozen=True)
class Expression:
    """A cron expression as items per field; ``seconds`` is None for the 5-field form."""

    seconds: tuple[Item, ...] | None
    minutes: tuple[Item, ...]
    hours: tuple[Item, ...]
    days: tuple[Item, ...]
    months: tuple[Item, ...]
    weekdays: tuple[Item, ...]
    _matches: dict[date, bool] = field(default_factory=dict, compare=False, repr=False)

    @property
    def text(self) -> str:
        fields = [self.minutes, self.hours, self.days, self.months, self.weekdays]
        if self.seconds is not None:
            fields.insert(0, self.seconds)
        return " ".join(",".join(item.text for item in items) for items in fields)

    @functools.cached_property
    def month_numbers(self) -> frozenset[int]:
        return frozenset(plain(self.months, MONTH))

    @functools.cached_property
    def every_hour(self) -> bool:
        """The hour field is ``*``, ``*/n``, ``0-23`` or ``0-23/n`` (the docs' DST rule)."""
        (first, *rest) = self.hours
        whole = first.kind == "star" or (first.kind, first.low, first.high) == ("range", 0, 23)
        return not rest and whole

    def day_matches(self, day: date) -> bool:
        """The docs' day rule: both fields if either begins with ``*`` or ``?``, else either."""
        found = self._matches.get(day)
        if found is None:
            if day.month not in self.month_numbers:
                found = False
            else:
                by_month = any(item.day_of_month(day) for item in self.days)
                by_week = any(item.day_of_week(day) for item in self.weekdays)
                starred = any(items[0].text[0] in "*?" for items in (self.days, self.weekdays))
                found = (by_month and by_week) if starred else (by_month or by_week)
            self._matches[day] = found
        return found

    def times(
        self, descending: bool, bound: tuple[int, int, int]
    ) -> Iterator[tuple[int, int, int]]:
        """The (hour, minute, second)s of a day at or after ``bound`` (before, descending)."""

        def beyond(value: tuple[int, ...]) -> bool:  # strictly past the bound's prefix
            prefix = bound[: len(value)]
            return value > prefix if descending else value < prefix

        seconds = [0] if self.seconds is None else plain(self.seconds, SECOND)
        hours, minutes = plain(self.hours, HOUR), plain(self.minutes, MINUTE)
        for h in reversed(hours) if descending else hours:
            if beyond((h,)):
                continue
            for m in reversed(minutes) if descending else minutes:
                if beyond((h, m)):
                    continue
                for s in reversed(seconds) if descending else seconds:
                    if not beyond((h, m, s)):
                        yield h, m, s

    def never_fires(self) -> bool:
        """No date matches: 2024-2051 holds every month shape (length, first weekday)."""
        shapes = {}
        for year in range(2024, 2052):
            for month in self.month_numbers:
                shapes[month, *calendar.monthrange(year, month)] = year
        return not any(
            self.day_matches(date(year, month, day))
            for (month, _, length), year in shapes.items()
            for day in range(1, length + 1)
        )


def _walls(expression: Expression, start: datetime, descending: bool) -> Iterator[datetime]:
    """Matching naive wall times from ``start`` on (or back), day by day up to HORIZON."""
    step = timedelta(days=-1 if descending else 1)
    day = start.date()
    bound = (start.hour, start.minute, start.second)
    while abs(day - start.date()) <= HORIZON:
        if expression.day_matches(day):
            for h, m, s in expression.times(descending, bound):
                yield datetime(day.year, day.month, day.day, h, m, s)
        day += step
        bound = (24, 0, 0) if descending else (0, 0, 0)


def _local(moment: datetime, zone: tzinfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _offsets(moment: datetime, zone: tzinfo) -> tuple[timedelta, timedelta]:
    """The smallest and largest UTC offset of ``zone`` within a day of ``moment``.

    A wall time ``w`` near ``moment`` fires within ``[w - largest, w - smallest]`` (naive UTC).
    """
    found = [(moment + timedelta(hours=h)).astimezone(zone).utcoffset() for h in range(-24, 25)]
    offsets = [offset or timedelta(0) for offset in found]
    return min(offsets), max(offsets)


def instants(wall: datetime, zone: tzinfo, every_hour: bool) -> list[datetime]:
    """Where wall time ``wall`` fires (aware UTC), by the docs' DST rules."""
    first = wall.replace(tzinfo=zone).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if _local(first, zone) != wall:
        # Skipped: the end of the gap, the first instant whose wall time is later than `wall`.
        earlier, later = sorted((first, second))
        while later - earlier > timedelta(seconds=1):
            middle = earlier + timedelta(seconds=(later - earlier).total_seconds() // 2)
            earlier, later = (earlier, middle) if _local(middle, zone) > wall else (middle, later)
        return [later]
    both = sorted({first, second})
    return both if every_hour else both[:1]


def next_tick(expression: Expression, zone: tzinfo, after: datetime) -> datetime | None:
    """The first tick strictly after ``after``, or None within HORIZON."""
    best: datetime | None = None
    limit = datetime.max
    smallest, _ = _offsets(after, zone)
    for wall in _walls(expression, after.replace(tzinfo=None) + smallest, descending=False):
        if wall > limit:
            break
        for moment in instants(wall, zone, expression.every_hour):
            if moment > after and (best is None or moment < best):
                best = moment
                limit = best.replace(tzinfo=None) + _offsets(best, zone)[1]
    return best


def previous_tick(expression: Expression, zone: tzinfo, at: datetime) -> datetime | None:
    """The last tick at or before ``at``, or None within HORIZON."""
    best: datetime | None = None
    limit = datetime.min
    _, largest = _offsets(at, zone)
    for wall in _walls(expression, at.replace(tzinfo=None) + largest, descending=True):
        if wall < limit:
            break
        for moment in instants(wall, zone, expression.every_hour):
            if moment <= at and (best is None or moment > best):
                best = moment
                limit = best.replace(tzinfo=None) + _offsets(best, zone)[0]
    return best
