"""The outbox: every post the bot makes on its own (an alert transition, a digest period)
is a row here before anything is sent, and this module is the only one that writes it.

A post's life::

    claim  ->  take (a lease)  ->  sent (Slack's ts kept, for threads)
                     |
                     +-> failed (retried with backoff)  -> take again ...

- :func:`claim` inserts the post under its key, once: a second claim of the same key (a
  second bot, a restart, a retry) claims nothing.
- :func:`take` hands a due post to one sender for ``SEND_LEASE_S``; another sender can
  take it only once the lease has run out.
- A sender that dies after Slack accepted the post but before :func:`mark_sent` leaves
  the post "sending" with a lease that runs out. Whoever takes it next is told so
  (``Taken.uncertain``) and looks for the post in the channel before sending it again:
  every post carries its key in Slack's message metadata (``bot.jobs``).
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from .store import Store

SEND_LEASE_S = 120
RETRY_BASE_S = 30
RETRY_MAX_S = 3600


@dataclass(frozen=True)
class Post:
    key: str
    kind: str                  # alert or digest
    channel: str | None
    payload: dict
    attempts: int
    claimed_at: int


@dataclass(frozen=True)
class Taken:
    """A post this sender now holds. ``uncertain``: an earlier sender took it and never
    said how it went (it may have been posted)."""

    post: Post
    uncertain: bool


def claim(conn: sqlite3.Connection, key: str, kind: str, channel: str | None, payload: dict,
          now: int, by: str | None) -> bool:
    """Claim the post ``key`` inside the caller's transaction; False when it was claimed
    before (by anyone)."""
    return conn.execute(
        "INSERT INTO posts(key, kind, channel, payload, status, claimed_at, claimed_by) "
        "VALUES (?, ?, ?, ?, 'claimed', ?, ?) ON CONFLICT(key) DO NOTHING",
        (key, kind, channel, json.dumps(payload), now, by)).rowcount == 1


def claim_one(store: Store, key: str, kind: str, channel: str | None, payload: dict,
              now: int, by: str | None) -> bool:
    """:func:`claim` in a transaction of its own."""
    with store.transaction() as conn:
        return claim(conn, key, kind, channel, payload, now, by)


_POST = "key, kind, channel, payload, attempts, claimed_at"


def _post(row) -> Post:
    key, kind, channel, payload, attempts, claimed_at = row
    return Post(key, kind, channel, json.loads(payload), attempts, claimed_at)


def pending(store: Store, now: int, kind: str | None = None) -> list[Post]:
    """Posts not yet sent whose (re)try is due, oldest first (a post another sender is
    sending right now is not due until its lease ends)."""
    rows = store.conn.execute(
        f"SELECT {_POST} FROM posts WHERE status != 'sent' AND "
        "COALESCE(next_attempt, 0) <= ? AND (status != 'sending' OR lease_until <= ?) AND "
        "(? IS NULL OR kind = ?) ORDER BY claimed_at, key", (now, now, kind, kind)).fetchall()
    return [_post(r) for r in rows]


def take(store: Store, key: str, now: int, sender: str) -> Taken | None:
    """Take a due post for sending, or None when another sender has it (or sent it)."""
    with store.transaction() as conn:
        row = conn.execute(f"SELECT {_POST}, status FROM posts WHERE key = ? AND "
                           "status != 'sent' AND COALESCE(next_attempt, 0) <= ? AND "
                           "(status != 'sending' OR lease_until <= ?)",
                           (key, now, now)).fetchone()
        if row is None:
            return None
        conn.execute("UPDATE posts SET status = 'sending', claimed_by = ?, lease_until = ? "
                     "WHERE key = ?", (sender, now + SEND_LEASE_S, key))
    return Taken(_post(row[:-1]), uncertain=row[-1] == "sending")


def mark_sent(store: Store, key: str, now: int, ts: str | None = None) -> None:
    with store.transaction() as conn:
        conn.execute("UPDATE posts SET status = 'sent', sent_at = ?, ts = ?, attempts = "
                     "attempts + 1, error = NULL WHERE key = ?", (now, ts, key))


def mark_failed(store: Store, key: str, now: int, error: str) -> int:
    """Record a failed send; it is retried with exponential backoff. Returns the delay."""
    with store.transaction() as conn:
        attempts = conn.execute("SELECT attempts FROM posts WHERE key = ?", (key,)).fetchone()[0]
        delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** attempts)
        conn.execute("UPDATE posts SET status = 'failed', attempts = attempts + 1, "
                     "next_attempt = ?, error = ? WHERE key = ?", (now + delay, error[:500], key))
    return delay


def thread_ts(store: Store, key: str | None) -> str | None:
    """Slack's ts of the sent post ``key`` (to reply in its thread), or None."""
    if key is None:
        return None
    row = store.conn.execute("SELECT ts FROM posts WHERE key = ? AND status = 'sent'",
                             (key,)).fetchone()
    return row[0] if row else None
