"""The SQLite store: the one owner of the schema, its migrations, connections and settings.

Every thread opens its own ``Store``; the database runs in WAL mode with foreign keys on,
and every write goes through :meth:`Store.transaction`.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import sqlite_utils

from .errors import HashKeyMismatch, SchemaTooNew, StoreError
from .names import merged_channel, name_key

DEFAULT_DB = "kpibot.db"
GOALS = ("lead-gen", "sales", "appointments", "support", "awareness", "info")
HASH_KEY_ENV = "KPIBOT_HASH_KEY"
HASH_KEY_FILE = ".kpibot-hash-key"

MIGRATION_SET = "kpibot"
MIGRATIONS: list = []     # the schema's history, in order: functions of a sqlite_utils Database


def migration(fn):
    """Register ``fn`` as the next migration (``sqlite_utils.Migrations`` applies them)."""
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_core(db: "sqlite_utils.Database") -> None:
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



@migration
def m002_rollups(db: "sqlite_utils.Database") -> None:
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
    # a store made at this step has no events to count (an older one with events is
    # counted once the schema is complete: m007 makes the tables the newest counters read)
    if _has_table(db.conn, "message_credits"):
        rebuild(db.conn)
    else:
        db.conn.execute("INSERT OR REPLACE INTO settings VALUES ('rollup_rebuild_pending', '1')")


def _has_table(conn, table: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (table,)).fetchone() is not None


def _has_columns(conn, table: str, names: tuple[str, ...]) -> bool:
    have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
    return set(names) <= have


@migration
def m003_alerts(db: "sqlite_utils.Database") -> None:
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


@migration
def m004_digests(db: "sqlite_utils.Database") -> None:
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


@migration
def m005_live(db: "sqlite_utils.Database") -> None:
    """Live data (``metrics.live``): events that named no campaign, kept until one is
    known; and the outbound messages by recipient, which a live reply is matched on
    (``replies.attribute_replies_to``) without a scan of every message."""
    db.executescript(
        """
        CREATE TABLE live_unassigned (
            event_id INTEGER PRIMARY KEY,      -- its id in the inbox
            received_at INTEGER NOT NULL,
            source TEXT NOT NULL,              -- e.g. twilio-status
            what TEXT NOT NULL,                -- message status, reply, call, click
            sender TEXT,                       -- our number or messaging service
            reason TEXT NOT NULL,
            body TEXT NOT NULL                 -- the event, as the inbox held it (JSON)
        );
        CREATE INDEX messages_recipient ON messages(recipient, sent_at)
            WHERE direction = 'outbound' AND recipient IS NOT NULL;
        """)


@migration
def m006_attribution(db: "sqlite_utils.Database") -> None:
    """Clicks and conversions from other systems (``metrics.attribution``): a click
    belongs to its message; a conversion is credited to a message or call (or, through
    its code, to a campaign) and adds to that event's counters, so rollups, breakdowns
    and A/B tests see it where the event is."""
    # (as first landed, this step also added the credited totals to the messages and
    # calls rows and counted the rollups' new counters: m007 does both now)
    db.executescript(
        """
        ALTER TABLE campaigns ADD COLUMN click_window_s INTEGER;     -- NULL: the team's
        ALTER TABLE campaigns ADD COLUMN delivery_window_s INTEGER;
        -- One row per click on a link in a message (Twilio's link-shortening click event).
        CREATE TABLE clicks (
            id INTEGER PRIMARY KEY,
            click_key TEXT NOT NULL UNIQUE,    -- message, second and link: a repeat is one click
            message_key TEXT NOT NULL,         -- the message clicked (stored or not yet)
            clicked_at INTEGER NOT NULL,
            recipient BLOB,                    -- keyed hash of who clicked ('to')
            link TEXT,
            import_id INTEGER REFERENCES imports(id)
        );
        CREATE INDEX clicks_message ON clicks(message_key);
        CREATE INDEX clicks_recipient ON clicks(recipient, clicked_at) WHERE recipient IS NOT NULL;
        -- One row per order, sign-up, appointment or lead, and what it is credited to.
        CREATE TABLE conversions (
            id INTEGER PRIMARY KEY,
            order_key TEXT NOT NULL UNIQUE,    -- the order id: counted once
            converted_at INTEGER NOT NULL,
            type TEXT,                         -- sale, sign-up, appointment, lead (none given:
                                               -- a sale, set as it is credited)
            revenue_micros INTEGER,
            currency TEXT,
            cancelled INTEGER NOT NULL DEFAULT 0,   -- counts for nothing, kept
            message_key TEXT,                  -- the message (or call) the row names
            recipient BLOB,                    -- keyed hash of the customer's number
            code TEXT,                         -- a discount code or UTM campaign
            -- the credit, kept by metrics.attribution (a function of the stored data)
            how TEXT,                          -- message, click, delivery, call, code; NULL: none
            message_id INTEGER,                -- the message credited
            call_id INTEGER,                   -- the call credited
            campaign_id INTEGER,               -- the campaign credited
            credited_at INTEGER,               -- when it counts: the event's time, or its own
            note TEXT,                         -- why nothing could be credited
            counted_as TEXT,                   -- its type in uncredited_counts (NULL: not there)
            import_id INTEGER REFERENCES imports(id)
        );
        CREATE INDEX conversions_recipient ON conversions(recipient, converted_at)
            WHERE recipient IS NOT NULL;
        CREATE INDEX conversions_named ON conversions(message_key) WHERE message_key IS NOT NULL;
        CREATE INDEX conversions_message ON conversions(message_id) WHERE message_id IS NOT NULL;
        CREATE INDEX conversions_call ON conversions(call_id) WHERE call_id IS NOT NULL;
        -- whether a campaign's conversions in a period include a currency (a card checks
        -- each currency of conversion_currencies: one lookup each)
        CREATE INDEX conversions_campaign ON conversions(campaign_id, currency, credited_at)
            WHERE campaign_id IS NOT NULL AND how IS NOT NULL AND NOT cancelled;
        CREATE INDEX conversions_uncredited ON conversions(type, cancelled) WHERE how IS NULL;
        -- the currencies of the conversions credited to each campaign (a card says when
        -- they are not its costs'), kept by metrics.attribution.credit
        CREATE TABLE conversion_currencies (
            campaign_id INTEGER NOT NULL,
            currency TEXT NOT NULL,
            PRIMARY KEY (campaign_id, currency)
        ) WITHOUT ROWID;
        -- conversions credited by code (no message), per campaign and 15-minute slot of
        -- their own time: read beside the rollups, kept by metrics.attribution.credit
        CREATE TABLE code_rollup (
            campaign_id INTEGER NOT NULL,
            slot INTEGER NOT NULL,
            conversions INTEGER NOT NULL,
            revenue_micros INTEGER NOT NULL,
            PRIMARY KEY (campaign_id, slot)
        ) WITHOUT ROWID;
        -- a campaign's conversions credited by code, for a slot's recount and part slots
        CREATE INDEX conversions_coded ON conversions(campaign_id, credited_at, revenue_micros)
            WHERE how = 'code' AND NOT cancelled;
        -- How many conversions nothing could credit, by type: every card shows it, and a
        -- shop's export may hold millions (most orders come from elsewhere). Kept by
        -- metrics.attribution.credit, from each conversion's counted_as.
        CREATE TABLE uncredited_counts (
            type TEXT PRIMARY KEY,
            n INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX calls_recipient ON calls(recipient, started_at) WHERE recipient IS NOT NULL;
        """)


@migration
def m007_credits(db: "sqlite_utils.Database") -> None:
    """The conversions credited to a message or call are kept beside it, in a narrow table
    per kind (``message_credits``, ``call_credits``: a row for an event with any), not in
    its row: crediting a million orders against ten million messages rewrote most pages
    of the messages table (a gigabyte of log) to change a few numbers in one row of
    thirty. Counters read them through ``Kind.source``."""
    conn = db.conn
    from .rollup import KINDS, Rollup, rebuild, slot_sql
    for kind in KINDS.values():
        cols = ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in kind.credit_columns)
        conn.execute(f"CREATE TABLE {kind.credits} ({kind.credit_key} INTEGER PRIMARY KEY, "
                     f"{cols})")
        conn.execute(f"CREATE TRIGGER {kind.table}_credits_delete AFTER DELETE ON {kind.table} "
                     f"BEGIN DELETE FROM {kind.credits} WHERE {kind.credit_key} = old.id; END")
        # a store that ran m006 as it first landed holds them in the events' rows
        held = [c for c in kind.credit_columns if _has_columns(conn, kind.table, (c,))]
        if held:
            names = ", ".join(held)
            conn.execute(f"INSERT INTO {kind.credits} ({kind.credit_key}, {names}) "
                         f"SELECT id, {names} FROM {kind.table} WHERE "
                         + " OR ".join(f"{c} != 0" for c in held))
            for c in held:
                conn.execute(f"ALTER TABLE {kind.table} DROP COLUMN {c}")
    # A rollup table made before the newest counters existed gets them. What they count
    # in the events already stored (opt-in replies, lead dispositions) is counted again in
    # the slots that hold any: those slots are marked for a recount.
    recount = {"message": "keyword = 'opt_in'", "call": "disposition IS NOT NULL"}
    pending = conn.execute("SELECT value FROM settings WHERE key = 'rollup_rebuild_pending'"
                           ).fetchone()
    for kind in KINDS.values():
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({kind.rollup})")}
        added = [c for c in kind.counters if c not in have]
        for counter in added:
            conn.execute(f"ALTER TABLE {kind.rollup} ADD COLUMN {counter} INTEGER NOT NULL "
                         "DEFAULT 0")
        if added and not pending:
            conn.execute(f"INSERT OR IGNORE INTO rollup_dirty SELECT '{kind.name}', campaign_id, "
                         f"{slot_sql(kind.time)} FROM {kind.table} WHERE {recount[kind.name]}")
            Rollup(conn, kind).finish()
    if pending:
        rebuild(conn)
        conn.execute("DELETE FROM settings WHERE key = 'rollup_rebuild_pending'")


# The inbox database's schema (see Store.inbox): requests already handled (a signed
# request's signature, an event's id), so that a replay or a retry is answered without
# running again; kept for minutes. Created as it is first opened.
INBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_requests (
    key TEXT PRIMARY KEY,
    seen_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_requests_at ON seen_requests(seen_at);
-- Events from providers and other systems, acknowledged once written here and moved into
-- the main database by one applier (metrics.live.apply); ids only grow (AUTOINCREMENT),
-- so "applied up to id N", kept in the main database, says exactly what is done.
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,       -- the event's identity: a repeat has the same key
    received_at INTEGER NOT NULL,
    source TEXT NOT NULL,
    body TEXT NOT NULL              -- JSON, see metrics.live.events
);
CREATE INDEX IF NOT EXISTS events_received ON events(received_at);
-- Which inbox this is: the main database's "applied up to N" names it, so that an inbox
-- deleted and made again (its ids start over) is read from its start.
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT OR IGNORE INTO meta(key, value) VALUES ('inbox_id', lower(hex(randomblob(16))));
"""


_INBOX_LOCKS: dict[str, threading.Lock] = {}
_INBOX_LOCKS_GUARD = threading.Lock()


def _inbox_lock(path: Path | None) -> threading.Lock:
    """The lock this process's writers of the inbox at ``path`` take turns on."""
    key = str(path.resolve()) if path else ":memory:"
    with _INBOX_LOCKS_GUARD:
        return _INBOX_LOCKS.setdefault(key, threading.Lock())


def _enter_wal(conn: sqlite3.Connection, timeout_s: float = 30) -> None:
    """Switch to WAL mode. On a database that several processes are creating at once the
    switch can fail at once with "database is locked" (SQLite does not wait on its busy
    handler there), so it is retried for up to ``timeout_s``."""
    deadline, pause = time.monotonic() + timeout_s, 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if (exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY
                    or time.monotonic() > deadline):
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _known_migrations() -> list[str]:
    """The names of the migrations this code has, in order."""
    return [fn.__name__ for fn in MIGRATIONS]


def _apply_migrations(conn: sqlite3.Connection) -> None:
    """Apply the pending migrations with sqlite-utils' ``Migrations``. sqlite-utils is
    loaded here only, when a database is created or upgraded: importing it loads pandas
    when pandas is installed (0.3 s), which no other command needs."""
    import sqlite_utils
    from sqlite_utils.migrations import Migrations
    migrations = Migrations(MIGRATION_SET)
    for fn in MIGRATIONS:
        migrations()(fn)
    migrations.apply(sqlite_utils.Database(conn))


def _read_key(path: Path) -> bytes:
    """The key in ``path``, waiting a moment for a file another process is still writing."""
    deadline = time.monotonic() + 2
    while not (key := path.read_bytes().strip()):
        if time.monotonic() > deadline:
            raise StoreError(f"the phone-number hash key file {path} is empty: restore it from "
                             f"a backup, or set {HASH_KEY_ENV} to the key")
        time.sleep(0.01)
    return key


def _key_file_problem(path: Path, exc: OSError) -> str:
    if exc.errno in NO_SPACE:
        return (f"no space left to write the phone-number hash key file {path}: "
                "free some disk space and try again")
    return (f"cannot read or create the phone-number hash key file {path} "
            f"({exc.strerror or exc}): make it readable and its folder writable for this "
            f"user, or set {HASH_KEY_ENV}")


# -- failures of the database itself, said in one line ----------------------------------
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space_message(path: str | os.PathLike, exc: BaseException | None = None) -> str:
    """What to say when the disk (or the temporary folder) is full while writing ``path``."""
    cause = "database or disk is full"
    if isinstance(exc, OSError):
        cause = (exc.strerror or str(exc)) + (f": {exc.filename}" if exc.filename else "")
    return (f"no space left on the disk while writing {path} ({cause}): nothing was "
            "changed; free some space where the database or the temporary folder "
            "($TMPDIR, else /tmp) lives, and try again")


def access_problem(path: Path) -> str | None:
    """What keeps this user from writing the database at ``path``, if anything: a missing
    or read-only folder, or a read-only file. In WAL mode SQLite also creates FILE-wal
    and FILE-shm beside the file, so the folder must be writable too."""
    folder = path.absolute().parent
    if path.is_dir():
        return f"{path} is a folder, not a database file: name a file with --db or KPIBOT_DB"
    if not folder.is_dir():
        return (f"the folder {folder} does not exist: create it, or name another database "
                "with --db or KPIBOT_DB")
    if path.exists():
        if not os.access(path, os.R_OK):
            return (f"{path} cannot be read by this user: give it read and write permission "
                    f"(chmod u+rw {path}), or run kpibot as its owner")
        if not os.access(path, os.W_OK):
            return (f"{path} is read-only for this user: kpibot writes to its database; make "
                    f"the file writable (chmod u+w {path}), or work on a writable copy")
        if not os.access(folder, os.W_OK | os.X_OK):
            return (f"the folder {folder} is read-only for this user, and SQLite's WAL mode "
                    f"needs to create {path.name}-wal and {path.name}-shm beside {path.name}: "
                    "make the folder writable, or move the database to a writable folder")
    elif not os.access(folder, os.W_OK | os.X_OK):
        return (f"cannot create {path}: the folder {folder} is read-only for this user; make "
                "it writable, or name a database in a writable folder with --db or KPIBOT_DB")
    return None


def write_error(path: Path, exc: sqlite3.Error) -> StoreError | None:
    """A clear :class:`StoreError` for a write that failed because of where the database
    lives (disk full, read-only file or folder), or None for any other error."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        return StoreError(no_space_message(path))
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN) and str(path) != ":memory:":
        if problem := access_problem(path):
            return StoreError(problem)
    return None


def open_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """A one-line :class:`StoreError` for a database that could not be opened."""
    if clear := write_error(path, exc):
        return clear
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code == sqlite3.SQLITE_NOTADB:
        return StoreError(f"cannot open the database {path}: it is not a SQLite database "
                          "(file is not a database); check the path given with --db or "
                          "KPIBOT_DB")
    return StoreError(f"cannot open the database {path}: " + " ".join(str(exc).split()))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


class Store:
    """One connection to the KPI database. Open one per thread."""

    def __init__(self, path: str | os.PathLike = DEFAULT_DB, *, migrate: bool = True):
        self.path = Path(path)
        self._hash_key: bytes | None = None
        try:
            conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:
            raise open_error(self.path, exc) from exc
        self.conn = conn
        try:
            if str(path) != ":memory:":
                _enter_wal(conn)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            if migrate:
                self._migrate()
            else:
                self._pending()   # still refuses a newer schema
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise open_error(self.path, exc) from exc
            raise

    def _migrate(self) -> None:
        """Bring the schema up to date, once, even when several processes open a new
        database at the same moment: the check and every migration run in one write
        transaction (BEGIN IMMEDIATE; the others wait on the busy timeout, then find
        nothing left to do). Every kpibot migration must therefore be transactional."""
        if not self._pending():      # the usual open: one read, no lock
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if self._pending():      # again under the lock: another process may have done it
                _apply_migrations(self.conn)
                self.conn.execute(f"PRAGMA user_version = {len(_known_migrations())}")
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def _pending(self) -> list[str]:
        """The migrations this database still needs. Refuses (:class:`SchemaTooNew`) a
        database written by a newer kpibot, known by either sign: a migration recorded in
        its ``_sqlite_migrations`` table that this code does not have (every kpibot version
        records its migrations there, so this also catches databases written before
        ``user_version`` was kept), or a ``PRAGMA user_version`` (the number of migrations
        applied, set whenever kpibot migrates) above the number this code knows."""
        known = _known_migrations()
        applied = [name for (name,) in self.conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY rowid",
            (MIGRATION_SET,))] if self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = '_sqlite_migrations'").fetchone() else []
        user_version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if set(applied) - set(known) or user_version > len(known):
            raise SchemaTooNew(str(self.path), max(len(applied), user_version), len(known))
        return [name for name in known if name not in applied]

    @classmethod
    def open(cls, path: str | os.PathLike | None = None) -> "Store":
        """Open the database named by ``path``, ``$KPIBOT_DB`` or ``./kpibot.db``."""
        return cls(path or os.environ.get("KPIBOT_DB") or DEFAULT_DB)

    def close(self) -> None:
        self.conn.close()
        if getattr(self, "_inbox", None) is not None:
            self._inbox.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self, *, dry_run: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): all of it lands, or none of it. With
        ``dry_run`` every write is made and seen inside, then rolled back: the one way
        kpibot shows what a change would do (an import, an alert check) without making
        it."""
        if self.conn.in_transaction:
            raise RuntimeError("nested transaction")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            yield self.conn
            if dry_run:
                self.conn.rollback()
            else:
                self.conn.commit()
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):   # the original error says more
                self.conn.rollback()
            if isinstance(exc, sqlite3.Error) and (clear := write_error(self.path, exc)):
                raise clear from exc
            raise

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

    # -- the inbox: what must be written while an import holds the database ------------
    def inbox_path(self) -> Path | None:
        """The inbox database beside the main one (``kpibot.db`` -> ``kpibot.inbox.db``)."""
        if str(self.path) == ":memory:":
            return None
        return self.path.with_name(f"{self.path.stem}.inbox{self.path.suffix or '.db'}")

    @property
    def inbox(self) -> sqlite3.Connection:
        """A connection to the inbox: a small SQLite database of its own, so that its
        writes (a request seen, soon events acknowledged to a provider) never wait for the
        main database's write lock, which an import holds for as long as it runs."""
        conn = getattr(self, "_inbox", None)
        if conn is None:
            path = self.inbox_path()
            try:
                conn = sqlite3.connect(str(path) if path else ":memory:", timeout=30,
                                       check_same_thread=False)
                if path is not None:
                    _enter_wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=30000")
                with conn:
                    conn.executescript(INBOX_SCHEMA)
            except sqlite3.Error as exc:
                raise open_error(path or self.path, exc) from exc
            self._inbox = conn
            self._inbox_write = _inbox_lock(path)
        return conn

    def first_seen(self, key: str, now: int, keep_s: int) -> bool:
        """Record ``key`` (a request's identity) in the inbox and say whether it is new;
        keys older than ``keep_s`` are forgotten on the way."""
        conn = self.inbox
        try:
            with self._inbox_write, conn:
                conn.execute("DELETE FROM seen_requests WHERE seen_at < ?", (now - keep_s,))
                return conn.execute("INSERT INTO seen_requests(key, seen_at) VALUES (?, ?) "
                                    "ON CONFLICT(key) DO NOTHING", (key, now)).rowcount == 1
        except sqlite3.Error as exc:
            raise (write_error(self.inbox_path(), exc) or exc) from exc

    def defer_inbox_checkpoints(self) -> None:
        """This connection's commits to the inbox no longer copy the WAL back into the
        database file every thousand pages (a checkpoint, with an fsync: 50-80 ms that an
        acknowledgement waited for); :meth:`checkpoint_inbox` does it instead, from the
        applier thread of ``kpibot serve``, and these commits only past 8,000 pages (should
        that thread be stuck)."""
        self.inbox.execute("PRAGMA wal_autocheckpoint=8000")   # a safety net only (32 MB)

    def wait_for_writes(self, seconds: float) -> None:
        """How long a write waits for another writer (an import) before it gives up."""
        self.conn.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    def checkpoint_inbox(self) -> None:
        """Copy the inbox's WAL back into its file, without waiting for anyone (PASSIVE)."""
        self.inbox.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def inbox_put(self, events: list[tuple[str, str, str]], now: int) -> int:
        """Write events (key, source, JSON body) to the inbox in one transaction, committed
        when this returns: what a 2xx to a provider promises. A key already there (a
        repeat) is left alone. Returns how many were new."""
        conn = self.inbox
        try:
            # one writer at a time within this process, queued on a lock: SQLite's own
            # wait for a busy database sleeps in steps of up to 100 ms, which made the
            # slowest acknowledgements wait for nothing (bench/bench_webhooks.py)
            with self._inbox_write, conn:
                before = conn.total_changes
                conn.executemany(
                    "INSERT INTO events(key, received_at, source, body) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(key) DO NOTHING",
                    [(key, now, source, body) for key, source, body in events])
                return conn.total_changes - before
        except sqlite3.Error as exc:
            raise (write_error(self.inbox_path(), exc) or exc) from exc

    def inbox_after(self, after_id: int, limit: int) -> list[tuple[int, int, str, str]]:
        """Inbox events with id > ``after_id``, oldest first: (id, received_at, source, body)."""
        return self.inbox.execute(
            "SELECT id, received_at, source, body FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit)).fetchall()

    def inbox_last_id(self) -> int:
        return self.inbox.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]

    def inbox_forget(self, applied_upto: int, before: int) -> int:
        """Drop applied events received before ``before``: their keys are no longer needed
        to recognise repeats."""
        conn = self.inbox
        where = "FROM events WHERE id <= ? AND received_at < ?"
        if conn.execute(f"SELECT 1 {where} LIMIT 1", (applied_upto, before)).fetchone() is None:
            return 0           # nothing to drop: no write lock taken (a reader never waits)
        with self._inbox_write, conn:
            return conn.execute(f"DELETE {where}", (applied_upto, before)).rowcount

    # -- how far the inbox has been applied (written by metrics.live.apply only) ----------
    LIVE_APPLIED = "live_applied_upto"

    def inbox_id(self) -> str:
        """The inbox's identity, read once per connection (it never changes)."""
        if getattr(self, "_inbox_id", None) is None:
            self._inbox_id = self.inbox.execute(
                "SELECT value FROM meta WHERE key = 'inbox_id'").fetchone()[0]
        return self._inbox_id

    def live_applied(self, conn: sqlite3.Connection | None = None) -> int:
        """The id of the last inbox event applied to this database (0: none of this inbox)."""
        value = (conn or self.conn).execute("SELECT value FROM settings WHERE key = ?",
                                            (self.LIVE_APPLIED,)).fetchone()
        inbox, _, upto = (value[0] if value else "").rpartition(":")
        return int(upto) if inbox == self.inbox_id() and upto.isdigit() else 0

    def set_live_applied(self, conn: sqlite3.Connection, upto: int) -> None:
        self.set_setting(self.LIVE_APPLIED, f"{self.inbox_id()}:{upto}", conn)

    def health(self) -> dict:
        """Raises unless the main database can be read and the inbox (where an
        acknowledged event is written) can be written; says how many events wait to be
        applied."""
        self.conn.execute("SELECT COUNT(*) FROM settings").fetchone()
        inbox = self.inbox
        inbox.execute("BEGIN IMMEDIATE")
        inbox.rollback()
        pending = inbox.execute("SELECT COUNT(*) FROM events WHERE id > ?",
                                (self.live_applied(),)).fetchone()[0]
        return {"pending_events": pending}

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
            key = self._key_from_file()
        fingerprint = hashlib.sha256(b"kpibot-key-fingerprint:" + key).hexdigest()[:16]
        stored = self.get_setting("hash_key_fingerprint")
        if stored is None:
            with self.transaction() as conn:   # the first one to store it wins
                conn.execute("INSERT INTO settings(key, value) VALUES ('hash_key_fingerprint', ?) "
                             "ON CONFLICT(key) DO NOTHING", (fingerprint,))
                stored = conn.execute("SELECT value FROM settings "
                                      "WHERE key = 'hash_key_fingerprint'").fetchone()[0]
        if stored != fingerprint:
            raise HashKeyMismatch(
                "The phone-number hash key is not the one this database was built with "
                f"(set {HASH_KEY_ENV} to the original key, or restore {self.key_path()})."
            )
        self._hash_key = key
        return key

    def key_path(self) -> Path:
        return self.path.resolve().parent / HASH_KEY_FILE

    def _key_from_file(self) -> bytes:
        """The key in the file beside the database, generated if there is none. The file
        appears whole or not at all: the key is written to a temporary file that is then
        hard-linked into place, which fails when another process got there first, and
        then that process's key is the one. (Where hard links are not supported, the
        file is created exclusively and written at once; readers wait for its content.)"""
        key_path = self.key_path()
        try:
            try:
                return _read_key(key_path)
            except FileNotFoundError:
                pass
            key = secrets.token_hex(32).encode()
            fd, tmp = tempfile.mkstemp(prefix=HASH_KEY_FILE + ".", dir=key_path.parent)  # 0600
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(key + b"\n")
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, key_path)
                except FileExistsError:
                    return _read_key(key_path)
                except OSError:   # no hard links on this file system
                    try:
                        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    except FileExistsError:
                        return _read_key(key_path)
                    with os.fdopen(fd, "wb") as f:
                        f.write(key + b"\n")
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return key
        except OSError as exc:
            raise StoreError(_key_file_problem(key_path, exc)) from exc

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
        cur = self.conn.execute("SELECT * FROM campaigns ORDER BY name_key")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur]
