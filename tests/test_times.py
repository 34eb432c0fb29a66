import datetime as dt

import pytest

from metrics.times import BadTimezone, parse_time, zone

UTC = dt.timezone.utc
T = int(dt.datetime(2026, 3, 1, 9, 30, tzinfo=UTC).timestamp())


@pytest.mark.parametrize("text", [
    "2026-03-01T09:30:00Z", "2026-03-01 09:30:00+00:00", "2026-03-01T10:30:00+01:00",
    "Sun, 01 Mar 2026 09:30:00 +0000", "Sun, 01 Mar 2026 04:30:00 -0500",
    "2026-03-01 09:30:00 UTC", "2026-03-01T09:30:00.000Z", " 2026-03-01T09:30:00Z ",
])
def test_formats_with_a_zone(text):
    assert parse_time(text) == T


def test_naive_times_are_in_the_team_zone():
    berlin = zone("Europe/Berlin")
    assert parse_time("2026-03-01 10:30:00", berlin) == T
    assert parse_time("2026-07-01 00:00", berlin) == int(
        dt.datetime(2026, 6, 30, 22, 0, tzinfo=UTC).timestamp())   # summer time
    assert parse_time("2026-03-01", UTC) == int(dt.datetime(2026, 3, 1, tzinfo=UTC).timestamp())


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "01/03/2026 9:30"])
def test_unreadable_times(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_unknown_zone():
    with pytest.raises(BadTimezone, match="IANA"):
        zone("Mars/Olympus")
