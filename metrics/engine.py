"""The KPI engine: counters for a campaign, period and dimension, read in SQL from the
rollups (whole 15-minute slots), the events (slots a period only partly covers, attribute
columns, reach) and the daily aggregates; turned into KPIs by ``kpis``.

Everything a `/kpi` answer shows (text, JSON, charts) is built from one :class:`Report`.
"""
from __future__ import annotations

import datetime as dt
import difflib
import sqlite3
from dataclasses import dataclass, field

from . import attribution, benchmarks, kpis
from .errors import KpiBotError, NoData, UnknownCampaign
from .names import name_key
from .periods import Period
from .rollup import CALL, KINDS, MESSAGE, SLOT, Kind, slot_sql
from .store import Store
from .times import zone

TIME_DIMS = ("day", "week", "hour", "weekday", "weekday_hour")
EVENT_DIMS = ("segment", "variant", "country", "status", "error", "disposition", "agent",
              "currency")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
CHANNEL_KIND = {"sms": MESSAGE, "call": CALL}

# daily-aggregate columns -> counters, per channel
_DAILY = {
    "sms": {"sent": "sent", "delivered": "delivered", "failed": "failed", "clicks": "clicked",
            "conversions": "converted", "opt_outs": "opted_out", "replies": "replied",
            "complaints": "complaints", "cost_micros": "cost_micros",
            "revenue_micros": "revenue_micros", "new_subscribers": "new_subscribers"},
    "call": {"calls_dialed": "dialed", "calls_answered": "answered",
             "calls_abandoned": "abandoned", "talk_seconds": "talk_seconds",
             "conversions": "converted", "cost_micros": "cost_micros",
             "revenue_micros": "revenue_micros"},
}
DAILY_KEY = "(daily totals)"
CODE_KEY = "(credited by code)"     # conversions a code gave the campaign, with no message


class BadDimension(KpiBotError):
    pass


@dataclass(frozen=True)
class Campaign:
    id: int
    name: str
    channel: str | None
    goal: str | None

    @property
    def channels(self) -> list[str]:
        return {"sms": ["sms"], "call": ["call"]}.get(self.channel or "", ["sms", "call"])


@dataclass
class Section:
    """One channel's figures for one period."""

    channel: str
    counters: dict
    metrics: dict[str, kpis.Value]
    dispositions: list[tuple[str, int, float | None]] = field(default_factory=list)
    currencies: list[str] = field(default_factory=list)

    @property
    def volume(self) -> int:
        return kpis.volume(self.channel, self.counters)

    @property
    def currency(self) -> str | None:
        """The currency of its money: one code, "mixed currencies", or None."""
        if len(self.currencies) == 1:
            return self.currencies[0]
        return "mixed currencies" if self.currencies else None


@dataclass
class Report:
    campaign: Campaign
    period: Period
    whole: bool                      # the campaign's whole life (no period asked)
    tz: str
    current: dict[str, Section]      # channel -> section
    previous: dict[str, Section] | None
    previous_period: Period | None
    trend_unit: str
    trend: list[tuple[str, dict[str, dict]]]     # (label, channel -> counters), in order
    dim: str | None = None
    breakdown: list[tuple[str, dict[str, Section]]] = field(default_factory=list)
    dim_channel: str | None = None   # the channel the breakdown is about (mixed campaigns)
    benchmarks: dict = field(default_factory=dict)   # (channel, metric) -> Benchmark
    attribution: "Attribution | None" = None          # when the store has conversions

    @property
    def channels(self) -> list[str]:
        return list(self.current)

    def headline(self, channel: str) -> list[kpis.Kpi]:
        return kpis.headline(channel, self.campaign.goal)

    def as_json(self) -> dict:
        """The card as data (``kpibot kpi --json``): campaign, channel, goal, period,
        metrics (each with value, numerator, denominator, unit, and its benchmark where
        there is one), previous, dispositions, trend and breakdown."""
        tz = zone(self.tz)
        c = self.campaign
        out = {
            "campaign": c.name, "channel": c.channel, "goal": c.goal,
            "period": {**self.period.iso(tz), "label": self.period.label, "timezone": self.tz},
            "currency": {ch: sec.currency for ch, sec in self.current.items()},
            "headline": {ch: [k.name for k in self.headline(ch)] for ch in self.channels},
            "metrics": self._with_benchmarks(self._metrics_json(self.current)),
            "previous": None,
        }
        if self.previous:
            out["previous"] = {"period": {**self.previous_period.iso(tz),
                                          "label": self.previous_period.label},
                               "metrics": self._metrics_json(self.previous)}
        for sec in self.current.values():
            if sec.dispositions:
                out["dispositions"] = [{"disposition": n, "count": k, "share": s}
                                       for n, k, s in sec.dispositions]
        several = len(self.channels) > 1
        out["trend"] = {"unit": self.trend_unit, "points": [
            {self.trend_unit: label, **{f"{ch}.{k}" if several else k: v
                                        for ch, c_ in cs.items() for k, v in c_.items()}}
            for label, cs in self.trend]}
        if self.dim:
            out["breakdown"] = [{self.dim: key, "metrics": self._metrics_json(secs)}
                                for key, secs in self.breakdown]
        if self.attribution is not None:
            out["attribution"] = self.attribution.as_json()
        return out

    def _metrics_json(self, sections: dict[str, Section]) -> dict:
        """name -> metric; for a campaign with SMS and calls, "sms.name" and "call.name"."""
        if len(self.channels) == 1:
            (sec,) = sections.values()
            return {n: v.as_json() for n, v in sec.metrics.items()}
        return {f"{ch}.{n}": v.as_json() for ch, sec in sections.items()
                for n, v in sec.metrics.items()}

    def _with_benchmarks(self, metrics: dict) -> dict:
        """A metric with a benchmark carries it: ``{low, high, critical, source, year, url,
        status}``."""
        for ch, sec in self.current.items():
            for k in kpis.REGISTRY[ch].values():
                b = self.benchmarks.get((ch, k.name))
                key = k.name if len(self.channels) == 1 else f"{ch}.{k.name}"
                if b is not None and key in metrics:
                    metrics[key]["benchmark"] = b.as_json(sec.metrics[k.name].value, k.good)
        return metrics


@dataclass
class Attribution:
    """How the conversions on a card were credited: the windows in force, how many went
    each way in the period, and what the store holds that nothing could claim."""

    windows: attribution.Windows
    by_how: dict[str, int]
    currencies: list[str]                 # of the conversions credited in the period
    uncredited: dict[str, int]            # store-wide: type -> conversions

    def as_json(self) -> dict:
        return {**self.windows.as_json(), "credited": dict(self.by_how),
                "revenue_currencies": self.currencies,
                "uncredited": dict(self.uncredited)}


def _attribution(store: Store, camp: Campaign, period: Period,
                 current: dict[str, "Section"]) -> Attribution | None:
    conn = store.conn
    if not attribution.has_conversions(conn):
        return None
    by_how = {}
    for sec in current.values():        # from the rollups: how their conversions came
        c = sec.counters
        named, click = c.get("conversions_named", 0), c.get("conversions_click", 0)
        coded = c.get("coded", 0)
        for how, n in (("named", named), ("click", click),
                       ("delivery", c.get("conversions", 0) - named - click - coded),
                       ("code", coded)):
            if n:
                by_how[how] = by_how.get(how, 0) + n
    return Attribution(attribution.windows_for(conn, camp.id),
                       {h: by_how[h] for h in attribution.HOW if by_how.get(h)},
                       attribution.currencies(conn, camp.id, period.start, period.end),
                       attribution.uncredited_by_type(conn))


class TotalTooLarge(KpiBotError):
    """A sum over a campaign's stored data passes SQLite's 64-bit integers."""


def _sums(conn, sql: str, params, campaign: str) -> list[tuple]:
    """The rows of a query that sums (SUM), all read: SQLite's "integer overflow" (only a
    database filled before the import's limits can hold such totals) is a clear error."""
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "integer overflow" not in str(exc):
            raise
        raise TotalTooLarge(
            f"A total of '{campaign}' is too large to add up (past SQLite's 64-bit integers): "
            "its data holds amounts or counts far beyond real ones. Delete the campaign's "
            "data and import it again: the import now refuses such values.") from None


# -- campaigns -----------------------------------------------------------------------------

def campaigns(store: Store) -> list[dict]:
    """Every campaign with channel, goal, first and last event, and volume."""
    out = []
    for cid, name, channel, goal in store.conn.execute(
            "SELECT id, name, channel, goal FROM campaigns ORDER BY name_key"):
        (lo, hi, sent, dialed), = _sums(
            store.conn,
            f"""SELECT MIN(lo), MAX(hi), SUM(sent), SUM(dialed) FROM (
                SELECT MIN(slot) AS lo, MAX(slot) + {SLOT} AS hi, SUM(sent) AS sent, 0 AS dialed
                FROM message_rollup WHERE campaign_id = ?1 AND dim = ''
                UNION ALL
                SELECT MIN(slot), MAX(slot) + {SLOT}, 0, SUM(dialed)
                FROM call_rollup WHERE campaign_id = ?1 AND dim = '')""", (cid,), name)
        d, = _sums(store.conn, "SELECT MIN(date), MAX(date), SUM(COALESCE(sent, 0)), "
                               "SUM(COALESCE(calls_dialed, 0)) FROM daily WHERE campaign_id = ?",
                   (cid,), name)
        tz = zone(store.timezone())
        first = _local_date(lo, tz) if lo is not None else None
        last = _local_date(hi - 1, tz) if hi is not None else None
        if d[0]:
            first = min(first, d[0]) if first else d[0]
            last = max(last, d[1]) if last else d[1]
        out.append({"campaign": name, "channel": channel, "goal": goal, "first": first,
                    "last": last, "sent": (sent or 0) + (d[2] or 0),
                    "dialed": (dialed or 0) + (d[3] or 0)})
    return out


def campaigns_with_channel(store: Store, channel: str) -> list[Campaign]:
    """Campaigns with any events or daily rows of ``channel`` ('sms' or 'call')."""
    rollup = CHANNEL_KIND[channel].rollup
    return [Campaign(*r) for r in store.conn.execute(
        f"""SELECT id, name, channel, goal FROM campaigns c
            WHERE EXISTS (SELECT 1 FROM {rollup} r WHERE r.campaign_id = c.id)
               OR EXISTS (SELECT 1 FROM daily d WHERE d.campaign_id = c.id AND d.channel = ?)
            ORDER BY name_key""", (channel,))]


def lookup_campaign(store: Store, name: str) -> Campaign | None:
    """The campaign called ``name`` (case-insensitive, Unicode-normalised), or None: one
    index lookup, for parsers that try several ways to read a command."""
    row = store.conn.execute("SELECT id, name, channel, goal FROM campaigns WHERE name_key = ?",
                             (name_key(name),)).fetchone()
    return Campaign(*row) if row else None


SUGGEST_CHARS = 100    # longer names are compared by their first 100 characters


def find_campaign(store: Store, name: str) -> Campaign:
    """The campaign called ``name``, or UnknownCampaign with the closest names."""
    found = lookup_campaign(store, name)
    if found is not None:
        return found
    names = [r[0] for r in store.conn.execute("SELECT name FROM campaigns")]
    return_key = {name_key(n)[:SUGGEST_CHARS]: n for n in names}
    key = name_key(name)[:SUGGEST_CHARS]
    close = difflib.get_close_matches(key, list(return_key), n=3, cutoff=0.5)
    contains = [k for k in return_key if key and key in k and k not in close]
    raise UnknownCampaign(name, [return_key[k] for k in close + contains][:3])


def _local_date(ts: int, tz: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(ts, tz).date().isoformat()


# -- reading counters ------------------------------------------------------------------------

def _offset_segments(tz: dt.tzinfo, start: int, end: int) -> list[tuple[int, int, int]]:
    """[start, end) cut where the zone's UTC offset changes: (from, to, offset seconds)."""
    def off(ts: int) -> int:
        return int(dt.datetime.fromtimestamp(ts, tz).utcoffset().total_seconds())
    out, a, cur = [], start, off(start)
    step = 6 * 3600
    t = start
    while t < end:
        nxt = min(t + step, end)
        o = off(nxt - 1) if nxt == end else off(nxt)
        if o != cur:     # a change within (t, nxt]: find it to the second
            lo, hi = t, nxt
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if off(mid) == cur:
                    lo = mid
                else:
                    hi = mid
            change = hi
            out.append((a, change, cur))
            a, cur = change, off(change)
        t = nxt
    out.append((a, end, cur))
    return [(x, y, o) for x, y, o in out if y > x]


def _time_key(dim: str, slot: str, off: int) -> str:
    local = f"({slot} + {off})"
    day = f"({local} / 86400)"
    return {
        "day": day,
        "week": f"({day} - (({day} + 3) % 7))",
        "hour": f"(({local} % 86400) / 3600)",
        "weekday": f"(({day} + 3) % 7)",
        "weekday_hour": f"((({day} + 3) % 7) * 24 + ({local} % 86400) / 3600)",
        "trend_hour": f"({local} / 3600)",
    }[dim]


class Reader:
    """Counters for one campaign, straight from SQL."""

    def __init__(self, store: Store, campaign: Campaign, tz: dt.tzinfo):
        self.conn = store.conn
        self.campaign = campaign
        self.tz = tz
        self._has_coded: bool | None = None

    def grouped(self, channel: str, start: int, end: int, dim: str | None,
                reach: bool = True) -> dict:
        """key -> counters for events in [start, end); dim None: one key '' (with reach
        unless ``reach`` is false)."""
        kind = CHANNEL_KIND[channel]
        out: dict = {}
        if dim in TIME_DIMS or dim == "trend_hour":
            for a, b, off in _offset_segments(self.tz, start, end):
                self._range(kind, a, b, "", _time_key(dim, "slot", off),
                            _time_key(dim, slot_sql(kind.time), off), out)
        elif dim is None:
            self._range(kind, start, end, "", "''", "''", out)
        elif dim in kind.dims:
            self._range(kind, start, end, dim, "key", kind.dim_sql(dim), out)
        else:    # an imported attribute column: from the events
            path = '$."' + dim.replace('"', '\\"') + '"'
            self._raw(kind, start, end, "COALESCE(json_extract(attrs, ?), '')", out, [path])
        self._daily(channel, start, end, dim, out)
        self._coded(channel, start, end, dim, out)
        if channel == "sms" and reach:
            if dim is None:
                out.setdefault("", {})["reach"] = self.reach(start, end)
        return out

    def _range(self, kind: Kind, start: int, end: int, rdim: str, rkey: str, ekey: str,
               out: dict) -> None:
        a = -(-start // SLOT) * SLOT          # the whole slots inside [start, end)
        b = end // SLOT * SLOT
        if a >= b:
            self._raw(kind, start, end, ekey, out)
            return
        cols = list(kind.counters)
        sums = ", ".join(f"SUM({c})" for c in cols)
        for key, *vals in _sums(
                self.conn,
                f"SELECT {rkey} AS k, {sums} FROM {kind.rollup} WHERE campaign_id = ? AND "
                "dim = ? AND slot >= ? AND slot < ? GROUP BY k",
                (self.campaign.id, rdim, a, b), self.campaign.name):
            _add(out, key, cols, vals)
        if start < a:
            self._raw(kind, start, a, ekey, out)
        if b < end:
            self._raw(kind, b, end, ekey, out)

    def _raw(self, kind: Kind, start: int, end: int, key: str, out: dict,
             params: list | None = None) -> None:
        cols = list(kind.counters)
        sums = ", ".join(f"COALESCE(SUM({e}), 0)" for e in kind.counters.values())
        for k, *vals in _sums(
                self.conn,
                f"SELECT {key} AS k, {sums} FROM {kind.source()} WHERE campaign_id = ? AND "
                f"{kind.time} >= ? AND {kind.time} < ? GROUP BY k",
                (*(params or ()), self.campaign.id, start, end), self.campaign.name):
            _add(out, k, cols, vals)

    def _daily(self, channel: str, start: int, end: int, dim: str | None, out: dict) -> None:
        cols = _DAILY[channel]
        rows = self.conn.execute(
            f"SELECT date, list_size, {', '.join(cols)} FROM daily WHERE campaign_id = ? AND "
            "channel = ? ORDER BY date", (self.campaign.id, channel)).fetchall()
        first_list = None
        for date, list_size, *vals in rows:
            day = dt.date.fromisoformat(date)
            ts = int(dt.datetime.combine(day, dt.time(), self.tz).timestamp())
            if not start <= ts < end:
                continue
            if dim is None:
                key = ""
            elif dim in TIME_DIMS or dim == "trend_hour":
                off = int(dt.datetime.fromtimestamp(ts, self.tz).utcoffset().total_seconds())
                n = (ts + off) // 86400
                key = {"day": n, "week": n - (n + 3) % 7, "weekday": (n + 3) % 7}.get(dim, DAILY_KEY)
            else:
                key = DAILY_KEY
            _add(out, key, list(cols.values()), [v or 0 for v in vals])
            if list_size is not None and first_list is None and dim is None:
                first_list = list_size
                out[key]["list_size_start"] = list_size

    def _coded(self, channel: str, start: int, end: int, dim: str | None, out: dict) -> None:
        """Conversions a code credited to the campaign (no message claimed them): in the
        period of their own time, under the campaign's channel (SMS when it has both).
        Whole slots from ``code_rollup``, the part slots at the edges from the
        conversions themselves."""
        if channel != ("call" if self.campaign.channel == "call" else "sms"):
            return
        if self._has_coded is None:
            self._has_coded = self.conn.execute(
                "SELECT 1 FROM code_rollup WHERE campaign_id = ? LIMIT 1",
                (self.campaign.id,)).fetchone() is not None
        if not self._has_coded:
            return
        if dim in TIME_DIMS or dim == "trend_hour":
            parts = [(a, b, lambda col, off=off: _time_key(dim, col, off))
                     for a, b, off in _offset_segments(self.tz, start, end)]
        else:
            literal = "''" if dim is None else f"'{CODE_KEY}'"
            parts = [(start, end, lambda col: literal)]
        cols = ["conversions", "conversion_revenue_micros", "coded"]
        cid = self.campaign.id
        for a, b, key in parts:
            lo, hi = -(-a // SLOT) * SLOT, b // SLOT * SLOT     # the whole slots inside
            reads = [(a, b)] if lo >= hi else [(a, lo), (hi, b)]
            if lo < hi:
                for k, n, rev in self.conn.execute(
                        f"SELECT {key('slot')} AS k, SUM(conversions), SUM(revenue_micros) FROM "
                        "code_rollup WHERE campaign_id = ? AND slot >= ? AND slot < ? GROUP BY k",
                        (cid, lo, hi)):
                    _add(out, k, cols, [n, rev, n])
            for x, y in reads:
                if x >= y:
                    continue
                for k, n, rev in self.conn.execute(
                        f"SELECT {key('credited_at')} AS k, COUNT(*), "
                        "SUM(COALESCE(revenue_micros, 0)) FROM conversions INDEXED BY "
                        "conversions_coded WHERE campaign_id = ? AND credited_at >= ? AND "
                        "credited_at < ? AND how = 'code' AND NOT cancelled GROUP BY k",
                        (cid, x, y)):
                    _add(out, k, cols, [n, rev, n])

    def reach(self, start: int, end: int) -> int:
        """Distinct recipients with a delivered message in [start, end): for the whole
        campaign the size of its recipient set, otherwise the period's deliveries whose
        recipient had no delivery since before ``start`` (one range of the deliveries
        table, about 0.1 µs a delivery, no sort)."""
        cid = self.campaign.id
        first, last = (self.conn.execute(f"SELECT {agg}(sent_at) FROM deliveries WHERE "
                                         "campaign_id = ?", (cid,)).fetchone()[0]
                       for agg in ("MIN", "MAX"))
        if first is None or start > last or end <= first:
            return 0
        if start <= first and end > last:
            return self.conn.execute("SELECT COUNT(*) FROM campaign_recipients WHERE "
                                     "campaign_id = ?", (cid,)).fetchone()[0]
        return self.conn.execute(
            "SELECT COUNT(*) FROM deliveries WHERE campaign_id = ? AND sent_at >= ? AND "
            "sent_at < ? AND (prev_at IS NULL OR prev_at < ?)",
            (cid, start, end, start)).fetchone()[0]

    def extent(self) -> tuple[int, int] | None:
        """[first, last) of the campaign's data, whole slots / local days."""
        lo = hi = None
        for kind in KINDS.values():
            a, b = self.conn.execute(f"SELECT MIN(slot), MAX(slot) FROM {kind.rollup} WHERE "
                                     "campaign_id = ? AND dim = ''", (self.campaign.id,)).fetchone()
            if a is not None:
                lo = a if lo is None else min(lo, a)
                hi = b + SLOT if hi is None else max(hi, b + SLOT)
        a, b = self.conn.execute("SELECT MIN(slot), MAX(slot) FROM code_rollup WHERE "
                                 "campaign_id = ?", (self.campaign.id,)).fetchone()
        if a is not None:
            lo = a if lo is None else min(lo, a)
            hi = b + SLOT if hi is None else max(hi, b + SLOT)
        a, b = self.conn.execute("SELECT MIN(date), MAX(date) FROM daily WHERE campaign_id = ?",
                                 (self.campaign.id,)).fetchone()
        if a is not None:
            da = int(dt.datetime.combine(dt.date.fromisoformat(a), dt.time(), self.tz).timestamp())
            db = int(dt.datetime.combine(dt.date.fromisoformat(b) + dt.timedelta(days=1),
                                         dt.time(), self.tz).timestamp())
            lo = da if lo is None else min(lo, da)
            hi = db if hi is None else max(hi, db)
        return None if lo is None else (lo, hi)

    def channels_with_data(self) -> list[str]:
        found = []
        for channel, kind in CHANNEL_KIND.items():
            if self.conn.execute(f"SELECT 1 FROM {kind.rollup} WHERE campaign_id = ? LIMIT 1",
                                 (self.campaign.id,)).fetchone() or self.conn.execute(
                    "SELECT 1 FROM daily WHERE campaign_id = ? AND channel = ? LIMIT 1",
                    (self.campaign.id, channel)).fetchone():
                found.append(channel)
        return found

    def attributes(self) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT name FROM attribute_names WHERE campaign_id = ? ORDER BY name",
            (self.campaign.id,))]


def _add(out: dict, key, cols: list[str], vals) -> None:
    c = out.get(key)
    if c is None:
        out[key] = dict(zip(cols, vals))
    else:
        for name, v in zip(cols, vals):
            c[name] = c.get(name, 0) + v


# -- the report -----------------------------------------------------------------------------

def _section(reader: Reader, channel: str, counters: dict, start: int, end: int) -> Section:
    sec = Section(channel, counters, kpis.compute(channel, counters))
    if channel == "call":
        disp = reader.grouped("call", start, end, "disposition")
        total = sum(c.get("calls", 0) for c in disp.values())
        sec.dispositions = sorted(
            ((k or "(no disposition)", c.get("calls", 0), c.get("calls", 0) / total if total else None)
             for k, c in disp.items() if k != DAILY_KEY and c.get("calls", 0)),
            key=lambda x: -x[1])
    cur = reader.grouped(channel, start, end, "currency")
    sec.currencies = sorted(k for k, c in cur.items()
                            if k and k != DAILY_KEY and c.get("cost_micros", 0))
    return sec


def _trend_unit(seconds: int) -> str:
    if seconds <= 3 * 86400:
        return "hour"
    if seconds <= 120 * 86400:
        return "day"
    return "week"


def _label(dim: str, key, tz: dt.tzinfo) -> str:
    if key in (DAILY_KEY, CODE_KEY):
        return key
    if dim in ("day", "week"):
        return (dt.date(1970, 1, 1) + dt.timedelta(days=int(key))).isoformat()
    if dim == "hour":
        return f"{int(key):02d}:00"
    if dim == "trend_hour":
        return (dt.datetime(1970, 1, 1) + dt.timedelta(hours=int(key))).strftime("%m-%d %H:00")
    if dim == "weekday":
        return WEEKDAYS[int(key)]
    if dim == "weekday_hour":
        return f"{WEEKDAYS[int(key) // 24]} {int(key) % 24:02d}"
    return str(key) if key != "" else "(none)"


def report(store: Store, campaign: str | Campaign, period: Period | None = None,
           by: str | None = None, *, now: int | None = None,
           with_benchmarks: bool = True, with_attribution: bool | None = None) -> Report:
    """Everything `/kpi <campaign> [period] [by D]` shows (``with_benchmarks``: and the
    benchmarks beside its KPIs, which reads the team's benchmarks file;
    ``with_attribution``, by default as ``with_benchmarks``: and how its conversions were
    credited)."""
    tz_name = store.timezone()
    tz = zone(tz_name)
    camp = campaign if isinstance(campaign, Campaign) else find_campaign(store, campaign)
    reader = Reader(store, camp, tz)
    channels = reader.channels_with_data() or camp.channels[:1]
    if by is not None:
        by = _check_dim(reader, by, channels)
    whole = period is None
    if whole:
        ext = reader.extent()
        if ext is None:
            raise NoData(f"'{camp.name}' has no data yet: import its export with "
                              "`kpibot import FILE --campaign NAME`.")
        period = Period(ext[0], ext[1], "whole campaign")
    current = {ch: _section(reader, ch, reader.grouped(ch, period.start, period.end, None)
                            .get("", {}), period.start, period.end) for ch in channels}
    previous = prev_period = None
    if not whole:
        prev_period = period.previous()
        previous = {ch: _section(reader, ch, reader.grouped(ch, prev_period.start,
                                                            prev_period.end, None).get("", {}),
                                 prev_period.start, prev_period.end) for ch in channels}
    unit = _trend_unit(period.seconds)
    tdim = {"hour": "trend_hour", "day": "day", "week": "week"}[unit]
    per_channel = {ch: reader.grouped(ch, period.start, period.end, tdim) for ch in channels}
    keys = sorted({k for d in per_channel.values() for k in d if k != DAILY_KEY})
    trend = [(_label(tdim, k, tz), {ch: per_channel[ch].get(k, {}) for ch in channels})
             for k in keys]
    rep = Report(camp, period, whole, tz_name, current, previous, prev_period, unit, trend)
    if with_benchmarks:
        rep.benchmarks = benchmarks.load(store.path)
    if with_benchmarks if with_attribution is None else with_attribution:
        rep.attribution = _attribution(store, camp, period, current)
    if by is not None:
        rep.dim = by
        # a dimension of one channel only (disposition, error) breaks down that channel
        own = [ch for ch in channels if by in CHANNEL_KIND[ch].dims]
        if by not in TIME_DIMS and by != "weekday_hour" and own:
            channels = own
        rep.dim_channel = channels[0]
        groups = {ch: reader.grouped(ch, period.start, period.end, by) for ch in channels}
        order = sorted({k for g in groups.values() for k in g},
                       key=lambda k: (k in (DAILY_KEY, CODE_KEY),
                                      k if by in TIME_DIMS else str(k)))
        if by not in TIME_DIMS:   # biggest first
            order.sort(key=lambda k: (k in (DAILY_KEY, CODE_KEY), -sum(
                _volume(ch, groups[ch].get(k, {})) for ch in channels)))
        rep.breakdown = [
            (_label(by, k, tz), {ch: Section(ch, groups[ch][k], kpis.compute(ch, groups[ch][k]))
                                 for ch in channels if k in groups[ch]})
            for k in order]
    return rep


def _volume(channel: str, counters: dict) -> int:
    return counters.get("messages" if channel == "sms" else "calls", 0) or kpis.volume(
        channel, counters)


def dimensions(reader: Reader, channels: list[str]) -> list[str]:
    dims = list(TIME_DIMS[:4])
    for ch in channels:
        dims += [d for d in CHANNEL_KIND[ch].dims if d not in dims]
    return dims + [a for a in reader.attributes() if a not in dims]


def _check_dim(reader: Reader, by: str, channels: list[str]) -> str:
    known = dimensions(reader, channels)
    if by in known or by == "weekday_hour":
        return by
    lower = {d.lower(): d for d in known}
    if by.lower() in lower:
        return lower[by.lower()]
    close = difflib.get_close_matches(by.lower(), list(lower), n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(lower[c] for c in close)}?" if close else ""
    raise BadDimension(f"'{reader.campaign.name}' cannot be broken down by '{by}'.{hint} "
                       f"Dimensions: {', '.join(known)}.")

