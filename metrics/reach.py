"""Reach: the ``deliveries`` and ``campaign_recipients`` tables (see the schema, in
``store``), which let the engine count distinct recipients reached in any period, and how
they stay in step with the messages (:func:`refresh_reach`, called as rollups are brought
up to date and rebuilt in :mod:`metrics.rollup`).
"""
from __future__ import annotations

import sqlite3

# a delivered outbound message to a known number: what reach counts
REACHED = "direction = 'outbound' AND status = 'delivered' AND recipient IS NOT NULL"

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
        # in key order: a sort, then appends (not a million inserts at random places)
        conn.execute(f"INSERT INTO deliveries SELECT m.campaign_id, m.sent_at, m.id, {_LAG} "
                     f"FROM messages AS m INDEXED BY messages_reach WHERE {_REACHED_M} "
                     "ORDER BY 1, 2, 3")
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
    _redo_deliveries(conn)
    conn.execute("DROP TABLE temp.reach_touched")


def _redo_deliveries(conn: sqlite3.Connection, few: bool = False) -> None:
    """The deliveries of every (campaign, recipient) pair in temp.reach_touched, again
    from the messages (each with the time of the pair's delivery before it). ``few``:
    the pairs are few next to the messages (live changes), so each is looked up in the
    reach index (CROSS JOIN fixes that order), rather than the index read through."""
    op = "CROSS JOIN" if few else "JOIN"
    join = (f"temp.reach_touched AS t {op} messages AS m INDEXED BY messages_reach ON "
            f"m.campaign_id = t.campaign_id AND m.recipient = t.recipient WHERE {_REACHED_M}")
    conn.execute("DELETE FROM deliveries WHERE (campaign_id, sent_at, message_id) IN "
                 f"(SELECT m.campaign_id, m.sent_at, m.id FROM {join})")
    conn.execute(f"INSERT INTO deliveries SELECT m.campaign_id, m.sent_at, m.id, {_LAG} "
                 f"FROM {join}")


def refresh_reach_pairs(conn: sqlite3.Connection, changed: str) -> None:
    """Live changes: ``changed`` is a table of (campaign_id, recipient, sent_at, id) for
    every message that changed, as it was and as it is (both). Each pair's deliveries and
    its place in ``campaign_recipients`` are redone from the messages, and the marks the
    changes left for a whole-campaign recount are cleared (this is that recount, for the
    recipients that changed)."""
    conn.execute("DROP TABLE IF EXISTS temp.reach_touched")
    conn.execute("CREATE TEMP TABLE reach_touched (campaign_id INTEGER NOT NULL, recipient "
                 "BLOB NOT NULL, PRIMARY KEY (campaign_id, recipient)) WITHOUT ROWID")
    conn.execute(f"INSERT OR IGNORE INTO temp.reach_touched SELECT campaign_id, recipient "
                 f"FROM {changed} WHERE recipient IS NOT NULL")
    # the changed messages' own deliveries, wherever they were
    conn.execute(f"DELETE FROM deliveries WHERE (campaign_id, sent_at, message_id) IN "
                 f"(SELECT campaign_id, sent_at, id FROM {changed})")
    _redo_deliveries(conn, few=True)
    conn.execute("DELETE FROM campaign_recipients WHERE (campaign_id, recipient) IN "
                 "(SELECT campaign_id, recipient FROM temp.reach_touched)")
    conn.execute("INSERT INTO campaign_recipients SELECT t.campaign_id, t.recipient FROM "
                 "temp.reach_touched AS t WHERE EXISTS (SELECT 1 FROM messages AS m INDEXED BY "
                 "messages_reach WHERE m.campaign_id = t.campaign_id AND m.recipient = "
                 f"t.recipient AND {_REACHED_M})")
    conn.execute("DROP TABLE temp.reach_touched")
    conn.execute("DELETE FROM rollup_dirty WHERE kind = 'reach'")
