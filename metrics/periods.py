"""Periods in the team's time zone: ``7d``, ``30d``, ``24h``, ``today``, ``this-week``,
``last-week``, ISO dates (``2026-10-01``), months (``2026-10``), and the previous period
of equal length to compare against."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .errors import KpiBotError

_UTC = dt.timezone.utc
_TRAILING = re.compile(r"^(\d{1,4})([hdw])$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
KEYWORDS = ("today", "yesterday", "this-week", "last-week", "this-month", "last-month")


class BadPeriod(KpiBotError):
    pass


@dataclass(frozen=True)
class Period:
    """[start, end) in UTC unix seconds, with how a person would name it, and the period
    it is compared with."""

    start: int
    end: int
    label: str
    prev_start: int | None = None
    prev_end: int | None = None
    prev_label: str = "previous period"

    @property
    def seconds(self) -> int:
        return self.end - self.start

    def previous(self) -> "Period":
        """The period of equal length just before this one: the same span of local days
        (so a week is a week across a daylight-saving change), else the same seconds."""
        if self.prev_start is None:
            return Period(self.start - self.seconds, self.start, self.prev_label)
        return Period(self.prev_start, self.prev_end, self.prev_label)

    def iso(self, tz: dt.tzinfo) -> dict[str, str]:
        return {"start": _local(self.start, tz).isoformat(), "end": _local(self.end, tz).isoformat()}


def is_period(word: str) -> bool:
    w = word.lower()
    return bool(_TRAILING.match(w) or _MONTH.match(w) or w in KEYWORDS or _date(w) is not None)


MIN_YEAR, MAX_YEAR = 1970, 2100


def _date(word: str) -> dt.date | None:
    if len(word) != 10:
        return None
    try:
        d = dt.date.fromisoformat(word)
    except ValueError:
        return None
    return d if MIN_YEAR <= d.year <= MAX_YEAR else None


def _local(ts: int, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz)


def _midnight(day: dt.date, tz: dt.tzinfo) -> int:
    return int(dt.datetime.combine(day, dt.time(), tz).timestamp())


def _days_back(start: int, end: int, days: int, tz: dt.tzinfo, label: str,
               prev_label: str) -> Period:
    """A period and, as its comparison, the same local clock span ``days`` earlier."""
    def back(ts: int) -> int:
        local = _local(ts, tz).replace(tzinfo=None) - dt.timedelta(days=days)
        return int(local.replace(tzinfo=tz).timestamp())
    return Period(start, end, label, back(start), back(end), prev_label)


def resolve(since: str, until: str | None, now: int, tz: dt.tzinfo) -> Period:
    """See :func:`_resolve`; dates too far out for the calendar become a BadPeriod."""
    try:
        return _resolve(since, until, now, tz)
    except (ValueError, OverflowError) as exc:
        raise BadPeriod(f"'{since}{' ' + until if until else ''}' is not a usable period "
                        f"({exc})") from None


def _resolve(since: str, until: str | None, now: int, tz: dt.tzinfo) -> Period:
    """The period ``since`` [``until``] names, at ``now`` (UTC seconds) in zone ``tz``.

    ``7d``/``24h``/``2w`` are trailing windows ending now; ``today``/``this-week``/
    ``this-month`` run from their local start to now; ``yesterday``/``last-week``/
    ``last-month`` are whole local days, Monday-based weeks and months; one date means
    from that local midnight until now, two dates an inclusive range of local days."""
    s = since.lower()
    today = _local(now, tz).date()
    if until is not None:
        a, b = _date(s), _date(until.lower())
        if a is None or b is None:
            raise BadPeriod(f"'{since} {until}': a range is two dates, e.g. 2026-10-01 2026-10-31")
        if b < a:
            raise BadPeriod(f"'{until}' is before '{since}'")
        n = (b - a).days + 1
        return _days_back(_midnight(a, tz), _midnight(b + dt.timedelta(days=1), tz), n, tz,
                          f"{a} to {b}", f"the {n} day{'s' * (n != 1)} before")
    m = _TRAILING.match(s)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        if n * {"h": 3600, "d": 86400, "w": 7 * 86400}[unit] > now - 86400:
            raise BadPeriod(f"'{since}' reaches back before 1970")
        if n == 0:
            raise BadPeriod(f"'{since}' is an empty period")
        seconds = n * {"h": 3600, "d": 86400, "w": 7 * 86400}[unit]
        name = {"h": "hour", "d": "day", "w": "week"}[unit]
        label = f"last {n} {name}{'s' * (n != 1)}"
        return Period(now - seconds, now, label, prev_label=f"the {label[5:]} before")
    if s == "today":
        return _days_back(_midnight(today, tz), now, 1, tz, "today", "yesterday, same hours")
    if s == "yesterday":
        return _days_back(_midnight(today - dt.timedelta(days=1), tz), _midnight(today, tz), 1,
                          tz, "yesterday", "the day before")
    if s in ("this-week", "last-week"):
        monday = today - dt.timedelta(days=today.weekday())
        if s == "this-week":
            return _days_back(_midnight(monday, tz), now, 7, tz, "this week",
                              "last week, same days")
        return _days_back(_midnight(monday - dt.timedelta(days=7), tz), _midnight(monday, tz), 7,
                          tz, "last week", "the week before")
    if s in ("this-month", "last-month"):
        first = today.replace(day=1)
        prev = (first - dt.timedelta(days=1)).replace(day=1)
        if s == "this-month":
            start = _midnight(first, tz)
            prev_start = _midnight(prev, tz)
            # the same stretch of last month, never past its end (31 March vs February)
            return Period(start, now, "this month", prev_start,
                          min(prev_start + (now - start), start), "last month, same days")
        before = (prev - dt.timedelta(days=1)).replace(day=1)
        return Period(_midnight(prev, tz), _midnight(first, tz), "last month",
                      _midnight(before, tz), _midnight(prev, tz), "the month before")
    m = _MONTH.match(s)
    if m:
        try:
            first = dt.date(int(m.group(1)), int(m.group(2)), 1)
        except ValueError:
            raise BadPeriod(f"'{since}' is not a month (use YYYY-MM)") from None
        if not MIN_YEAR <= first.year <= MAX_YEAR - 1:
            raise BadPeriod(f"'{since}' is outside {MIN_YEAR}-{MAX_YEAR}")
        nxt = (first + dt.timedelta(days=32)).replace(day=1)
        before = (first - dt.timedelta(days=1)).replace(day=1)
        return Period(_midnight(first, tz), _midnight(nxt, tz), first.strftime("%B %Y"),
                      _midnight(before, tz), _midnight(first, tz), before.strftime("%B %Y"))
    d = _date(s)
    if d is not None:
        start = _midnight(d, tz)
        if start >= now:
            raise BadPeriod(f"'{since}' is in the future")
        return Period(start, now, f"since {d}", prev_label="the same length before")
    raise BadPeriod(f"'{since}' is not a period (try 7d, 30d, 24h, today, this-week, "
                    "last-week, 2026-10-01 or 2026-10)")
