"""The SQLite store: the one owner of the schema, its migrations, connections and settings.

Every thread opens its own ``Store``; the database runs in WAL mode with foreign keys on,
and every write goes through :meth:`Store.transaction`.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import secrets
import sqlite3
import sys
from pathlib import Path
from typing import Any, Iterator


def _import_sqlite_utils():
    """sqlite-utils imports pandas whenever it is installed, only to map pandas types when
    creating tables from DataFrames, which kpibot never does; that costs 60 MB and half a
    second on every start (`kpibot ask`, the import's writer). Hide pandas while it loads,
    unless something already imported it."""
    if "pandas" in sys.modules:
        import sqlite_utils
        return sqlite_utils
    sys.modules["pandas"] = None   # type: ignore[assignment]  (makes `import pandas` fail)
    try:
        import sqlite_utils
    finally:
        del sys.modules["pandas"]
    return sqlite_utils


sqlite_utils = _import_sqlite_utils()
from sqlite_utils.migrations import Migrations  # noqa: E402

from .errors import HashKeyMismatch
from .names import merged_channel, name_key

DEFAULT_DB = "kpibot.db"
GOALS = ("lead-gen", "sales", "appointments", "support", "awareness", "info")
HASH_KEY_ENV = "KPIBOT_HASH_KEY"
HASH_KEY_FILE = ".kpibot-hash-key"

migrations = Migrations("kpibot")


@migrations()
def m001_core(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        CREATE TABLE campaigns (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            name_key TEXT NOT NULL UNIQUE,      -- casefolded, NFKC: how names are matched
            channel TEXT,                       -- sms, call or mixed
            goal TEXT,
            created_at TEXT NOT NULL
        );
        CREATE TABLE imports (
            id INTEGER PRIMARY KEY,
            file TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            format TEXT NOT NULL,
            encoding TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            rows_in INTEGER NOT NULL DEFAULT 0,
            rows_new INTEGER NOT NULL DEFAULT 0,
            rows_rejected INTEGER NOT NULL DEFAULT 0,
            imported_by TEXT
        );
        CREATE INDEX imports_sha256 ON imports(sha256);
        CREATE TABLE import_rejects (
            import_id INTEGER NOT NULL REFERENCES imports(id),
            line INTEGER NOT NULL,
            "column" TEXT,
            reason TEXT NOT NULL
        );
        CREATE INDEX import_rejects_import ON import_rejects(import_id);

        -- One row per SMS, outbound or inbound. Times are UTC unix seconds.
        -- Money is in micro-units of its currency so that sums are exact.
        -- recipient is a keyed 16-byte hash of the E.164 number (never the number itself).
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            message_key TEXT NOT NULL UNIQUE,   -- provider id, or a content key when absent
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            sent_at INTEGER NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
            status TEXT NOT NULL,
            error_code TEXT,
            recipient BLOB,
            country TEXT,
            segments INTEGER,
            cost_micros INTEGER,
            currency TEXT,
            clicked INTEGER NOT NULL DEFAULT 0,
            converted INTEGER NOT NULL DEFAULT 0,
            revenue_micros INTEGER,
            opted_out INTEGER NOT NULL DEFAULT 0,
            replied INTEGER NOT NULL DEFAULT 0,
            spam_complaint INTEGER NOT NULL DEFAULT 0,
            keyword TEXT,                       -- inbound: opt_out, opt_in, help or NULL
            reply_to INTEGER REFERENCES messages(id),
            segment TEXT,
            variant TEXT,
            attrs TEXT,                         -- JSON object of unmapped columns
            import_id INTEGER REFERENCES imports(id)
        );
        CREATE INDEX messages_campaign_time ON messages(campaign_id, sent_at);
        CREATE INDEX messages_reply_to ON messages(reply_to) WHERE reply_to IS NOT NULL;
        CREATE INDEX messages_unattributed ON messages(sent_at)
            WHERE direction = 'inbound' AND reply_to IS NULL;

        -- One row per call.
        CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            call_key TEXT NOT NULL UNIQUE,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            started_at INTEGER NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
            status TEXT NOT NULL,
            answered_by TEXT,
            duration_s REAL,
            disposition TEXT,
            abandoned INTEGER NOT NULL DEFAULT 0,
            converted INTEGER NOT NULL DEFAULT 0,
            revenue_micros INTEGER,
            cost_micros INTEGER,
            currency TEXT,
            agent TEXT,
            recipient BLOB,
            country TEXT,
            segment TEXT,
            variant TEXT,
            attrs TEXT,
            import_id INTEGER REFERENCES imports(id)
        );
        CREATE INDEX calls_campaign_time ON calls(campaign_id, started_at);

        -- Platforms that export only totals: one row per campaign, day and channel.
        CREATE TABLE daily (
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            date TEXT NOT NULL,
            channel TEXT NOT NULL CHECK (channel IN ('sms', 'call')),
            sent INTEGER, delivered INTEGER, failed INTEGER, clicks INTEGER,
            conversions INTEGER, opt_outs INTEGER, replies INTEGER, complaints INTEGER,
            cost_micros INTEGER, revenue_micros INTEGER, new_subscribers INTEGER,
            list_size INTEGER, calls_dialed INTEGER, calls_answered INTEGER,
            calls_abandoned INTEGER, talk_seconds REAL,
            import_id INTEGER REFERENCES imports(id),
            PRIMARY KEY (campaign_id, date, channel)
        );

        -- Which unmapped columns (attributes) each campaign has, for `by <attribute>`.
        CREATE TABLE attribute_names (
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            kind TEXT NOT NULL CHECK (kind IN ('message', 'call')),
            name TEXT NOT NULL,
            PRIMARY KEY (campaign_id, kind, name)
        );
        """
    )



@migrations()
def m002_rollups(db: sqlite_utils.Database) -> None:
    """Rollup tables for fast answers (filled by ``metrics.rollup``), the triggers that
    mark slots dirty when events change, and what reach is counted from."""
    from .rollup import KINDS, rebuild, slot_sql
    for kind in KINDS.values():
        counters = ",\n            ".join(f"{c} {'REAL' if c == 'talk_seconds' else 'INTEGER'} "
                                          "NOT NULL" for c in kind.counters)
        db.executescript(f"""
        CREATE TABLE {kind.rollup} (
            campaign_id INTEGER NOT NULL,
            dim TEXT NOT NULL,          -- '' for the campaign total, else a dimension name
            slot INTEGER NOT NULL,      -- UTC unix seconds, start of a 15-minute slot
            key TEXT NOT NULL,          -- the dimension's value, '' when missing
            {counters},
            PRIMARY KEY (campaign_id, dim, slot, key)
        ) WITHOUT ROWID;
        """)
    db.executescript(
        """
        CREATE TABLE rollup_dirty (
            kind TEXT NOT NULL,
            campaign_id INTEGER NOT NULL,
            slot INTEGER NOT NULL,
            PRIMARY KEY (kind, campaign_id, slot)
        ) WITHOUT ROWID;
        -- Reach. Every delivered message with the time of the same recipient's previous
        -- delivery in the campaign: the distinct recipients of [s, e) are the deliveries in
        -- [s, e) whose previous one is before s (or none), a count over one index range.
        CREATE TABLE deliveries (
            campaign_id INTEGER NOT NULL,
            sent_at INTEGER NOT NULL,
            message_id INTEGER NOT NULL,
            prev_at INTEGER,
            PRIMARY KEY (campaign_id, sent_at, message_id)
        ) WITHOUT ROWID;
        -- ... every recipient a campaign ever reached, for its whole-life reach ...
        CREATE TABLE campaign_recipients (
            campaign_id INTEGER NOT NULL,
            recipient BLOB NOT NULL,
            PRIMARY KEY (campaign_id, recipient)
        ) WITHOUT ROWID;
        -- ... both kept from the deliveries in recipient order.
        CREATE INDEX messages_reach ON messages(campaign_id, recipient, sent_at)
            WHERE direction = 'outbound' AND status = 'delivered' AND recipient IS NOT NULL;
        -- A change to who was reached marks the campaign for a recount.
        CREATE TRIGGER messages_reach_update AFTER UPDATE ON messages
        WHEN old.status IS NOT new.status OR old.recipient IS NOT new.recipient
             OR old.campaign_id != new.campaign_id OR old.direction != new.direction
             OR old.sent_at != new.sent_at
        BEGIN
            INSERT INTO rollup_dirty VALUES ('reach', old.campaign_id, 0), ('reach', new.campaign_id, 0)
            ON CONFLICT DO NOTHING;
        END;
        CREATE TRIGGER messages_reach_delete AFTER DELETE ON messages BEGIN
            INSERT INTO rollup_dirty VALUES ('reach', old.campaign_id, 0) ON CONFLICT DO NOTHING;
        END;
        """)
    for kind in KINDS.values():
        for event, rows in (("UPDATE", ("old", "new")), ("DELETE", ("old",))):
            values = ", ".join(f"('{kind.name}', {r}.campaign_id, {slot_sql(r + '.' + kind.time)})"
                               for r in rows)
            db.execute(f"CREATE TRIGGER {kind.table}_rollup_{event.lower()} AFTER {event} ON "
                       f"{kind.table} BEGIN INSERT INTO rollup_dirty VALUES {values} "
                       "ON CONFLICT DO NOTHING; END")
    rebuild(db.conn)


@migrations()
def m003_alerts(db: sqlite_utils.Database) -> None:
    """Alert rules, the state machine of each rule-and-campaign pair, and the posts
    claimed before they are sent (so that no post goes out twice)."""
    db.executescript(
        """
        CREATE TABLE alert_rules (
            id INTEGER PRIMARY KEY,
            campaign TEXT NOT NULL,            -- a campaign's name, or '*'
            metric TEXT NOT NULL,
            op TEXT NOT NULL CHECK (op IN ('>', '>=', '<', '<=')),
            threshold REAL NOT NULL,           -- rates as fractions: 2% is 0.02
            recovery REAL,                     -- back to ok only past this (stops flapping)
            window_s INTEGER NOT NULL,         -- trailing window evaluated
            min_volume INTEGER NOT NULL,       -- the rate's denominator must reach this
            renotify_s INTEGER,                -- post again while firing, this often
            channel TEXT,                      -- Slack channel id to post in
            muted INTEGER NOT NULL DEFAULT 0,
            snoozed_until INTEGER,             -- the rule's pairs post nothing until then
            created_by TEXT,
            created_at TEXT NOT NULL
        );
        CREATE TABLE alert_states (
            rule_id INTEGER NOT NULL REFERENCES alert_rules(id) ON DELETE CASCADE,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            state TEXT NOT NULL CHECK (state IN ('ok', 'firing', 'resolved')),
            episode INTEGER NOT NULL DEFAULT 0,   -- how many times it started firing
            since INTEGER NOT NULL,               -- when it entered this state
            snoozed_until INTEGER,
            last_checked INTEGER,
            last_value REAL,
            last_numerator REAL,
            last_denominator REAL,
            last_note TEXT,                       -- e.g. 'below minimum volume'
            last_posted INTEGER,
            PRIMARY KEY (rule_id, campaign_id)
        );
        CREATE TABLE posts (
            key TEXT PRIMARY KEY,               -- what is posted, e.g. alert:3:7:1:fire
            kind TEXT NOT NULL,                 -- alert or digest
            channel TEXT,
            payload TEXT NOT NULL,              -- JSON of what to say
            status TEXT NOT NULL CHECK (status IN ('claimed', 'sending', 'sent', 'failed')),
            claimed_at INTEGER NOT NULL,
            claimed_by TEXT,
            lease_until INTEGER,                -- 'sending': another sender waits until then
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt INTEGER,
            sent_at INTEGER,
            ts TEXT,                            -- Slack's message ts, for threading
            error TEXT
        );
        CREATE INDEX posts_pending ON posts(status, next_attempt) WHERE status != 'sent';
        """)


@migrations()
def m004_digests(db: sqlite_utils.Database) -> None:
    """Digest subscriptions: daily or weekly at a local time in an IANA zone."""
    db.executescript(
        """
        CREATE TABLE digests (
            id INTEGER PRIMARY KEY,
            frequency TEXT NOT NULL CHECK (frequency IN ('daily', 'weekly')),
            weekday INTEGER CHECK (weekday BETWEEN 0 AND 6),   -- weekly: 0 is Monday
            at TEXT NOT NULL,                  -- HH:MM, local
            tz TEXT NOT NULL,                  -- IANA zone
            channel TEXT,
            created_by TEXT,
            created_at TEXT NOT NULL
        );
        """)

def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


class Store:
    """One connection to the KPI database. Open one per thread."""

    def __init__(self, path: str | os.PathLike = DEFAULT_DB, *, migrate: bool = True):
        self.path = Path(path)
        conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.conn = conn
        if str(path) != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        if migrate:
            migrations.apply(self.db)
        self._hash_key: bytes | None = None

    @classmethod
    def open(cls, path: str | os.PathLike | None = None) -> "Store":
        """Open the database named by ``path``, ``$KPIBOT_DB`` or ``./kpibot.db``."""
        return cls(path or os.environ.get("KPIBOT_DB") or DEFAULT_DB)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): all of it lands, or none of it."""
        if self.conn.in_transaction:
            raise RuntimeError("nested transaction")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.rollback()
            raise
        else:
            self.conn.commit()

    # -- settings -----------------------------------------------------------------
    def get_setting(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_setting(self, key: str, value: str, conn: sqlite3.Connection | None = None) -> None:
        sql = ("INSERT INTO settings(key, value) VALUES (?, ?) "
               "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        if conn is not None:
            conn.execute(sql, (key, value))
        else:
            with self.transaction() as c:
                c.execute(sql, (key, value))

    def timezone(self) -> str:
        """The team's IANA time zone: ``$KPIBOT_TZ``, then the stored setting, then UTC."""
        return os.environ.get("KPIBOT_TZ") or self.get_setting("timezone") or "UTC"

    # -- the phone-number hash key ----------------------------------------------------
    def hash_key(self) -> bytes:
        """The secret key for recipient hashes: ``$KPIBOT_HASH_KEY`` or a 0600 file beside
        the database, generated once. Refuses a key that differs from the one the stored
        hashes were made with, since reach and attribution would silently break."""
        if self._hash_key is not None:
            return self._hash_key
        env = os.environ.get(HASH_KEY_ENV)
        if env:
            key = env.encode()
        elif str(self.path) == ":memory:":   # a throwaway database gets a throwaway key
            key = secrets.token_hex(32).encode()
        else:
            key_path = self.key_path()
            try:
                key = key_path.read_bytes().strip()
            except FileNotFoundError:
                key = secrets.token_hex(32).encode()
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(key + b"\n")
        fingerprint = hashlib.sha256(b"kpibot-key-fingerprint:" + key).hexdigest()[:16]
        stored = self.get_setting("hash_key_fingerprint")
        if stored is None:
            self.set_setting("hash_key_fingerprint", fingerprint)
        elif stored != fingerprint:
            raise HashKeyMismatch(
                "The phone-number hash key is not the one this database was built with "
                f"(set {HASH_KEY_ENV} to the original key, or restore {self.key_path()})."
            )
        self._hash_key = key
        return key

    def key_path(self) -> Path:
        return self.path.resolve().parent / HASH_KEY_FILE

    # -- campaigns ----------------------------------------------------------------------
    def campaign_id(self, conn: sqlite3.Connection, name: str, channel: str | None) -> int:
        """The id of campaign ``name`` (matched case-insensitively), creating it if new."""
        key = name_key(name)
        row = conn.execute("SELECT id, channel FROM campaigns WHERE name_key = ?", (key,)).fetchone()
        if row is None:
            return self.put_campaign(conn, None, name, channel)
        cid, existing = row
        merged = merged_channel(existing, channel)
        if merged != existing:
            self.put_campaign(conn, cid, name, merged, new=False)
        return cid

    def put_campaign(self, conn: sqlite3.Connection, cid: int | None, name: str,
                     channel: str | None, new: bool = True) -> int:
        """Create campaign ``name`` (with id ``cid`` when given), or set its channel."""
        if not new:
            conn.execute("UPDATE campaigns SET channel = ? WHERE id = ?", (channel, cid))
            return cid
        cur = conn.execute(
            "INSERT INTO campaigns(id, name, name_key, channel, created_at) VALUES (?, ?, ?, ?, ?)",
            (cid, name.strip(), name_key(name), channel, iso(utcnow())),
        )
        return cur.lastrowid

    def campaign_channels(self, conn: sqlite3.Connection) -> dict[str, tuple[int, str | None]]:
        """Every campaign's name key -> (id, channel)."""
        return {k: (i, c) for i, k, c in conn.execute("SELECT id, name_key, channel FROM campaigns")}

    def set_goal(self, campaign_id: int, goal: str) -> None:
        """Set a campaign's goal (one of GOALS), which orders its KPIs."""
        if goal not in GOALS:
            raise ValueError(f"unknown goal '{goal}' (one of: {', '.join(GOALS)})")
        with self.transaction() as conn:
            conn.execute("UPDATE campaigns SET goal = ? WHERE id = ?", (goal, campaign_id))

    def campaigns(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.query("SELECT * FROM campaigns ORDER BY name_key")]
