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
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

SLOT = 900   # seconds


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
    dims: dict            # dimension name -> SQL expression for its key ('' when missing)


_SENT = "('sent', 'delivered', 'undelivered', 'failed', 'unknown')"
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
        "cost_micros": "COALESCE(cost_micros, 0)",
        "revenue_micros": "COALESCE(revenue_micros, 0)",
    },
    dims={
        "segment": "COALESCE(segment, '')",
        "variant": "COALESCE(variant, '')",
        "country": "COALESCE(country, '')",
        "status": "status",
        "error": "COALESCE(error_code, '')",
        "currency": "COALESCE(currency, '')",
    },
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
    },
    dims={
        "segment": "COALESCE(segment, '')",
        "variant": "COALESCE(variant, '')",
        "country": "COALESCE(country, '')",
        "status": "status",
        "disposition": "COALESCE(disposition, '')",
        "agent": "COALESCE(agent, '')",
        "currency": "COALESCE(currency, '')",
    },
)

KINDS = {"message": MESSAGE, "call": CALL}

# a delivered outbound message to a known number: what reach counts
REACHED = "direction = 'outbound' AND status = 'delivered' AND recipient IS NOT NULL"


def _cube_select(kind: Kind, source: str, where: str) -> str:
    """One pass over events: counters grouped by campaign, slot and every dimension."""
    dims = ", ".join(f"{expr} AS d_{name}" for name, expr in kind.dims.items())
    sums = ", ".join(f"COALESCE(SUM({expr}), 0) AS {col}" for col, expr in kind.counters.items())
    n = 2 + len(kind.dims)
    return (f"SELECT campaign_id, {slot_sql(kind.time)} AS slot, {dims}, {sums} "
            f"FROM {source} WHERE {where} GROUP BY {', '.join(str(i) for i in range(1, n + 1))}")


class Rollup:
    """Keeps one kind's rollup current through one write transaction."""

    def __init__(self, conn: sqlite3.Connection, kind: Kind | str):
        self.conn = conn
        self.kind = KINDS[kind] if isinstance(kind, str) else kind
        self.delta = f"rollup_delta_{self.kind.name}"
        self._started = False
        self.after_rowid: int | None = None

    def add_new_rows(self, after_rowid: int) -> None:
        """Count the events inserted with rowid > ``after_rowid``: call it once, after the
        inserts (new rows only: updates and deletes reach the rollup through the triggers).
        One grouped pass over the new rows costs about 5 s per million rows, the price of
        answers that read thousands of rollup rows instead of millions of events."""
        self.conn.execute(f"DROP TABLE IF EXISTS temp.{self.delta}")
        self.conn.execute(f"CREATE TEMP TABLE {self.delta} AS "
                          + _cube_select(self.kind, self.kind.table, "rowid > ?"), (after_rowid,))
        self._started = True
        self.after_rowid = after_rowid

    def finish(self) -> None:
        """Merge the counted new rows into the rollup and recompute every dirty slot."""
        k, conn = self.kind, self.conn
        dirty = conn.execute("SELECT campaign_id, slot FROM rollup_dirty WHERE kind = ?",
                             (k.name,)).fetchall()
        if dirty:
            for dim in [""] + list(k.dims):
                conn.executemany(f"DELETE FROM {k.rollup} WHERE campaign_id = ? AND dim = ? "
                                 "AND slot = ?", [(c, dim, s) for c, s in dirty])
        if self._started:
            if dirty:   # dirty slots are recomputed whole below, new rows included
                conn.execute(f"DELETE FROM temp.{self.delta} WHERE (campaign_id, slot) IN "
                             "(SELECT campaign_id, slot FROM rollup_dirty WHERE kind = ?)",
                             (k.name,))
            self._merge(f"temp.{self.delta}", add=True)
            conn.execute(f"DROP TABLE temp.{self.delta}")
            self._started = False
        if dirty:
            conn.execute("DROP TABLE IF EXISTS temp.rollup_redo")
            conn.execute(
                "CREATE TEMP TABLE rollup_redo AS "
                + _cube_select(k, f"rollup_dirty AS d JOIN {k.table} AS e ON "
                                  f"e.campaign_id = d.campaign_id AND e.{k.time} >= d.slot "
                                  f"AND e.{k.time} < d.slot + {SLOT}", "d.kind = ?")
                .replace("SELECT campaign_id,", "SELECT e.campaign_id AS campaign_id,"),
                (k.name,))
            self._merge("temp.rollup_redo", add=False)
            conn.execute("DROP TABLE temp.rollup_redo")
            conn.execute("DELETE FROM rollup_dirty WHERE kind = ?", (k.name,))
        if k is MESSAGE:
            refresh_reach(conn, self.after_rowid)
            self.after_rowid = None

    def _merge(self, cube: str, add: bool) -> None:
        k = self.kind
        sums = ", ".join(f"SUM({c})" for c in k.counters)
        cols = ", ".join(k.counters)
        conflict = (" ON CONFLICT (campaign_id, dim, slot, key) DO UPDATE SET "
                    + ", ".join(f"{c} = {c} + excluded.{c}" for c in k.counters)) if add else ""
        for dim, key in [("", "''")] + [(d, f"d_{d}") for d in k.dims]:
            self.conn.execute(
                f"INSERT INTO {k.rollup} (campaign_id, dim, slot, key, {cols}) "
                f"SELECT campaign_id, '{dim}', slot, {key}, {sums} FROM {cube} WHERE true "
                f"GROUP BY campaign_id, slot, {key}{conflict}")


_LAG = ("LAG(m.sent_at) OVER (PARTITION BY m.campaign_id, m.recipient "
        "ORDER BY m.sent_at, m.id)")
_REACHED_M = REACHED.replace("direction", "m.direction").replace("status", "m.status") \
    .replace("recipient", "m.recipient")


def refresh_reach(conn: sqlite3.Connection, after_rowid: int | None = None,
                  everything: bool = False) -> None:
    """Keep ``deliveries`` and ``campaign_recipients`` (see the schema) in step with the
    messages: the recipients of rows inserted after ``after_rowid`` are recomputed, and
    every campaign whose deliveries changed otherwise (marked by a trigger) in full."""
    if everything or after_rowid is not None and after_rowid <= 0 and not conn.execute(
            "SELECT 1 FROM deliveries LIMIT 1").fetchone():
        conn.execute("DELETE FROM deliveries")
        conn.execute("DELETE FROM campaign_recipients")
        conn.execute(f"INSERT INTO campaign_recipients SELECT DISTINCT campaign_id, recipient "
                     f"FROM messages WHERE {REACHED}")
        conn.execute(f"INSERT INTO deliveries SELECT m.campaign_id, m.sent_at, m.id, {_LAG} "
                     f"FROM messages AS m INDEXED BY messages_reach WHERE {_REACHED_M}")
        conn.execute("DELETE FROM rollup_dirty WHERE kind = 'reach'")
        return
    dirty = [cid for (cid,) in conn.execute(
        "SELECT campaign_id FROM rollup_dirty WHERE kind = 'reach'").fetchall()]
    for cid in dirty:
        conn.execute("DELETE FROM campaign_recipients WHERE campaign_id = ?", (cid,))
        conn.execute("DELETE FROM deliveries WHERE campaign_id = ?", (cid,))
        conn.execute(f"INSERT INTO campaign_recipients SELECT DISTINCT campaign_id, recipient "
                     f"FROM messages WHERE campaign_id = ? AND {REACHED}", (cid,))
        conn.execute(f"INSERT INTO deliveries SELECT m.campaign_id, m.sent_at, m.id, {_LAG} "
                     f"FROM messages AS m INDEXED BY messages_reach WHERE m.campaign_id = ? "
                     f"AND {_REACHED_M}", (cid,))
    conn.execute("DELETE FROM rollup_dirty WHERE kind = 'reach'")
    if after_rowid is None:
        return
    # recipients with a new delivery, in campaigns not already redone above
    conn.execute("DROP TABLE IF EXISTS temp.reach_touched")
    conn.execute("CREATE TEMP TABLE reach_touched (campaign_id INTEGER NOT NULL, recipient "
                 "BLOB NOT NULL, PRIMARY KEY (campaign_id, recipient)) WITHOUT ROWID")
    conn.execute(f"INSERT OR IGNORE INTO temp.reach_touched SELECT campaign_id, recipient "
                 f"FROM messages WHERE rowid > ? AND {REACHED}", (after_rowid,))
    if dirty:
        conn.execute(f"DELETE FROM temp.reach_touched WHERE campaign_id IN "
                     f"({', '.join('?' * len(dirty))})", dirty)
    conn.execute("INSERT OR IGNORE INTO campaign_recipients SELECT * FROM temp.reach_touched")
    join = ("temp.reach_touched AS t JOIN messages AS m INDEXED BY messages_reach ON "
            f"m.campaign_id = t.campaign_id AND m.recipient = t.recipient WHERE {_REACHED_M}")
    conn.execute("DELETE FROM deliveries WHERE (campaign_id, sent_at, message_id) IN "
                 f"(SELECT m.campaign_id, m.sent_at, m.id FROM {join})")
    conn.execute(f"INSERT INTO deliveries SELECT m.campaign_id, m.sent_at, m.id, {_LAG} "
                 f"FROM {join}")
    conn.execute("DROP TABLE temp.reach_touched")


def rebuild(conn: sqlite3.Connection, kind: Kind | str | None = None) -> None:
    """Recompute rollups from scratch (a migration, or a repair)."""
    for k in ([KINDS[kind] if isinstance(kind, str) else kind] if kind else KINDS.values()):
        conn.execute(f"DELETE FROM {k.rollup}")
        conn.execute("DELETE FROM rollup_dirty WHERE kind = ?", (k.name,))
        r = Rollup(conn, k)
        r.add_new_rows(-1 << 62)
        r.finish()
    refresh_reach(conn, everything=True)
