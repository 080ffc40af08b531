"""`CronSchedule`: when a cron job's ticks fall, on the wall clock of an IANA time zone.

croniter parses and validates the expression; the tick search itself is a small calendar walk
over croniter's expanded fields (a fresh croniter costs ~200 µs, a tick here ~10 µs), done on
naive local wall times and then mapped to real instants with the DST rules documented on
`CronSchedule`. How the two day fields combine is decided here, not by croniter (see `_Days`).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from .exceptions import ConfigurationError

__all__ = ["CronSchedule"]

_EXPECTED = (
    "expected 5 fields (minute hour day month weekday), 6 with leading seconds "
    "(second minute hour day month weekday), or an alias like @daily"
)
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Zones that never change offset: no DST mapping needed.
_UTC_NAMES = frozenset(
    {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/GMT", "GMT", "Etc/Universal", "Universal", "Zulu"}
)
# An hour field that covers every hour ("*", "*/n", "0-23", "0-23/n"): an interval job.
_WILDCARD_HOUR = re.compile(r"^(\*|0-23)(/\d+)?$")
# croniter's random (R) and hashed (H) values: they differ between processes.
_RANDOM_OR_HASHED = re.compile(r"^[hr](\(|/|$)", re.IGNORECASE)
# Quartz's and Cronos's "last Friday of the month", 5L or FRIL; croniter spells it L5.
_LAST_WEEKDAY = re.compile(r"^([0-7]|sun|mon|tue|wed|thu|fri|sat)l$", re.IGNORECASE)
# A range, maybe with a step: croniter reads one whose ends are equal ("9-9") as the whole field.
_RANGE = re.compile(r"^([a-z0-9]+)-([a-z0-9]+)(/\d+)?$", re.IGNORECASE)
_WEEKDAY_NUMBERS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MONTH_NUMBERS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_LAST_DAY = {"l": 31}  # as a range's end ("31-L"), as croniter reads it
_DAY, _MONTH, _WEEKDAY = 2, 3, 4  # field indexes in the 5-field form
# How far the calendar walk looks: every satisfiable expression fires within ~40 years.
_MAX_YEARS = 100
# Wider than any DST shift (at most 2 h), so a transition this close is always seen.
_DST_WINDOW = timedelta(hours=3)
_ONE_SECOND = timedelta(seconds=1)
_ZERO = timedelta(0)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ALL_DAYS = {n: tuple(range(1, n + 1)) for n in (28, 29, 30, 31)}
_PROBE_START = datetime(2000, 1, 1)

_Time = tuple[int, int, int]


def _days_in_month(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _DAYS_IN_MONTH[month - 1]


def _cron_weekday(year: int, month: int, day: int) -> int:
    """0 = Sunday … 6 = Saturday, as in cron."""
    return (datetime(year, month, day).weekday() + 1) % 7


def _nearest_weekday(year: int, month: int, day: int) -> int:
    """The Monday-to-Friday day closest to ``day`` within its month (cron's ``W``)."""
    last = _days_in_month(year, month)
    day = min(day, last)
    weekday = datetime(year, month, day).weekday()  # 0 = Monday
    if weekday < 5:
        return day
    if weekday == 5:  # Saturday: the Friday before, unless that is last month
        return day - 1 if day > 1 else day + 2
    return day + 1 if day < last else day - 2  # Sunday: the Monday after, or the Friday


def _ints(values: Sequence[object]) -> frozenset[int] | None:
    """croniter's expansion of one field as a set of ints; None for the wildcard."""
    if "*" in values:
        return None
    return frozenset(v for v in values if isinstance(v, int))


def _value(text: str, names: dict[str, int]) -> int | None:
    return int(text) if text.isdigit() else names.get(text.lower())


def _normalize(item: str, index: int) -> str:
    """One item of field ``index`` (5-field numbering) as croniter reads it the cron way.

    ``9-9``, ``9-9/2`` and ``31-L`` become one value (croniter would read the whole field,
    as cron does not), and so does ``7-0`` in the day of week (cronie reads Sunday).
    ``5L`` and ``FRIL``, the last Friday of the month, become croniter's ``L5``.
    """
    names = {_DAY: _LAST_DAY, _MONTH: _MONTH_NUMBERS, _WEEKDAY: _WEEKDAY_NUMBERS}.get(index, {})
    found = _RANGE.match(item)
    if found is not None:
        low, high = _value(found.group(1), names), _value(found.group(2), names)
        if low is not None and (low == high or (index == _WEEKDAY and (low, high) == (7, 0))):
            return found.group(1)
    found = _LAST_WEEKDAY.match(item) if index == _WEEKDAY else None
    if found is not None:
        return f"L{_value(found.group(1), _WEEKDAY_NUMBERS)}"
    return item


def _probe(item: str, index: int) -> croniter:
    """croniter's reading of one item of a day field, alone in an otherwise open expression."""
    fields = ["0", "0", "*", "*", "*"]
    fields[index] = item
    return croniter(" ".join(fields), _PROBE_START)


class _Days:
    """The two day fields of an expression, and the days of a month on which it fires.

    Each field is the union of its comma-separated items. The fields combine as in Vixie cron
    and cronie: when either field's text begins with ``*`` (``*``, ``*/2``, ``*,5``; also
    Quartz's ``?``), a day must match both; when both are restricted, matching either one is
    enough. ``L``, ``W``, ``#`` and ``dL`` items are restrictions like any other. croniter
    reads each item (its ranges, steps, names and validation); the combination is done here,
    because croniter both intersects ``#`` and ``W`` with the other field and unions ``*/2``.
    """

    def __init__(self, day_of_month: str, day_of_week: str) -> None:
        plain: set[int] = set()
        nearest: set[int] = set()
        self.last = False
        for item in day_of_month.split(","):
            probe = _probe(item, 2)
            if probe.nearest_weekday:
                nearest.update(int(d) for d in probe.nearest_weekday)
                continue
            for value in probe.expanded[2]:
                if value == "*":
                    plain.update(range(1, 32))
                elif value == "l":
                    self.last = True
                else:
                    plain.add(int(value))
        weekdays: set[int] = set()
        nth: set[tuple[int, int]] = set()
        for item in day_of_week.split(","):
            probe = _probe(item, 4)
            if not probe.nth_weekday_of_month:
                values = probe.expanded[4]
                weekdays.update(range(7) if "*" in values else (int(v) for v in values))
                continue
            for key, which in probe.nth_weekday_of_month.items():
                for weekday in range(7) if str(key) == "*" else (int(key),):
                    # n counts from the first (1..5); -1 is the last one ("L5", "5L").
                    nth.update((weekday, -1 if n == "l" else int(n)) for n in which)
        self.plain = frozenset(plain)
        self.nearest = frozenset(nearest)
        self.weekdays = frozenset(weekdays)
        self.nth = tuple(sorted(nth))
        self.both = day_of_month.startswith(("*", "?")) or day_of_week.startswith(("*", "?"))
        all_by_month = len(self.plain) == 31
        all_by_week = len(self.weekdays) == 7
        self.every_day = (all_by_month and all_by_week) or (
            not self.both and (all_by_month or all_by_week)
        )
        self._cache: dict[tuple[int, int], tuple[int, ...]] = {}

    def in_month(self, year: int, month: int) -> tuple[int, ...]:
        """The days of ``month`` (1..31, ascending) that match."""
        length = _days_in_month(year, month)
        if self.every_day:
            return _ALL_DAYS[length]
        cached = self._cache.get((year, month))
        if cached is not None:
            return cached
        by_month = {d for d in self.plain if d <= length}
        if self.last:
            by_month.add(length)
        by_month.update(_nearest_weekday(year, month, d) for d in self.nearest)
        first = _cron_weekday(year, month, 1)
        by_week = {d for d in range(1, length + 1) if (first + d - 1) % 7 in self.weekdays}
        for weekday, n in self.nth:
            same = range(1 + (weekday - first) % 7, length + 1, 7)
            if n <= len(same):
                by_week.add(same[n - 1] if n > 0 else same[-1])
        chosen = by_month & by_week if self.both else by_month | by_week
        result = tuple(sorted(chosen))
        if len(self._cache) > 512:
            self._cache.clear()
        self._cache[(year, month)] = result
        return result


class _Fields:
    """The expanded fields of one expression, and the naive wall-clock search over them."""

    def __init__(self, cron: croniter, days: _Days) -> None:
        expanded: list[Sequence[object]] = list(cron.expanded)
        seconds = _ints(expanded[5]) if len(expanded) > 5 else frozenset({0})
        minutes, hours, months = _ints(expanded[0]), _ints(expanded[1]), _ints(expanded[3])
        self.seconds = tuple(sorted(seconds if seconds is not None else range(60)))
        self.minutes = tuple(sorted(minutes if minutes is not None else range(60)))
        self.hours = tuple(sorted(hours if hours is not None else range(24)))
        self.months = frozenset(months if months is not None else range(1, 13))
        self.first_time: _Time = (self.hours[0], self.minutes[0], self.seconds[0])
        self.last_time: _Time = (self.hours[-1], self.minutes[-1], self.seconds[-1])
        self.days = days

    # -- times of day ----------------------------------------------------------------------

    def _time_at_or_after(self, h: int, m: int, s: int) -> _Time | None:
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        i = bisect_left(hours, h)
        if i < len(hours) and hours[i] == h:
            j = bisect_left(minutes, m)
            if j < len(minutes) and minutes[j] == m:
                k = bisect_left(seconds, s)
                if k < len(seconds):
                    return h, m, seconds[k]
                j += 1
            if j < len(minutes):
                return h, minutes[j], seconds[0]
            i += 1
        if i < len(hours):
            return hours[i], minutes[0], seconds[0]
        return None

    def _time_at_or_before(self, h: int, m: int, s: int) -> _Time | None:
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        i = bisect_right(hours, h) - 1
        if i >= 0 and hours[i] == h:
            j = bisect_right(minutes, m) - 1
            if j >= 0 and minutes[j] == m:
                k = bisect_right(seconds, s) - 1
                if k >= 0:
                    return h, m, seconds[k]
                j -= 1
            if j >= 0:
                return h, minutes[j], seconds[-1]
            i -= 1
        if i >= 0:
            return hours[i], minutes[-1], seconds[-1]
        return None

    # -- whole wall-clock times ------------------------------------------------------------

    def at_or_after(self, t: datetime) -> datetime | None:
        """The first matching naive wall time >= ``t`` (whole seconds), or None."""
        year, month, day = t.year, t.month, t.day
        clock: _Time | None = (t.hour, t.minute, t.second)
        limit = year + _MAX_YEARS
        while year <= limit and year <= 9999:
            if month in self.months:
                days = self.days.in_month(year, month)
                for d in days[bisect_left(days, day) :]:
                    if d == day and clock is not None:
                        found = self._time_at_or_after(*clock)
                    else:
                        found = self.first_time
                    if found is not None:
                        return datetime(year, month, d, *found)
            month += 1
            if month > 12:
                month, year = 1, year + 1
            day, clock = 1, None
        return None

    def at_or_before(self, t: datetime) -> datetime | None:
        """The last matching naive wall time <= ``t`` (whole seconds), or None."""
        year, month, day = t.year, t.month, t.day
        clock: _Time | None = (t.hour, t.minute, t.second)
        limit = year - _MAX_YEARS
        while year >= limit and year >= 1:
            if month in self.months:
                days = self.days.in_month(year, month)
                for d in reversed(days[: bisect_right(days, day)]):
                    if d == day and clock is not None:
                        found = self._time_at_or_before(*clock)
                    else:
                        found = self.last_time
                    if found is not None:
                        return datetime(year, month, d, *found)
            month -= 1
            if month < 1:
                month, year = 12, year - 1
            day, clock = 31, None
        return None


def _load_zone(name: object) -> tzinfo:
    hint = "use an IANA name like 'Europe/Prague' or 'UTC'"
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"time zone must be a non-empty string, got {name!r}; {hint}")
    if name in _UTC_NAMES:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ConfigurationError(f"unknown time zone {name!r}; {hint}") from exc


def _offset(instant: datetime, zone: tzinfo) -> timedelta:
    """The zone's UTC offset at a naive-UTC ``instant``."""
    return instant.replace(tzinfo=UTC).astimezone(zone).utcoffset() or _ZERO


def _wall_offsets(wall: datetime, zone: tzinfo) -> tuple[timedelta, timedelta]:
    """The offsets of naive wall time ``wall`` read with fold=0 and fold=1.

    Equal for an ordinary time; fold=0 is the smaller in a gap (the offset before the
    transition) and the larger in a repeated time (its first occurrence).
    """
    first = wall.replace(tzinfo=zone).utcoffset() or _ZERO
    return first, wall.replace(tzinfo=zone, fold=1).utcoffset() or _ZERO


def _transition(lo: datetime, hi: datetime, zone: tzinfo) -> datetime:
    """The first naive-UTC second in ``(lo, hi]`` whose offset differs from the one at ``lo``."""
    before = _offset(lo, zone)
    lo_s, hi_s = 0, int((hi - lo).total_seconds())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if _offset(lo + timedelta(seconds=mid), zone) == before:
            lo_s = mid
        else:
            hi_s = mid
    return lo + timedelta(seconds=hi_s)


def _floor_second(t: datetime) -> datetime:
    return t.replace(microsecond=0) if t.microsecond else t


@dataclass(frozen=True)
class CronSchedule:
    """A cron expression evaluated on the wall clock of an IANA time zone.

    Expressions: standard 5 fields ``minute hour day-of-month month day-of-week``; 6 fields
    with a *leading* seconds field (the Quartz/Cronos/Hangfire convention, so
    ``*/10 * * * * *`` is every 10 seconds); and the aliases ``@yearly``/``@annually``,
    ``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly``. Within the fields,
    everything croniter accepts works: ranges, lists, steps, ``MON``/``JAN`` names, ``L``,
    ``W`` and ``#``, plus ``5L``/``FRIL`` for the last Friday. Random and hashed values
    (``R``, ``H``) are refused: every process of a cluster must compute the same ticks.

    Days, as in Vixie cron and cronie: each day field matches a day when any of its items
    does. If either day field begins with ``*`` (``*``, ``*/2``; or is ``?``), a day must
    match both fields; otherwise matching either is enough, whatever the items are (``L``,
    ``W``, ``#`` included): ``0 0 8 * 5#3`` fires on the 8th and on third Fridays.

    Daylight-saving time (ticks are local wall times of ``timezone``):

    * A tick in a **skipped** local time (the spring-forward gap, e.g. 02:30 on 2026-03-29
      in Europe/Prague) fires once, **at the end of the gap** (03:00 local, the transition
      instant). Several ticks inside one gap coalesce into that single run, together with a
      tick at the gap's end itself.
    * A tick in a **repeated** local time (fall-back, e.g. 02:30 on 2026-10-25 in
      Europe/Prague) fires once, at its **first occurrence** (summer time), when the hour
      field names fixed hours. When the hour field covers every hour (``*``, ``*/n``,
      ``0-23``, ``0-23/n``: "every N minutes/hours" jobs), ticks fire in **both** passes,
      because they are distinct real instants and skipping them would leave a one-hour
      hole: ``*/30 * * * *`` fires at 02:00 CEST, 02:30 CEST, 02:00 CET, 02:30 CET, 03:00 CET.
    * ``t = schedule.next_tick(t)`` yields strictly increasing instants; no tick repeats.

    Construct with `CronSchedule.parse` (or the constructor: both validate). Invalid
    expressions, unknown zones and expressions that can never fire (``0 0 30 2 *``) raise
    `ConfigurationError` naming the problem.
    """

    expression: str
    timezone: str = "UTC"
    _zone: tzinfo = field(init=False, repr=False, compare=False)
    _fields: _Fields = field(init=False, repr=False, compare=False)
    _wildcard_hour: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        zone = _load_zone(self.timezone)
        fields, wildcard_hour = self._compile(self.expression)
        object.__setattr__(self, "_zone", zone)
        object.__setattr__(self, "_fields", fields)
        object.__setattr__(self, "_wildcard_hour", wildcard_hour)
        reference = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        if fields.at_or_after(reference) is None:
            raise ConfigurationError(
                f"cron expression {self.expression!r} never fires (no such date, like "
                "February 30th); check the day-of-month, month and day-of-week fields"
            )

    @staticmethod
    def _compile(expression: object) -> tuple[_Fields, bool]:
        if not isinstance(expression, str):
            raise ConfigurationError(
                f"cron expression must be a string, got {expression!r}; {_EXPECTED}"
            )
        text = expression.strip()
        if not text:
            raise ConfigurationError(f"empty cron expression; {_EXPECTED}")
        if text.startswith("@"):
            alias = _ALIASES.get(text.lower())
            if alias is None:
                names = ", ".join(_ALIASES)
                raise ConfigurationError(
                    f"unknown cron alias {text!r}; use one of {names}, or 5 or 6 fields"
                )
            text = alias
        parts = text.split()
        if len(parts) not in (5, 6):
            raise ConfigurationError(
                "expected 5 fields (minute hour day month weekday) or 6 with leading seconds,"
                f" got {len(parts)}: {expression!r}"
            )
        for part in parts:
            if any(_RANDOM_OR_HASHED.match(item) for item in part.split(",")):
                raise ConfigurationError(
                    f"invalid cron expression {expression!r}: random (R) and hashed (H) values"
                    " are not supported, since every process must compute the same ticks"
                )
        shift = len(parts) - 5  # the seconds field, if any, comes first
        parts = [
            ",".join(_normalize(item, index - shift) for item in part.split(","))
            for index, part in enumerate(parts)
        ]
        try:
            cron = croniter(" ".join(parts), _PROBE_START, second_at_beginning=shift == 1)
            days = _Days(parts[2 + shift], parts[4 + shift])
        except (CroniterError, ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(
                f"invalid cron expression {expression!r}: {exc}; {_EXPECTED}"
            ) from exc
        return _Fields(cron, days), bool(_WILDCARD_HOUR.match(parts[1 + shift]))

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> CronSchedule:
        """Validate ``expression`` in ``timezone`` (an IANA name); raise `ConfigurationError`."""
        return cls(expression, timezone)

    def describe(self) -> str:
        """The expression and its zone, for logs and the dashboard: ``0 */6 * * * (UTC)``."""
        return f"{self.expression} ({self.timezone})"

    # -- mapping wall times to instants ----------------------------------------------------

    def _first_instant(self, wall: datetime, after: datetime) -> datetime | None:
        """The earliest instant (naive UTC) > ``after`` at which wall time ``wall`` fires.

        Returns None when every occurrence of ``wall`` is at or before ``after``.
        """
        zone = self._zone
        off0, off1 = _wall_offsets(wall, zone)
        if off0 == off1:
            instant = wall - off0
            return instant if instant > after else None
        if off0 < off1:  # skipped: fires at the end of the gap
            end = _transition(wall - off1, wall - off0, zone)
            return end if end > after else None
        first, second = wall - off0, wall - off1  # repeated
        if first > after:
            return first
        if self._wildcard_hour and second > after:
            return second
        return None

    def _instants(self, wall: datetime) -> list[datetime]:
        """Every instant (naive UTC) at which wall time ``wall`` fires, ascending."""
        zone = self._zone
        off0, off1 = _wall_offsets(wall, zone)
        if off0 == off1:
            return [wall - off0]
        if off0 < off1:
            return [_transition(wall - off1, wall - off0, zone)]
        if self._wildcard_hour:
            return [wall - off0, wall - off1]
        return [wall - off0]

    # -- public queries --------------------------------------------------------------------

    @staticmethod
    def _utc(moment: datetime, name: str) -> datetime:
        if not isinstance(moment, datetime):
            raise TypeError(f"{name} must be a datetime, got {type(moment).__name__}")
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(
                f"{name} must be an aware datetime (with tzinfo), got naive {moment.isoformat()};"
                " use datetime.now(UTC) or attach a zone"
            )
        return moment.astimezone(UTC).replace(tzinfo=None)

    def _next_utc(self, after: datetime) -> datetime:
        """The first tick (naive UTC) strictly after the naive-UTC instant ``after``."""
        fields, zone = self._fields, self._zone
        if zone is UTC:
            found = fields.at_or_after(_floor_second(after) + _ONE_SECOND)
            if found is None:
                raise ValueError(f"{self.describe()} has no tick after {after.isoformat()}")
            return found

        offset = _offset(after, zone)
        best: datetime | None = None
        if self._wildcard_hour:
            # A fall-back just ahead repeats wall times we have already passed: their second
            # occurrence is still to come.
            later = _offset(after + _DST_WINDOW, zone)
            if later < offset:
                change = _transition(after, after + _DST_WINDOW, zone)
                wall = fields.at_or_after(_floor_second(change + later))
                if wall is not None and wall < change + offset:
                    best = wall - later

        wall = fields.at_or_after(_floor_second(after + offset) + _ONE_SECOND)
        while wall is not None:
            instant = self._first_instant(wall, after)
            if instant is not None:
                return instant if best is None or instant < best else best
            # A fixed-hour tick whose single (first) occurrence has passed: skip the rest of
            # the repeated range, to its end on the wall clock.
            off0, off1 = _wall_offsets(wall, zone)
            if off0 > off1:
                end = _transition(wall - off0, wall - off1, zone) + off0
                wall = fields.at_or_after(max(end, wall + _ONE_SECOND))
            else:
                wall = fields.at_or_after(wall + _ONE_SECOND)
        if best is not None:
            return best
        raise ValueError(f"{self.describe()} has no tick after {after.isoformat()}")

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after the aware datetime ``after``, as an aware UTC datetime.

        Raises ValueError for a naive ``after``.
        """
        return self._next_utc(self._utc(after, "after")).replace(tzinfo=UTC)

    def previous_tick(self, at_or_before: datetime) -> datetime | None:
        """The latest tick at or before the aware ``at_or_before`` (aware UTC), None if none.

        Used for misfire catch-up; looks back as far as the calendar walk does (decades).
        """
        moment = self._utc(at_or_before, "at_or_before")
        fields, zone = self._fields, self._zone
        if zone is UTC:
            found = fields.at_or_before(_floor_second(moment))
            return None if found is None else found.replace(tzinfo=UTC)

        best: datetime | None = None
        for offset in {_offset(moment, zone), _offset(moment - _DST_WINDOW, zone)}:
            wall = fields.at_or_before(_floor_second(moment + offset))
            while wall is not None:
                fitting = [i for i in self._instants(wall) if i <= moment]
                if fitting:
                    if best is None or fitting[-1] > best:
                        best = fitting[-1]
                    break
                # Every occurrence of `wall` is later than `moment`: so is every wall time
                # above `moment` on the clock `wall` was read with.
                off0 = _wall_offsets(wall, zone)[0]
                wall = fields.at_or_before(min(wall - _ONE_SECOND, _floor_second(moment + off0)))
        if best is None:
            return None
        # `best` is a real tick; walk forward over any later ones (a DST corner case).
        while True:
            following = self._next_utc(best)
            if following > moment:
                return best.replace(tzinfo=UTC)
            best = following

    def ticks(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` ticks strictly after ``after`` (aware), ascending, in UTC."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        moment = self._utc(after, "after")
        result: list[datetime] = []
        for _ in range(count):
            moment = self._next_utc(moment)
            result.append(moment.replace(tzinfo=UTC))
        return result
