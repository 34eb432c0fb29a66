"""Timestamps in: ISO 8601 and RFC 2822 (as Twilio's API writes them). Stored as UTC seconds."""
from __future__ import annotations

import datetime as dt
import email.utils
import re
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import KpiBotError

_UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_TRAILING_ZONE = re.compile(r"\s*(UTC|GMT|Z)$", re.I)

# The days data may hold: SMS and dialers did not exist before 1990, and a date past
# 2100 is a typo. [FIRST_DAY, END_DAY), each time's day as written (in its own zone, or
# the team's for a time without one); anything outside is a bad row.
FIRST_DAY, END_DAY = dt.date(1990, 1, 1), dt.date(2100, 1, 1)
_OUT_OF_RANGE = ("is not between 1990-01-01 and 2100-01-01: no SMS or call data is older, "
                 "and a later date is a typo")


class BadTimezone(KpiBotError):
    pass


@lru_cache(maxsize=64)
def zone(name: str) -> dt.tzinfo:
    if name.startswith("right/"):    # clocks with leap seconds: no team's clock is
        raise BadTimezone(f"'{name}' counts leap seconds, which clocks do not: use "
                          f"'{name[6:]}' instead.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadTimezone(f"Unknown time zone '{name}': use an IANA name such as "
                          "Europe/Berlin or America/New_York.") from None


def parse_time(text: str, tz: dt.tzinfo = _UTC) -> int:
    """Parse a timestamp to UTC unix seconds; naive times are read in ``tz``.

    Accepts ISO 8601 (``2026-03-01T09:30:00Z``, ``2026-03-01 09:30:00+01:00``, a bare date),
    RFC 2822 (``Tue, 01 Mar 2026 09:30:00 +0000``) and a trailing ``UTC``/``GMT``, from
    1990-01-01 up to (not including) 2100-01-01 UTC. Raises ValueError with a readable
    message otherwise.
    """
    s = text.strip()
    try:
        d = dt.datetime.fromisoformat(s)
    except ValueError:
        d = _parse_other(s)
    if d.tzinfo is None:
        d = d.replace(tzinfo=tz)
    if not FIRST_DAY <= d.date() < END_DAY:    # the day as written, in its own zone
        raise ValueError(f"'{s[:40]}' {_OUT_OF_RANGE}")
    return int(d.timestamp() // 1)


def check_day(day: dt.date) -> dt.date:
    """``day`` if it is within the years data may hold (see :func:`parse_time`), else
    ValueError."""
    if not FIRST_DAY <= day < END_DAY:
        raise ValueError(f"'{day.isoformat()}' {_OUT_OF_RANGE}")
    return day


_YEAR = re.compile(r"%(?:%|Y)")


def format_date(when: dt.date | dt.datetime, fmt: str = "%Y-%m-%d") -> str:
    """``when.strftime(fmt)`` with a four-digit year everywhere (glibc's ``%Y`` does not
    pad years below 1000: ``1-01-01``). Use it for every date the product displays:
    ``format_date(d)`` -> ``0001-01-01``, ``format_date(t, "%Y-%m-%d %H:%M")``."""
    if when.year < 1000 and "%Y" in fmt:
        year = f"{when.year:04d}"
        fmt = _YEAR.sub(lambda m: "%%" if m.group() == "%%" else year, fmt)
    return when.strftime(fmt)


def _parse_other(s: str) -> dt.datetime:
    if not s:
        raise ValueError("empty timestamp")
    m = _TRAILING_ZONE.search(s)
    if m and m.start() > 0:
        try:
            return dt.datetime.fromisoformat(s[: m.start()]).replace(tzinfo=_UTC)
        except ValueError:
            pass
    if "," in s or s[:3].isalpha():
        try:
            d = email.utils.parsedate_to_datetime(s)
            if d is not None:
                return d
        except (TypeError, ValueError, IndexError):
            pass
    raise ValueError(f"'{s[:40]}' is not a date or time (use ISO 8601, e.g. 2026-03-01T09:30:00Z)")
