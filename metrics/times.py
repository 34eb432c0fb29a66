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


class BadTimezone(KpiBotError):
    pass


@lru_cache(maxsize=64)
def zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadTimezone(f"Unknown time zone '{name}': use an IANA name such as "
                          "Europe/Berlin or America/New_York.") from None


def parse_time(text: str, tz: dt.tzinfo = _UTC) -> int:
    """Parse a timestamp to UTC unix seconds; naive times are read in ``tz``.

    Accepts ISO 8601 (``2026-03-01T09:30:00Z``, ``2026-03-01 09:30:00+01:00``, a bare date),
    RFC 2822 (``Tue, 01 Mar 2026 09:30:00 +0000``) and a trailing ``UTC``/``GMT``.
    Raises ValueError with a readable message otherwise.
    """
    s = text.strip()
    try:
        d = dt.datetime.fromisoformat(s)
    except ValueError:
        d = _parse_other(s)
    if d.tzinfo is None:
        d = d.replace(tzinfo=tz)
    return int(d.timestamp() // 1)


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
