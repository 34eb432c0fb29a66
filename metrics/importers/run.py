"""The import driver: one file in one transaction, parsed as a stream of row batches."""
from __future__ import annotations

import gc
import getpass
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Callable, Iterator

from ..rollup import KINDS, NewRowCounter, Rollup
from ..errors import ImportRejected, KpiBotError, MappingError, RowError, StoreError
from ..store import NO_SPACE, Store, iso, no_space_message, utcnow
from ..times import zone
from .formats import CALL_COLUMNS, DAILY_COLUMNS, FORMATS, MESSAGE_COLUMNS, NULL, detect
from .mapping import Mapping, load_mapping
from .parse import ParseJob, parse
from .source import CsvSource

REPLY_WINDOW_S = 7 * 86400
IMPORT_CACHE_KIB = 48 * 1024  # holds a million-row import's key index: the writer's biggest piece
# SQLite sorts (index builds, the reach tables) in runs of about the page cache's size:
# small runs, sorted by helper threads and merged, beat one big sort in memory by half.
SORT_CACHE_KIB = 2 * 1024
SORT_THREADS = min(4, os.cpu_count() or 1)
PARALLEL_BYTES = 4 << 20       # files this big are parsed in a second process
SUSPEND_INDEX_ROWS = 50_000    # bulk loads this big rebuild the time index at the end

FORMAT_NAMES = tuple(FORMATS)


@dataclass
class ImportResult:
    """What happened to one file."""

    file: str
    format: str
    encoding: str
    sha256: str
    rows_in: int = 0
    rows_new: int = 0
    rows_rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    campaigns: list[str] = field(default_factory=list)
    import_id: int | None = None
    seen_before: str | None = None      # when this exact file was imported before
    dry_run: bool = False

    @property
    def rows_existing(self) -> int:
        """Rows already in the database (re-imported or overlapping exports): counted once."""
        return self.rows_in - self.rows_rejected - self.rows_new

    def summary(self) -> str:
        verb = "would import" if self.dry_run else "imported"
        parts = [f"{self.file}: {verb} {self.rows_new:,} new row{'s' * (self.rows_new != 1)} "
                 f"({self.format})"]
        if self.rows_existing:
            parts.append(f"{self.rows_existing:,} already present (updated, counted once)")
        if self.rows_rejected:
            parts.append(f"{self.rows_rejected:,} rejected")
        line = ", ".join(parts)
        if self.campaigns:
            shown = ", ".join(self.campaigns[:5]) + (" …" if len(self.campaigns) > 5 else "")
            line += f"; campaigns: {shown}"
        return line


_KEYS = {"message": ("messages", MESSAGE_COLUMNS, ("message_key",)),
         "call": ("calls", CALL_COLUMNS, ("call_key",)),
         "daily": ("daily", DAILY_COLUMNS, ("campaign_id", "date", "channel"))}


class _Statements:
    """The two statements a batch goes in with: an insert that skips rows already present,
    and an upsert for batches where some were. The upsert updates the stored row when the
    file's copy differs (the later copy wins; identical rows are left alone, so
    re-importing an export rewrites nothing).

    A built row holds ``NULL`` ("") for no value. Each batch gets statements fitted to it:
    a nullable column that is empty in every row of the batch is the literal NULL (and
    not sent), one that is empty in some rows is read through NULLIF(?, ''), the others
    are bound as they are; the import's id is a literal. Per-row function calls and
    parameters are what an insert costs from Python, so this takes about a tenth off."""

    def __init__(self, conn, kind: str, import_id: int):
        self.table, self.columns, self.key = _KEYS[kind]
        info = conn.execute(f"PRAGMA table_info({self.table})").fetchall()
        nullable = {name for _, name, _, notnull, _, pk in info if not notnull and not pk}
        self.nullable = [i for i, c in enumerate(self.columns)
                         if c in nullable and c != "import_id"]
        self.import_at = self.columns.index("import_id")
        self.import_id = int(import_id)
        self._made: dict[tuple, tuple[str, str, list[int]]] = {}

    def for_batch(self, columns: list) -> tuple[str, str, list]:
        """The insert and the upsert for this batch, and the columns they bind."""
        shape = [0] * len(self.columns)
        for i in self.nullable:
            empty = columns[i].count(NULL)
            if empty:
                shape[i] = 2 if empty == len(columns[i]) else 1
        shape[self.import_at] = 3
        made = self._made.get(key := tuple(shape))
        if made is None:
            made = self._made[key] = self._make(key)
        insert, upsert, bound = made
        return insert, upsert, [columns[i] for i in bound]

    def _make(self, shape: tuple) -> tuple[str, str, list[int]]:
        table, columns, key = self.table, self.columns, self.key
        values = ", ".join(("?", "NULLIF(?, '')", "NULL", str(self.import_id))[k] for k in shape)
        bound = [i for i, k in enumerate(shape) if k < 2]
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"
        data = [c for c in columns if c not in key and c != "import_id"]
        stored = ", ".join(f"{table}.{c}" for c in data)
        incoming = ", ".join(f"excluded.{c}" for c in data)
        upsert = (f"{head} ON CONFLICT({', '.join(key)}) DO UPDATE SET "
                  + ", ".join(f"{c} = excluded.{c}" for c in data + ["import_id"])
                  + f" WHERE ({stored}) IS NOT ({incoming})")
        return head.replace("INSERT", "INSERT OR IGNORE", 1), upsert, bound


_TABLE = {kind: table for kind, (table, _, _) in _KEYS.items()}


def import_file(
    store: Store,
    path: str | os.PathLike,
    *,
    format: str | None = None,
    campaign: str | None = None,
    mapping: str | os.PathLike | Mapping | None = None,
    skip_bad_rows: bool = False,
    dry_run: bool = False,
    imported_by: str | None = None,
    default_region: str | None = None,
    reply_window_s: int = REPLY_WINDOW_S,
    progress: Callable[[int, int], None] | None = None,
    parallel: bool | None = None,
) -> ImportResult:
    """Import one CSV file. Strict by default: any bad row rejects the whole file and
    nothing changes. With ``skip_bad_rows`` the good rows land and the bad are reported.
    Re-importing rows (same provider id, or the same id-less row) counts them once.

    Files over a few megabytes are parsed in a second process while this one writes
    (``parallel`` forces the choice either way)."""
    if format is not None and format not in FORMATS:
        raise ImportRejected(f"unknown format '{format}' (known: {', '.join(FORMATS)})")
    if mapping is not None and not isinstance(mapping, Mapping):
        try:
            mapping = load_mapping(mapping)
        except MappingError as exc:
            raise ImportRejected(str(exc)) from None
    column_mapping = mapping if (mapping and (mapping.columns or mapping.constants or mapping.values
                                              or mapping.attributes or mapping.format != "events"
                                              or mapping.delimiter)) else None
    src = CsvSource(path, delimiter=mapping.delimiter if mapping else None)
    if column_mapping is not None:
        fmt_name = column_mapping.format
    else:
        fmt_name = format or detect(src.header)
    if fmt_name is None:
        raise ImportRejected(
            "could not tell the format from the header (" + ", ".join(src.header[:12])
            + "). Name it with --format (" + ", ".join(FORMATS)
            + ") or describe the columns in a --map file.", file=src.name)
    fmt = FORMATS[fmt_name]
    if fmt.twilio and not campaign and not (mapping and mapping.senders):
        raise ImportRejected(
            "a Twilio export does not say which campaign its rows belong to: pass "
            "--campaign NAME, or map sender numbers to campaigns in a --map file's "
            "[campaign_by_sender] table", file=src.name)
    tz_name = store.timezone()
    zone(tz_name)   # an unknown zone is an error before anything starts
    result = ImportResult(file=src.name, format=fmt_name if column_mapping is None else
                          f"{fmt_name} via {column_mapping.path.name}",
                          encoding=src.encoding, sha256=src.sha256, warnings=list(src.warnings),
                          dry_run=dry_run)
    prev = store.conn.execute("SELECT started_at FROM imports WHERE sha256 = ? ORDER BY id DESC",
                              (src.sha256,)).fetchone()
    if prev:
        result.seen_before = prev[0]
        result.warnings.append(f"this exact file was imported before ({prev[0]}); "
                               "its rows are counted once")
    if parallel is None:
        parallel = src.size >= PARALLEL_BYTES
    table = _TABLE[fmt.kind]
    hash_key = store.hash_key()
    # A bigger page cache for the duration of the import: inserts into the key index land
    # at random places, and re-reading evicted pages dominates otherwise.
    cache_before = store.conn.execute("PRAGMA cache_size").fetchone()[0]
    threads_before = store.conn.execute("PRAGMA threads").fetchone()[0]
    store.conn.execute(f"PRAGMA cache_size=-{IMPORT_CACHE_KIB}")
    store.conn.execute(f"PRAGMA threads={SORT_THREADS}")
    # SQLite's per-row foreign-key lookups cost a sixth of the insert time; the importer
    # checks the same references once per batch instead (see _check_references), and
    # turns enforcement back on when it is done. (It can only change between transactions.)
    store.conn.execute("PRAGMA foreign_keys=OFF")
    # The rows of every batch are tuples, which Python's cyclic collector tracks: left on,
    # it ran two thousand times in a million-row import and took a second. Nothing here
    # makes reference cycles to speak of; young objects are collected by hand below.
    gc_was_on = gc.isenabled()
    gc.disable()
    batches = 0
    try:
        with store.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO imports(file, sha256, size_bytes, format, encoding, started_at, "
                "imported_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (str(path), src.sha256, src.size, result.format, src.encoding, iso(utcnow()),
                 imported_by or _whoami()))
            import_id = cur.lastrowid
            next_id = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM campaigns").fetchone()[0]
            job = ParseJob(
                source=src.state(), format=fmt_name, mapping=column_mapping, campaign=campaign,
                tz=tz_name, hash_key=hash_key,
                region=default_region or os.environ.get("KPIBOT_REGION", "US"),
                import_id=import_id, campaigns=store.campaign_channels(conn),
                next_campaign_id=next_id, skip_bad_rows=skip_bad_rows,
                senders=dict(mapping.senders) if mapping else {})
            max_before = conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {table}").fetchone()[0]
            rebuild = _suspend_indexes(conn, table, src.estimated_rows(), max_before)
            errors = result.errors
            campaign_ids = {cid for cid, _ in job.campaigns.values()}
            campaign_col = 0 if fmt.kind == "daily" else 1
            # Each batch goes in sorted by its unique key (stable, so a later copy of a row
            # still wins): neighbouring keys share index pages, which roughly halves the
            # cost of the inserts once the key index outgrows SQLite's page cache.
            sort_key = itemgetter(0) if fmt.kind != "daily" else itemgetter(0, 1, 2)
            statements = _Statements(conn, fmt.kind, import_id)
            present = False    # met a row that was already stored
            # New rows are counted for the rollups batch by batch while the parser works;
            # from the first batch that cannot be (it met stored rows), SQL counts the rest.
            counted = (NewRowCounter(conn, fmt.kind, _KEYS[fmt.kind][1])
                       if fmt.kind in KINDS and KINDS[fmt.kind].profile else None)
            counting, counted_upto = counted is not None, None
            last_rowid = f"SELECT COALESCE(MAX(rowid), 0) FROM {table}"
            for message in (_in_child(job) if parallel else parse(job)):
                kind = message[0]
                if kind == "rows":
                    _, columns, row_errors, done_bytes = message
                    if columns:
                        _check_references(columns, campaign_col, campaign_ids, import_id)
                        insert, upsert, bound = statements.for_batch(columns)
                        rows = list(zip(*bound))
                        rows.sort(key=sort_key)
                        if counting:
                            before = conn.execute(last_rowid).fetchone()[0]
                        # New rows (the usual case) go in with a plain insert; once a
                        # batch meets stored rows, it and the rest go through the upsert.
                        if present or conn.executemany(insert, rows).rowcount != len(rows):
                            present = True
                            conn.executemany(upsert, rows)
                        if counting and (present or not counted.add(columns)):
                            counting, counted_upto = False, before
                        if counting and counted.held_bytes() > counted.WRITE_AT:
                            counted.write()
                    errors.extend(row_errors)
                    batches += 1
                    if batches % 16 == 0:
                        gc.collect(1)
                    if progress:
                        progress(done_bytes, src.size)
                elif kind == "campaign":
                    _, cid, name, channel, new = message
                    store.put_campaign(conn, cid, name, channel, new=new)
                    campaign_ids.add(cid)
                else:
                    _, rows_in, total_errors, attributes, invalid, touched, ignored = message
            if ignored and not fmt.twilio:   # Twilio's AccountSid, ApiVersion: not wanted
                result.warnings.append("columns not imported: " + ", ".join(ignored))
            if rows_in == 0:
                raise ImportRejected("the file has a header but no data rows", file=src.name)
            if total_errors and not skip_bad_rows:
                raise ImportRejected(
                    f"rejected: {total_errors:,} bad row{'s' * (total_errors != 1)} out of "
                    f"{rows_in:,}; nothing was imported (fix them, or pass --skip-bad-rows to "
                    "import the good rows)", file=src.name, errors=errors[:20],
                    total_errors=total_errors)
            if counting:
                # while the import's page cache still holds the rollup table: written
                # after the switch to the small cache below, this took seconds
                counted.write()
            # what is left is mostly sorting (see SORT_CACHE_KIB)
            conn.execute(f"PRAGMA cache_size=-{SORT_CACHE_KIB}")
            for sql_create in rebuild:
                conn.execute(sql_create)
            if fmt.kind == "message":
                attribute_replies(conn, reply_window_s)
            if fmt.kind in KINDS:
                rollup = Rollup(conn, fmt.kind)
                if counted is None:
                    rollup.add_new_rows(max_before)
                else:
                    rollup.add_new_rows(max_before, counted, counted_upto)
                rollup.finish()
            if attributes:
                conn.executemany(
                    "INSERT OR IGNORE INTO attribute_names(campaign_id, kind, name) VALUES (?, ?, ?)",
                    [(cid, fmt.kind, n) for cid, n in attributes])
            # an updated row keeps its rowid, so the rows past the old maximum are the new ones
            new = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE rowid > ?",
                               (max_before,)).fetchone()[0]
            result.rows_in, result.rows_new, result.rows_rejected = rows_in, new, total_errors
            result.import_id = import_id
            result.campaigns = touched
            if invalid:
                result.warnings.append(
                    f"{invalid:,} row{'s have' if invalid != 1 else ' has'} a phone number that "
                    "is not valid for its country (kept; the country comes from the calling code)")
            conn.execute("UPDATE imports SET finished_at = ?, rows_in = ?, rows_new = ?, "
                         "rows_rejected = ? WHERE id = ?",
                         (iso(utcnow()), rows_in, new, total_errors, import_id))
            if errors:
                conn.executemany(
                    'INSERT INTO import_rejects(import_id, line, "column", reason) VALUES (?,?,?,?)',
                    [(import_id, e.line, e.column, e.reason) for e in errors])
            if dry_run:
                raise _DryRun()
    except _DryRun:
        result.import_id = None
    except OSError as exc:   # a temporary file on a full disk: the transaction is rolled back
        if exc.errno in NO_SPACE:
            raise StoreError(no_space_message(store.path, exc)) from exc
        raise
    finally:
        if gc_was_on:
            gc.enable()
        store.conn.execute("PRAGMA foreign_keys=ON")
        store.conn.execute(f"PRAGMA cache_size={cache_before}")
        store.conn.execute(f"PRAGMA threads={threads_before}")
    return result


def _in_child(job: ParseJob) -> Iterator[tuple]:
    """``parse(job)`` run in a second Python process, its messages read from a pipe."""
    # The very `metrics` this process runs, whatever the working directory holds.
    root = str(Path(__file__).resolve().parents[2])
    boot = (f"import sys; sys.path.insert(0, {root!r}); "
            "from metrics.importers.parse import child_main; child_main()")
    proc = subprocess.Popen([sys.executable, "-c", boot], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        pickle.dump(job, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        proc.stdin.close()
        while True:
            try:
                message = pickle.load(proc.stdout)
            except EOFError:
                raise KpiBotError("the import's parser process stopped unexpectedly "
                                  f"(exit code {proc.wait()}); nothing was imported") from None
            kind = message[0]
            if kind == "rejected":
                raise ImportRejected(message[1], file=message[2], errors=message[3],
                                     total_errors=message[4])
            if kind == "failed":
                raise KpiBotError(message[1])
            yield message
            if kind == "done":
                return
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def _check_references(columns: list, campaign_col: int, campaign_ids: set[int],
                      import_id: int) -> None:
    """What the foreign keys would check, for a whole batch: every row's campaign exists
    and every row belongs to this import."""
    unknown = set(columns[campaign_col]) - campaign_ids
    if unknown or set(columns[-1]) != {import_id}:
        raise KpiBotError(f"internal error: rows refer to campaigns {sorted(unknown)} or "
                          "another import; nothing was imported")


def _suspend_indexes(conn, table: str, new_rows: int, existing: int) -> list[str]:
    """For a bulk load, drop the table's time and reach indexes and return the SQL that
    rebuilds them.

    Rows arrive in no particular time order, so keeping a (campaign, time) index up to
    date means a random B-tree insert per row; building it once at the end is a sort,
    several times cheaper when the file is large next to the table. It happens inside the
    import's transaction, so other connections never see the table without it."""
    if new_rows < SUSPEND_INDEX_ROWS or new_rows * 4 < existing:
        return []
    found = conn.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND "
                         "tbl_name = ? AND (name LIKE '%campaign_time' OR name LIKE '%reach')", (table,)).fetchall()
    for name, _ in found:
        conn.execute(f"DROP INDEX {name}")
    return [sql for _, sql in found]


class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back."""


def attribute_replies(conn, window_s: int = REPLY_WINDOW_S) -> int:
    """Attribute each not-yet-attributed inbound message to the latest outbound message to
    the same number within the window before it, then mark those outbound messages as
    replied to (a reply that is not a keyword) or opted out (an opt-out keyword). Inbound
    replies move to the campaign of the message they answer."""
    # Few replies, many messages: scan the messages once against the open replies (SQLite
    # builds a temporary index on the small side) rather than index every recipient.
    conn.execute("DROP TABLE IF EXISTS temp.open_replies")
    conn.execute(
        """CREATE TEMP TABLE open_replies AS
           SELECT id, recipient, sent_at FROM messages
           WHERE direction = 'inbound' AND reply_to IS NULL AND recipient IS NOT NULL""")
    n = 0
    if conn.execute("SELECT COUNT(*) FROM temp.open_replies").fetchone()[0]:
        conn.execute("CREATE INDEX temp.open_replies_recipient ON open_replies(recipient)")
        conn.execute(
            """
            UPDATE messages AS i SET reply_to = best.outbound_id
            FROM (
                SELECT r.id AS reply_id, o.id AS outbound_id,
                       ROW_NUMBER() OVER (PARTITION BY r.id
                                          ORDER BY o.sent_at DESC, o.id DESC) AS rank
                FROM messages AS o JOIN temp.open_replies AS r ON o.recipient = r.recipient
                WHERE o.direction = 'outbound' AND o.sent_at <= r.sent_at
                  AND o.sent_at >= r.sent_at - ?
            ) AS best
            WHERE best.rank = 1 AND i.id = best.reply_id
            """, (window_s,))
        n = conn.execute("SELECT changes()").fetchone()[0]
    conn.execute("DROP TABLE temp.open_replies")
    conn.execute(
        """
        UPDATE messages SET opted_out = 1 WHERE opted_out = 0 AND id IN (
            SELECT reply_to FROM messages WHERE reply_to IS NOT NULL AND keyword = 'opt_out')
        """)
    conn.execute(
        """
        UPDATE messages SET replied = 1 WHERE replied = 0 AND id IN (
            SELECT reply_to FROM messages WHERE reply_to IS NOT NULL AND keyword IS NULL)
        """)
    conn.execute(
        """
        UPDATE messages AS i SET campaign_id = (SELECT o.campaign_id FROM messages o
                                                WHERE o.id = i.reply_to)
        WHERE i.reply_to IS NOT NULL AND i.campaign_id != (SELECT o.campaign_id FROM messages o
                                                           WHERE o.id = i.reply_to)
        """)
    return n


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"
