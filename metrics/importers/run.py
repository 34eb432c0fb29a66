"""The import driver: one file in one transaction, streamed in batches."""
from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ImportRejected, MappingError, RowError
from ..phones import PhoneHasher
from ..store import Store, iso, name_key, utcnow
from ..times import zone
from .formats import (CALL_COLUMNS, DAILY_COLUMNS, FORMATS, MESSAGE_COLUMNS, Context, RowProblem,
                      bind, detect)
from .mapping import Mapping, load_mapping
from .source import CsvSource

BATCH = 5_000
MAX_REPORTED = 50
REPLY_WINDOW_S = 7 * 86400

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


_SQL = {
    "message": (
        f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) VALUES "
        f"({', '.join('?' * len(MESSAGE_COLUMNS))}) ON CONFLICT(message_key) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in MESSAGE_COLUMNS[1:])
    ),
    "call": (
        f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) VALUES "
        f"({', '.join('?' * len(CALL_COLUMNS))}) ON CONFLICT(call_key) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in CALL_COLUMNS[1:])
    ),
    "daily": (
        f"INSERT INTO daily ({', '.join(DAILY_COLUMNS)}) VALUES "
        f"({', '.join('?' * len(DAILY_COLUMNS))}) ON CONFLICT(campaign_id, date, channel) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in DAILY_COLUMNS[3:])
    ),
}
_TABLE = {"message": "messages", "call": "calls", "daily": "daily"}


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
) -> ImportResult:
    """Import one CSV file. Strict by default: any bad row rejects the whole file and
    nothing changes. With ``skip_bad_rows`` the good rows land and the bad are reported.
    Re-importing rows (same provider id, or the same id-less row) counts them once."""
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
    tz = zone(store.timezone())
    phones = PhoneHasher(store.hash_key(), default_region or os.environ.get("KPIBOT_REGION", "US"))
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
    table = _TABLE[fmt.kind]
    sql = _SQL[fmt.kind]
    total_errors = 0
    try:
        with store.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO imports(file, sha256, size_bytes, format, encoding, started_at, "
                "imported_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (str(path), src.sha256, src.size, result.format, src.encoding, iso(utcnow()),
                 imported_by or _whoami()))
            import_id = cur.lastrowid
            campaign_cache: dict[tuple[str, str], int] = {}
            touched: dict[int, str] = {}

            def campaign_id(name: str, channel: str) -> int:
                k = (name, channel)
                cid = campaign_cache.get(k)
                if cid is None:
                    if len(name) > 200:
                        raise RowProblem("campaign", "campaign name is over 200 characters")
                    cid = store.campaign_id(conn, name, channel)
                    campaign_cache[k] = cid
                    touched.setdefault(cid, name)
                return cid

            ctx = Context(tz=tz, phones=phones, campaign_id=campaign_id, import_id=import_id,
                          campaign=campaign, senders=dict(mapping.senders) if mapping else {})
            try:
                plan = bind(fmt, src.header, ctx, column_mapping)
            except ValueError as exc:
                raise ImportRejected(str(exc), file=src.name) from None
            if plan.ignored and fmt.name not in ("twilio-messages", "twilio-calls"):
                result.warnings.append("columns not imported: " + ", ".join(plan.ignored))
            max_before = conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {table}").fetchone()[0]
            count_before = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] \
                if fmt.kind == "daily" else 0
            build = plan.build
            batch: list[tuple] = []
            rows_in = 0
            errors = result.errors
            stop_writing = False
            for line, fields in src.rows():
                rows_in += 1
                if isinstance(fields, RowError):
                    total_errors += 1
                    if len(errors) < MAX_REPORTED:
                        errors.append(fields)
                    stop_writing = stop_writing or not skip_bad_rows
                    continue
                try:
                    row = build(fields)
                except RowProblem as exc:
                    total_errors += 1
                    if len(errors) < MAX_REPORTED:
                        errors.append(RowError(line, exc.column, exc.reason))
                    stop_writing = stop_writing or not skip_bad_rows
                    continue
                if stop_writing:
                    continue
                batch.append(row)
                if len(batch) >= BATCH:
                    conn.executemany(sql, batch)
                    batch.clear()
                    if progress:
                        progress(src.bytes_read(), src.size)
            if rows_in == 0:
                raise ImportRejected("the file has a header but no data rows", file=src.name)
            if total_errors and not skip_bad_rows:
                raise ImportRejected(
                    f"rejected: {total_errors:,} bad row{'s' * (total_errors != 1)} out of "
                    f"{rows_in:,}; nothing was imported (fix them, or pass --skip-bad-rows to "
                    "import the good rows)", file=src.name, errors=errors[:20],
                    total_errors=total_errors)
            if batch:
                conn.executemany(sql, batch)
            if fmt.kind == "message":
                attribute_replies(conn, reply_window_s)
            if ctx.attributes:
                conn.executemany(
                    "INSERT OR IGNORE INTO attribute_names(campaign_id, kind, name) VALUES (?, ?, ?)",
                    [(cid, fmt.kind, n) for cid, n in sorted(ctx.attributes)])
            if fmt.kind == "daily":
                new = conn.execute("SELECT COUNT(*) FROM daily").fetchone()[0] - count_before
            else:
                new = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE rowid > ?",
                                   (max_before,)).fetchone()[0]
            result.rows_in, result.rows_new, result.rows_rejected = rows_in, new, total_errors
            result.import_id = import_id
            result.campaigns = sorted(set(touched.values()), key=name_key)
            if phones.invalid:
                result.warnings.append(
                    f"{phones.invalid:,} phone number{'s are' if phones.invalid != 1 else ' is'} "
                    "not valid for its country (kept; the country comes from the calling code)")
            conn.execute("UPDATE imports SET finished_at = ?, rows_in = ?, rows_new = ?, "
                         "rows_rejected = ? WHERE id = ?",
                         (iso(utcnow()), rows_in, new, total_errors, import_id))
            if errors:
                conn.executemany(
                    'INSERT INTO import_rejects(import_id, line, "column", reason) VALUES (?,?,?,?)',
                    [(import_id, e.line, e.column, e.reason) for e in errors])
            if progress:
                progress(src.size, src.size)
            if dry_run:
                raise _DryRun()
    except _DryRun:
        result.import_id = None
    return result


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
