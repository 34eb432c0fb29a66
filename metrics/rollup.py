"""Rollups: per campaign, per 15-minute UTC slot and per dimension value, the counters every
KPI is made of, so that a `/kpi` answer reads thousands of rows instead of millions.

The tables live in the schema (``store.m002_rollups``); this module says what fills them.
A slot of 15 minutes lines up with every time zone's hour and day boundaries (all offsets
in use are multiples of 15 minutes), so a day, hour or weekday in the team's zone is an
exact sum of slots. Periods that start or end inside a slot (``24h`` from now) read those
two edge slots from the events themselves (see ``engine``), so figures stay exact.

How they are kept up to date: rows the importer inserts are aggregated batch by batch
(:meth:`Rollup.add_new_rows`, by rowid range); rows that are updated or deleted anywhere
mark their old and new slot dirty through triggers, and dirty slots are recomputed from
the events (:meth:`Rollup.finish`). ``tests/test_kpis.py`` checks rollups against a
from-scratch computation after imports, re-imports, reply attribution and deletes.

Next to this module: ``reach`` keeps the reach tables (``deliveries``,
``campaign_recipients``), refreshed from here; ``rollup_counter`` is the importer's numpy
counter of new rows, handed to :meth:`Rollup.add_new_rows` (it imports this module, never
the other way round).
"""
from __future__ import annotations

import re
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from .errors import ImportRejected
from .reach import refresh_reach

SLOT = 900   # seconds

# The most a campaign's cost or revenue (micro-units, per kind of event) may add up to.
# SQLite's SUM() fails with "integer overflow" past 2**63 - 1; keeping every campaign
# total below half of that leaves every sum the engine takes (a part of a total) exact.
# One amount is at most 1e10 currency units (importers.values.MAX_AMOUNT), so only a
# file of hundreds of such amounts comes near: the import that would pass it is refused.
MAX_TOTAL_MICROS = 1 << 62
_MONEY = ("cost_micros", "revenue_micros", "conversion_revenue_micros")


class TotalTooLarge(ImportRejected):
    """An import would make a campaign's total too large to add up; nothing changed."""


def slot_sql(col: str) -> str:
    """The start of ``col``'s 15-minute slot (a floor, also before 1970)."""
    return f"({col} - ((({col} % {SLOT}) + {SLOT}) % {SLOT}))"


@dataclass(frozen=True)
class Kind:
    name: str             # 'message' or 'call'
    table: str            # the events table
    rollup: str           # its rollup table
    time: str             # the event time column
    counters: dict        # rollup column -> SQL expression over one event (summed)
    dims: dict            # dimension name -> the column holding its key ('' when missing)
    # For counting new rows outside SQL (rollup_counter.NewRowCounter): the counters that
    # are a plain sum of a column, and every column the other counters read. Each counter
    # is still evaluated by SQLite, once per distinct combination of those columns.
    summed: tuple = ()
    profile: tuple = ()
    # The conversions credited to an event (metrics.attribution) are kept beside it, in a
    # narrow table of their own with a row only for an event that has any (``credits``,
    # keyed by ``credit_key``): crediting a million orders writes a few MB there instead
    # of rewriting most pages of the events table. Counters read its columns as if they
    # were the event's (NULL, read as 0, when it has no row).
    credits: str = ""
    credit_key: str = ""
    credit_columns: tuple = ()

    def dim_sql(self, dim: str) -> str:
        """The SQL expression for ``dim``'s key."""
        return f"COALESCE({self.dims[dim]}, '')"

    def source(self, alias: str = "e", table: str | None = None) -> str:
        """The events (``table``, else the events table) as ``alias``, with their
        credited conversions beside them: what counters are read from."""
        return f"{table or self.table} AS {alias}{self.credits_join(alias)}"

    def credits_join(self, alias: str = "e") -> str:
        return (f" LEFT JOIN {self.credits} ON {self.credits}.{self.credit_key} = "
                f"{alias}.id")


_SENT = "('sent', 'delivered', 'undelivered', 'failed', 'unknown')"
# A lead: a call with a lead disposition (one that names a lead: Lead, Hot lead, Qualified
# lead; or Interested, Qualified), or one credited with a conversion of type lead (bit 8 of
# conversion_types, see metrics.attribution.TYPE_BIT); sold: one credited with a sale too.
LEAD_DISPOSITION = ("(' ' || lower(COALESCE(disposition, '')) || ' ') GLOB '*[^a-z]lead[^a-z]*' "
                    "OR lower(trim(COALESCE(disposition, ''))) IN ('interested', 'qualified')")
_LEAD = f"(({LEAD_DISPOSITION}) OR COALESCE(conversion_types, 0) & 8)"
# the columns of the credits tables (store.m007_credits): totals of the conversions
# credited to one event, and of those, how many named it and how many its click won
_CREDITED = ("conversions", "conversion_revenue_micros", "conversions_named",
             "conversions_click")
_ANSWERED = ("status = 'completed' AND (answered_by IS NULL OR answered_by IN ('', 'human')) "
             "AND abandoned = 0")

MESSAGE = Kind(
    "message", "messages", "message_rollup", "sent_at",
    counters={
        "messages": "1",
        "outbound": "direction = 'outbound'",
        "sent": f"direction = 'outbound' AND status IN {_SENT}",
        "delivered": "direction = 'outbound' AND status = 'delivered'",
        "undelivered": "direction = 'outbound' AND status = 'undelivered'",
        "failed": "direction = 'outbound' AND status = 'failed'",
        "clicked": "direction = 'outbound' AND clicked > 0",
        "converted": "CASE WHEN direction = 'outbound' THEN converted ELSE 0 END",
        # an opt-out is flagged on the message it answered; a STOP that answers nothing we
        # know of still counts for the campaign it was imported into
        "opted_out": "(direction = 'outbound' AND opted_out > 0) OR "
                     "(direction = 'inbound' AND reply_to IS NULL AND keyword = 'opt_out')",
        "replied": "direction = 'outbound' AND replied > 0",
        "complaints": "direction = 'outbound' AND spam_complaint > 0",
        "inbound": "direction = 'inbound'",
        # START, YES, UNSTOP: a number joins (or rejoins) the list
        "opted_in": "direction = 'inbound' AND keyword = 'opt_in'",
        "cost_micros": "COALESCE(cost_micros, 0)",
        "revenue_micros": "COALESCE(revenue_micros, 0)",
        # conversions credited to the message from the orders imported (metrics.attribution)
        "conversions": "CASE WHEN direction = 'outbound' THEN COALESCE(conversions, 0) "
                       "ELSE 0 END",
        "conversion_revenue_micros": "COALESCE(conversion_revenue_micros, 0)",
        "conversions_named": "CASE WHEN direction = 'outbound' THEN "
                             "COALESCE(conversions_named, 0) ELSE 0 END",
        "conversions_click": "CASE WHEN direction = 'outbound' THEN "
                             "COALESCE(conversions_click, 0) ELSE 0 END",
    },
    dims={"segment": "segment", "variant": "variant", "country": "country",
          "status": "status", "error": "error_code", "currency": "currency"},
    summed=("cost_micros", "revenue_micros", "conversion_revenue_micros"),
    profile=("direction", "status", "clicked", "converted", "opted_out", "replied",
             "spam_complaint", "keyword", "reply_to", "conversions", "conversions_named",
             "conversions_click"),
    credits="message_credits", credit_key="message_id",
    credit_columns=_CREDITED,
)

CALL = Kind(
    "call", "calls", "call_rollup", "started_at",
    counters={
        "calls": "1",
        "dialed": "status NOT IN ('queued', 'canceled')",
        "answered": _ANSWERED,
        "abandoned": "abandoned > 0 AND status NOT IN ('queued', 'canceled')",
        "voicemail": "status = 'completed' AND answered_by LIKE 'machine%'",
        "converted": "converted",
        "talk_seconds": f"CASE WHEN {_ANSWERED} THEN COALESCE(duration_s, 0) ELSE 0 END",
        "cost_micros": "COALESCE(cost_micros, 0)",
        "revenue_micros": "COALESCE(revenue_micros, 0)",
        "conversions": "COALESCE(conversions, 0)",
        "conversion_revenue_micros": "COALESCE(conversion_revenue_micros, 0)",
        "conversions_named": "COALESCE(conversions_named, 0)",
        "conversions_click": "COALESCE(conversions_click, 0)",
        "leads": _LEAD,
        "leads_sold": f"{_LEAD} AND COALESCE(conversion_types, 0) & 1 > 0",
    },
    dims={"segment": "segment", "variant": "variant", "country": "country",
          "status": "status", "disposition": "disposition", "agent": "agent",
          "currency": "currency"},
    credits="call_credits", credit_key="call_id",
    credit_columns=_CREDITED + ("conversion_types",),
)

KINDS = {"message": MESSAGE, "call": CALL}


def columns_read(kind: Kind, counters: tuple[str, ...], table_columns: list[str]) -> list[str]:
    """The events table's columns that the cells and ``counters`` of ``kind`` are read from
    (each column a counter's SQL names, by word)."""
    words = set(re.findall(r"[a-z_]+", " ".join(kind.counters[c] for c in counters)))
    wanted = {"campaign_id", kind.time, *kind.dims.values()} | words
    return [c for c in table_columns if c in wanted]


def _cube_select(kind: Kind, source: str, where: str) -> str:
    """One pass over events: counters grouped by campaign, slot and every dimension."""
    dims = ", ".join(f"{kind.dim_sql(name)} AS d_{name}" for name in kind.dims)
    sums = ", ".join(f"COALESCE(SUM({expr}), 0) AS {col}" for col, expr in kind.counters.items())
    n = 2 + len(kind.dims)
    return (f"SELECT campaign_id, {slot_sql(kind.time)} AS slot, {dims}, {sums} "
            f"FROM {source} WHERE {where} GROUP BY {', '.join(str(i) for i in range(1, n + 1))}")


class Counted(Protocol):
    """Rows already counted for a rollup outside SQL, as :meth:`Rollup.add_new_rows` takes
    them (``rollup_counter.NewRowCounter``)."""

    def campaign_ids(self) -> set[int]: ...

    def write(self, skip: set[tuple[int, int]] | frozenset = frozenset()) -> None: ...


class Rollup:
    """Keeps one kind's rollup current through one write transaction."""

    def __init__(self, conn: sqlite3.Connection, kind: Kind | str):
        self.conn = conn
        self.kind = KINDS[kind] if isinstance(kind, str) else kind
        self.delta = f"rollup_delta_{self.kind.name}"
        self._started = False
        self._counted: Counted | None = None
        self.after_rowid: int | None = None
        self._touched: set[int] = set()    # campaigns whose totals may have grown
        self.check_totals = True            # refuse a total past MAX_TOTAL_MICROS

    def add_new_rows(self, after_rowid: int, counted: Counted | None = None,
                     counted_upto: int | None = None) -> None:
        """Count the events inserted with rowid > ``after_rowid``: call it once, after the
        inserts (new rows only: updates and deletes reach the rollup through the triggers).
        ``counted`` has already counted those up to rowid ``counted_upto`` (all of them
        when None); the rest take one grouped pass in SQL, which costs about 5 s per
        million rows."""
        self.after_rowid = after_rowid
        self._counted = counted
        start = after_rowid if counted is None else counted_upto
        self._started = start is not None
        if self._started:
            self.conn.execute(f"DROP TABLE IF EXISTS temp.{self.delta}")
            with self._overflow():
                self.conn.execute(f"CREATE TEMP TABLE {self.delta} AS "
                                  + _cube_select(self.kind, self.kind.source(), "e.rowid > ?"),
                                  (start,))
            self._touched.update(cid for (cid,) in self.conn.execute(
                f"SELECT DISTINCT campaign_id FROM temp.{self.delta}"))

    def finish(self) -> None:
        """Merge the counted new rows into the rollup and recompute every dirty slot."""
        k, conn = self.kind, self.conn
        dirty = conn.execute("SELECT campaign_id, slot FROM rollup_dirty WHERE kind = ?",
                             (k.name,)).fetchall()
        if dirty:
            for dim in [""] + list(k.dims):
                conn.executemany(f"DELETE FROM {k.rollup} WHERE campaign_id = ? AND dim = ? "
                                 "AND slot = ?", [(c, dim, s) for c, s in dirty])
        self._touched.update(c for c, _ in dirty)
        if self._started:
            if dirty:   # dirty slots are recomputed whole below, new rows included
                conn.execute(f"DELETE FROM temp.{self.delta} WHERE (campaign_id, slot) IN "
                             "(SELECT campaign_id, slot FROM rollup_dirty WHERE kind = ?)",
                             (k.name,))
            self._merge(f"temp.{self.delta}", add=True)
            conn.execute(f"DROP TABLE temp.{self.delta}")
            self._started = False
        if self._counted is not None:
            self._touched.update(self._counted.campaign_ids())
            self._counted.write(skip=set(dirty))
            self._counted = None
        if dirty:
            conn.execute("DROP TABLE IF EXISTS temp.rollup_redo")
            with self._overflow():
                conn.execute(
                    "CREATE TEMP TABLE rollup_redo AS "
                    + _cube_select(k, f"rollup_dirty AS d JOIN {k.table} AS e ON "
                                      f"e.campaign_id = d.campaign_id AND e.{k.time} >= d.slot "
                                      f"AND e.{k.time} < d.slot + {SLOT}{k.credits_join('e')}",
                                   "d.kind = ?")
                    .replace("SELECT campaign_id,", "SELECT e.campaign_id AS campaign_id,"),
                    (k.name,))
            self._merge("temp.rollup_redo", add=False)
            conn.execute("DROP TABLE temp.rollup_redo")
            conn.execute("DELETE FROM rollup_dirty WHERE kind = ?", (k.name,))
        self._check_totals()
        if k is MESSAGE:
            refresh_reach(conn, self.after_rowid)
            self.after_rowid = None

    def apply_delta(self, old: str, new: str, counters: tuple[str, ...] | None = None,
                    credited: bool = False) -> None:
        """Live changes (``metrics.live.apply``): ``old`` and ``new`` are tables shaped like
        the events table, holding the changed events as they were (absent when new) and
        as they are. Their counters are taken out and put in, cell by cell: a status
        callback costs a few rows of work, not a recount of its slot. The caller's own
        updates marked slots dirty through the triggers; this accounts for them, so the
        marks are cleared (the transaction started with none).

        ``counters``: only these can have changed (the events stayed in their cells, only
        columns these read changed: the conversions credited to a message, say); the
        tables need only the columns :func:`columns_read` names.

        ``credited``: the tables hold the events' credited conversions too (they are what
        changed); else those are read from the credits table (as they are, for both)."""
        k, conn = self.kind, self.conn
        if counters is not None:
            k = replace(k, counters={c: k.counters[c] for c in counters})
        new_src, old_src = ((f"{new} AS e", f"{old} AS e") if credited
                            else (k.source("e", new), k.source("e", old)))
        conn.execute(f"DROP TABLE IF EXISTS temp.{self.delta}")
        with self._overflow():
            conn.execute(f"CREATE TEMP TABLE {self.delta} AS "
                         + _cube_select(k, new_src, "true"))
            conn.execute(f"INSERT INTO temp.{self.delta} " + _cube_select(k, old_src, "true")
                         .replace("COALESCE(SUM(", "-COALESCE(SUM("))
        self._merge(f"temp.{self.delta}", add=True, kind=k)
        if counters is None:
            count = next(iter(k.counters))      # 'messages' or 'calls': events in the cell
            conn.execute(f"DELETE FROM {k.rollup} WHERE {count} = 0 AND (campaign_id, slot) "
                         f"IN (SELECT campaign_id, slot FROM temp.{self.delta})")
        self._touched.update(cid for (cid,) in conn.execute(
            f"SELECT DISTINCT campaign_id FROM temp.{self.delta}"))
        conn.execute(f"DROP TABLE temp.{self.delta}")
        conn.execute("DELETE FROM rollup_dirty WHERE kind = ?", (k.name,))
        self._check_totals()

    def _merge(self, cube: str, add: bool, kind: Kind | None = None) -> None:
        k = kind or self.kind
        # counters left out of a partial delta are 0 in the row offered (the cell is there
        # already, and only the others are added to it)
        rest = [c for c in self.kind.counters if c not in k.counters]
        sums = ", ".join([f"SUM({c})" for c in k.counters] + ["0"] * len(rest))
        cols = ", ".join(list(k.counters) + rest)
        conflict = (" ON CONFLICT (campaign_id, dim, slot, key) DO UPDATE SET "
                    + ", ".join(f"{c} = {c} + excluded.{c}" for c in k.counters)) if add else ""
        for dim, key in [("", "''")] + [(d, f"d_{d}") for d in k.dims]:
            with self._overflow():
                self.conn.execute(
                    f"INSERT INTO {k.rollup} (campaign_id, dim, slot, key, {cols}) "
                    f"SELECT campaign_id, '{dim}', slot, {key}, {sums} FROM {cube} WHERE true "
                    f"GROUP BY campaign_id, slot, {key}{conflict}")

    def _check_totals(self) -> None:
        """Refuse (roll back) what made a campaign's cost or revenue total pass
        :data:`MAX_TOTAL_MICROS`: its campaign totals are read with TOTAL(), which does not
        overflow (a sum that did overflow above, in ``c + excluded.c``, became a REAL)."""
        k, touched, self._touched = self.kind, self._touched, set()
        money = [c for c in _MONEY if c in k.counters]
        if not money or not self.check_totals:
            return
        totals = ", ".join(f"TOTAL({c})" for c in money)
        for cid in sorted(touched):
            got = self.conn.execute(f"SELECT {totals} FROM {k.rollup} WHERE campaign_id = ? "
                                    "AND dim = ''", (cid,)).fetchone()
            for col, total in zip(money, got):
                if total > MAX_TOTAL_MICROS:
                    raise self._too_large(cid, col, total)

    @contextmanager
    def _overflow(self):
        """SQLite's "integer overflow" from SUM() as :class:`TotalTooLarge`, naming the
        campaign (found from its events, with TOTAL())."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "integer overflow" not in str(exc):
                raise
            k = self.kind
            money = [c for c in _MONEY if c in k.counters]
            for cid, *totals in self.conn.execute(
                    f"SELECT campaign_id, {', '.join(f'TOTAL({c})' for c in money)} "
                    f"FROM {k.source()} GROUP BY campaign_id").fetchall():
                for col, total in zip(money, totals):
                    if total > MAX_TOTAL_MICROS:
                        raise self._too_large(cid, col, total) from None
            raise TotalTooLarge("a campaign's totals are too large to add up (SQLite's "
                                "integers are 64-bit); nothing was imported") from None

    def _too_large(self, cid: int, col: str, total: float) -> TotalTooLarge:
        row = self.conn.execute("SELECT name FROM campaigns WHERE id = ?", (cid,)).fetchone()
        # the import in progress, for the message (the driver does not say)
        file = self.conn.execute("SELECT file FROM imports WHERE finished_at IS NULL "
                                 "ORDER BY id DESC LIMIT 1").fetchone()
        what = col.removesuffix("_micros")
        return TotalTooLarge(
            f"campaign '{row[0] if row else cid}' would hold a {what} total of "
            f"{total / 1e6:,.0f}, more than a campaign can add up "
            f"({MAX_TOTAL_MICROS // 1_000_000:,}); nothing was imported",
            file=Path(file[0]).name if file else None)


def rebuild(conn: sqlite3.Connection, kind: Kind | str | None = None) -> None:
    """Recompute rollups from scratch (a migration, or a repair)."""
    for k in ([KINDS[kind] if isinstance(kind, str) else kind] if kind else KINDS.values()):
        conn.execute(f"DELETE FROM {k.rollup}")
        conn.execute("DELETE FROM rollup_dirty WHERE kind = ?", (k.name,))
        r = Rollup(conn, k)
        r.check_totals = False    # what is stored is what it is: only imports are refused
        r.add_new_rows(-1 << 62)
        r.finish()
    refresh_reach(conn, everything=True)
