"""Digests: subscriptions, and what a digest says for a period: every campaign active in
it with the headline KPIs of its goal against the period before, the top movers, the
alerts that fired, and the team's north-star metric first. (When they are due and how
they are posted is ``bot/jobs.py``.)"""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field

from . import kpis
from .engine import Campaign, Reader
from .errors import KpiBotError
from .store import Store, iso, utcnow
from .times import zone

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MIN_MOVER_VOLUME = 100


class DigestError(KpiBotError):
    pass


@dataclass(frozen=True)
class Subscription:
    id: int
    frequency: str          # daily or weekly
    weekday: int | None     # 0 = Monday
    at: str                 # HH:MM
    tz: str
    channel: str | None
    created_by: str | None
    created_at: str | None = None    # ISO 8601, UTC

    @property
    def created_ts(self) -> int | None:
        """When it was added, as UTC seconds: a digest is never due before then."""
        return int(dt.datetime.fromisoformat(self.created_at).timestamp()) \
            if self.created_at else None

    def describe(self) -> str:
        when = "every day" if self.frequency == "daily" else \
            f"every {WEEKDAYS[self.weekday].capitalize()}"
        return f"{when} at {self.at} {self.tz}"


def add(store: Store, frequency: str, at: str, tz: str, *, weekday: int | None = None,
        channel: str | None = None, created_by: str | None = None) -> Subscription:
    if frequency not in ("daily", "weekly"):
        raise DigestError("a digest is daily or weekly")
    if frequency == "weekly" and weekday is None:
        raise DigestError("a weekly digest needs a day, e.g. weekly monday")
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", at)
    if not m:
        raise DigestError(f"'{at}' is not a time of day (HH:MM, e.g. 09:00)")
    zone(tz)   # an unknown zone is an error now
    with store.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO digests(frequency, weekday, at, tz, channel, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (frequency, weekday if frequency == "weekly" else None,
             f"{int(m.group(1)):02d}:{m.group(2)}", tz, channel, created_by, iso(utcnow())))
    return get(store, cur.lastrowid)


_COLUMNS = "id, frequency, weekday, at, tz, channel, created_by, created_at"


def get(store: Store, digest_id: int) -> Subscription:
    row = store.conn.execute(f"SELECT {_COLUMNS} FROM digests WHERE id = ?",
                             (digest_id,)).fetchone()
    if row is None:
        raise DigestError(f"there is no digest #{digest_id} (see `/kpi digest list`)")
    return Subscription(*row)


def subscriptions(store: Store) -> list[Subscription]:
    return [Subscription(*r) for r in store.conn.execute(
        f"SELECT {_COLUMNS} FROM digests ORDER BY id")]


def remove(store: Store, digest_id: int) -> Subscription:
    sub = get(store, digest_id)
    with store.transaction() as conn:
        conn.execute("DELETE FROM digests WHERE id = ?", (digest_id,))
    return sub


def period_for(frequency: str, scheduled_local: dt.datetime) -> tuple[int, int, int, int]:
    """The local days a digest sent at ``scheduled_local`` covers: the day (or the seven
    days) before the day it is sent, and the same stretch before that to compare with."""
    tz = scheduled_local.tzinfo
    day = scheduled_local.date()
    days = 1 if frequency == "daily" else 7

    def midnight(d: dt.date) -> int:
        return int(dt.datetime.combine(d, dt.time(), tz).timestamp())
    end = midnight(day)
    start = midnight(day - dt.timedelta(days=days))
    prev = midnight(day - dt.timedelta(days=2 * days))
    return start, end, prev, start


@dataclass
class Line:
    campaign: str
    channel: str
    goal: str | None
    volume: int
    values: list[tuple[kpis.Kpi, kpis.Value, kpis.Value]]   # (kpi, now, before)


@dataclass
class Digest:
    start: int
    end: int
    tz: str
    northstar: tuple[str, list[tuple[str, kpis.Value]]] | None
    lines: list[Line] = field(default_factory=list)
    movers: list[tuple[str, str, float]] = field(default_factory=list)   # campaign, kpi, delta
    alerts: list[dict] = field(default_factory=list)

    def as_json(self) -> dict:
        """The digest as data (``kpibot digest preview --json``)."""
        return {"start": self.start, "end": self.end, "campaigns": [
            {"campaign": ln.campaign, "channel": ln.channel, "volume": ln.volume,
             "metrics": {k.name: {"now": a.as_json(), "before": b.as_json()}
                         for k, a, b in ln.values}} for ln in self.lines],
            "movers": self.movers, "alerts": self.alerts}


def build(store: Store, start: int, end: int, prev_start: int, prev_end: int,
          tz_name: str | None = None) -> Digest:
    tz_name = tz_name or store.timezone()
    tz = zone(tz_name)
    north = store.get_setting("northstar")
    digest = Digest(start, end, tz_name, (north, []) if north else None)
    for cid, name, chan, goal in store.conn.execute(
            "SELECT id, name, channel, goal FROM campaigns ORDER BY name_key").fetchall():
        camp = Campaign(cid, name, chan, goal)
        reader = Reader(store, camp, tz)
        for channel in reader.channels_with_data():
            now_c = reader.grouped(channel, start, end, None).get("", {})
            volume = kpis.volume(channel, now_c)
            if not volume:
                continue
            before_c = reader.grouped(channel, prev_start, prev_end, None).get("", {})
            now_v, before_v = kpis.compute(channel, now_c), kpis.compute(channel, before_c)
            heads = kpis.headline(channel, goal)
            digest.lines.append(Line(name, channel, goal, volume,
                                     [(k, now_v[k.name], before_v[k.name]) for k in heads]))
            if north and north in now_v:
                digest.northstar[1].append((name, now_v[north]))
            for k in heads:
                a, b = now_v[k.name], before_v[k.name]
                if k.proportion and a.value is not None and \
                        b.value is not None and \
                        (a.denominator or 0) >= MIN_MOVER_VOLUME and \
                        (b.denominator or 0) >= MIN_MOVER_VOLUME:
                    digest.movers.append((name, k.label, a.value - b.value))
    digest.lines.sort(key=lambda ln: (-ln.volume, ln.campaign))
    digest.movers.sort(key=lambda m: -abs(m[2]))
    digest.movers = digest.movers[:5]
    for key, payload in store.conn.execute(
            "SELECT key, payload FROM posts WHERE kind = 'alert' AND claimed_at >= ? AND "
            "claimed_at < ? ORDER BY claimed_at", (start, end)):
        p = json.loads(payload)
        if p.get("kind") == "firing":
            digest.alerts.append(p)
    return digest
