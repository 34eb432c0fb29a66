"""The import driver: one file in one transaction, parsed as a stream of row batches.

The parts: ``source`` checks and reads the file, ``parse`` turns it into batches of table
rows (in a second process for large files: ``child``), ``writer`` writes each batch,
``bulk`` sets up the load around the transaction; after the load, replies are
attributed (``metrics.replies``) and the rollups brought up to date."""
from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..rollup import KINDS, Rollup
from ..rollup_counter import NewRowCounter
from ..errors import ImportRejected, MappingError, RowError, StoreError
from ..replies import REPLY_WINDOW_S, attribute_replies
from ..store import NO_SPACE, Store, iso, no_space_message, utcnow
from ..times import zone
from .bulk import SUSPEND_INDEX_ROWS, BulkLoad
from .child import parse_in_child
from .fields import FORMATS, Format, detect, shown_names
from .mapping import Mapping
from .parse import ParseJob, parse
from . import named, spreadsheet, twilio_bulk
from .source import CsvSource
from .writer import TABLES, BatchWriter

PARALLEL_BYTES = 4 << 20       # files this big are parsed in a second process

BULK = "twilio-bulk"          # Twilio BulkExport day files (see twilio_bulk)
# Indexes of a kind's table that crediting a large load does not read but updates row by
# row: made again after it (``BulkLoad.suspend_indexes``)
LATE_INDEXES = {"conversion": ("conversions_named", "conversions_call", "conversions_campaign",
                               "conversions_uncredited")}
FORMAT_NAMES = tuple(FORMATS) + (BULK,)


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
    attribution: str | None = None      # what the conversions looked at were credited to

    @property
    def rows_existing(self) -> int:
        """Rows already in the database (re-imported or overlapping exports): counted once."""
        return self.rows_in - self.rows_rejected - self.rows_new

    def summary(self) -> str:
        verb = "would import" if self.dry_run else "imported"
        parts = [f"{self.file}: {verb} {self.rows_new:,} new row{'s' * (self.rows_new != 1)} "
                 f"({self.format})"]
        if self.rows_existing and self.format.startswith("conversions"):
            parts.append(f"{self.rows_existing:,} row{'s' * (self.rows_existing != 1)} of "
                         "orders already counted (a later copy updates its order)")
        elif self.rows_existing:
            parts.append(f"{self.rows_existing:,} already present (updated, counted once)")
        if self.rows_rejected:
            parts.append(f"{self.rows_rejected:,} rejected")
        line = ", ".join(parts)
        if self.campaigns:
            shown = ", ".join(self.campaigns[:5]) + (" …" if len(self.campaigns) > 5 else "")
            line += f"; campaigns: {shown}"
        if self.attribution:
            line += f"\n  {self.attribution}"
        return line


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
    source_name: str | None = None,
    sheet: str | None = None,
) -> ImportResult:
    """Import one CSV file, or one sheet of a spreadsheet (XLSX, XLS: the first, or
    ``sheet``, read as the CSV saved from it would be, its rows numbered as the sheet's).
    Strict by default: any bad row rejects the whole file and nothing changes. With
    ``skip_bad_rows`` the good rows land and the bad are reported. Re-importing rows
    (same provider id, or the same id-less row) counts them once.

    Files over a few megabytes are parsed in a second process while this one writes
    (``parallel`` forces the choice either way)."""
    if spreadsheet.kind_of(path) is not None:
        with spreadsheet.to_csv(path, sheet) as sheet_csv:
            return _import_csv(store, sheet_csv.path, sheet_csv, format=format,
                               campaign=campaign, mapping=mapping, skip_bad_rows=skip_bad_rows,
                               dry_run=dry_run, imported_by=imported_by,
                               default_region=default_region, reply_window_s=reply_window_s,
                               progress=progress, parallel=parallel,
                               source_name=source_name or str(path))
    if sheet is not None:
        raise ImportRejected(f"--sheet {sheet}: the file is not a spreadsheet (.xlsx or .xls)",
                             file=Path(path).name)
    return _import_csv(store, path, None, format=format, campaign=campaign, mapping=mapping,
                       skip_bad_rows=skip_bad_rows, dry_run=dry_run, imported_by=imported_by,
                       default_region=default_region, reply_window_s=reply_window_s,
                       progress=progress, parallel=parallel, source_name=source_name)


def _import_csv(store: Store, path: str | os.PathLike, sheet: "spreadsheet.SheetCsv | None",
                *, format: str | None, campaign: str | None,
                mapping: "str | os.PathLike | Mapping | None", skip_bad_rows: bool,
                dry_run: bool, imported_by: str | None, default_region: str | None,
                reply_window_s: int, progress: Callable[[int, int], None] | None,
                parallel: bool | None, source_name: str | None) -> ImportResult:
    if format == BULK or (format is None and mapping is None and twilio_bulk.looks_like_day_file(path)):
        return _import_bulk(store, path, campaign=campaign, mapping=mapping,
                            skip_bad_rows=skip_bad_rows, dry_run=dry_run,
                            imported_by=imported_by, default_region=default_region,
                            reply_window_s=reply_window_s, progress=progress, parallel=parallel)
    if format is not None and format not in FORMATS:
        raise ImportRejected(f"unknown format '{format}' (known: {', '.join(FORMAT_NAMES)})")
    if mapping is not None and not isinstance(mapping, Mapping):
        try:    # a file, else a named mapping (mappings/NAME.toml beside the database)
            mapping = named.load(store.path, mapping)
        except MappingError as exc:
            raise ImportRejected(str(exc)) from None
    column_mapping = mapping if (mapping and (mapping.columns or mapping.constants or mapping.values
                                              or mapping.attributes or mapping.format != "events"
                                              or mapping.delimiter)) else None
    src = CsvSource(path, delimiter=mapping.delimiter if mapping else None, sheet=sheet)
    # senders -> campaigns: the mapping file's, else the sources file's (KPIBOT_SOURCES)
    senders = dict(mapping.senders) if mapping and mapping.senders else {}
    sources_error = None
    if not senders and not campaign:
        from ..sources import SourcesFile
        sources = SourcesFile()
        senders, sources_error = dict(sources.get().senders), sources.error
    fmt = _format_of(src, format, campaign, mapping, column_mapping, senders, sources_error)
    tz_name = store.timezone()
    zone(tz_name)   # an unknown zone is an error before anything starts
    result = ImportResult(file=src.name, format=fmt.name if column_mapping is None else
                          f"{fmt.name} via {column_mapping.path.name}",
                          encoding=src.encoding, sha256=src.sha256, warnings=list(src.warnings),
                          dry_run=dry_run)
    if sheet is not None:
        result.format += f", sheet '{sheet.sheet}'"
    prev = store.conn.execute("SELECT started_at FROM imports WHERE sha256 = ? ORDER BY id DESC",
                              (src.sha256,)).fetchone()
    if prev:
        result.seen_before = prev[0]
        result.warnings.append(f"this exact file was imported before ({prev[0]}); "
                               "its rows are counted once")
    if parallel is None:
        parallel = src.size >= PARALLEL_BYTES
    table, columns_of_kind, _ = TABLES[fmt.kind]
    hash_key = store.hash_key()
    try:
        with BulkLoad(store) as bulk, store.transaction(dry_run=dry_run) as conn:
            cur = conn.execute(
                "INSERT INTO imports(file, sha256, size_bytes, format, encoding, started_at, "
                "imported_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (source_name or str(path), src.sha256, src.size, result.format, src.encoding,
                 iso(utcnow()),
                 imported_by or _whoami()))
            import_id = cur.lastrowid
            next_id = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM campaigns").fetchone()[0]
            job = ParseJob(
                source=src.state(), format=fmt.name, mapping=column_mapping, campaign=campaign,
                tz=tz_name, hash_key=hash_key,
                region=default_region or os.environ.get("KPIBOT_REGION", "US"),
                import_id=import_id, campaigns=store.campaign_channels(conn),
                next_campaign_id=next_id, skip_bad_rows=skip_bad_rows,
                senders=senders)
            max_before = conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {table}").fetchone()[0]
            bulk.suspend_indexes(conn, table, src.estimated_rows(), max_before,
                                 min_rows=SUSPEND_INDEX_ROWS, late=LATE_INDEXES.get(fmt.kind, ()))
            errors = result.errors
            writer = BatchWriter(conn, fmt.kind, import_id,
                                 {cid for cid, _ in job.campaigns.values()})
            # New rows are counted for the rollups batch by batch while the parser works;
            # from the first batch that cannot be (it met stored rows), SQL counts the rest.
            counted = (NewRowCounter(conn, fmt.kind, columns_of_kind)
                       if fmt.kind in KINDS and KINDS[fmt.kind].profile else None)
            counting, counted_upto = counted is not None, None
            for message in (parse_in_child(job) if parallel else parse(job)):
                kind = message[0]
                if kind == "rows":
                    _, columns, row_errors, done_bytes = message
                    if columns:
                        if counting:
                            before = writer.last_rowid()
                        writer.write(columns)
                        if counting and (writer.present or not counted.add(columns)):
                            counting, counted_upto = False, before
                        if counting and counted.held_bytes() > counted.WRITE_AT:
                            counted.write()
                    errors.extend(row_errors)
                    bulk.batch_done()
                    if progress:
                        progress(done_bytes, src.size)
                elif kind == "campaign":
                    _, cid, name, channel, new = message
                    store.put_campaign(conn, cid, name, channel, new=new)
                    writer.campaign_ids.add(cid)
                else:
                    _, rows_in, total_errors, attributes, invalid, touched, ignored = message
            if ignored and not fmt.twilio:   # Twilio's AccountSid, ApiVersion: not wanted
                result.warnings.append("columns not imported: " + shown_names(ignored))
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
            bulk.rebuild_indexes(conn)
            if fmt.kind == "message":
                attribute_replies(conn, reply_window_s)
            if fmt.kind in KINDS:
                rollup = Rollup(conn, fmt.kind)
                if counted is None:
                    rollup.add_new_rows(max_before)
                else:
                    rollup.add_new_rows(max_before, counted, counted_upto)
                rollup.finish()
            credited = _attribute(conn, fmt.kind, import_id, bulk)
            if credited is not None:
                result.attribution = credited.summary() or None
            bulk.rebuild_late(conn)
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
            result.import_id = None
    except OSError as exc:   # a temporary file on a full disk: the transaction is rolled back
        if exc.errno in NO_SPACE:
            raise StoreError(no_space_message(store.path, exc)) from exc
        raise
    return result


def _attribute(conn, kind: str, import_id: int, bulk: BulkLoad):
    """Clicks and conversions after a load: what the rows of this import (new or changed)
    claim, or may now be claimed by (``metrics.attribution``). Nothing to do, and nothing
    read, while the store has no clicks or conversions."""
    from .. import attribution as A
    from ..sources import SourcesFile
    if kind in ("message", "call") and not A.concerns(conn, kind):
        return None
    bulk.for_lookups(conn)
    codes = dict(SourcesFile().get().codes)
    scope = f"SELECT id FROM {TABLES[kind][0]} WHERE import_id = ?"
    if kind in ("message", "call"):
        return A.after_events(conn, kind, scope, (import_id,), codes)
    if kind == "click":
        return A.after_clicks(conn, scope, (import_id,), codes)
    if kind == "conversion":
        return A.credit(conn, scope, (import_id,), codes)
    return None


def _import_bulk(store: Store, path: str | os.PathLike, *, skip_bad_rows: bool,
                 **options) -> ImportResult:
    """A BulkExport day file: converted as it streams into a temporary CSV of the
    twilio-messages (or twilio-calls) format, imported as such, reported with the day
    file's name and line numbers."""
    name = os.path.basename(path)
    csv_path, fmt, warnings, line_of = twilio_bulk.to_csv(path, skip_bad_rows)
    try:
        try:
            result = import_file(store, csv_path, format=fmt, skip_bad_rows=skip_bad_rows,
                                 source_name=str(path), **options)
        except ImportRejected as exc:
            exc.file = name
            for e in exc.errors:
                e.line = line_of(e.line)
            raise
    finally:
        os.unlink(csv_path)
    result.file, result.format = name, f"{BULK} ({fmt})"
    result.warnings = warnings + result.warnings
    for e in result.errors:
        e.line = line_of(e.line)
    return result


def _format_of(src: CsvSource, format: str | None, campaign: str | None,
               mapping: Mapping | None, column_mapping: Mapping | None,
               senders: dict[str, str], sources_error: str | None = None) -> Format:
    """The file's format: the mapping's, the one named, or the one its header shows."""
    if column_mapping is not None:
        fmt_name = column_mapping.format
    else:
        fmt_name = format or detect(src.header)
    if fmt_name is None:
        raise ImportRejected(
            "could not tell the format from the header (" + shown_names(src.header)
            + "). Name it with --format (" + ", ".join(FORMATS)
            + ") or describe the columns in a --map file.", file=src.name)
    fmt = FORMATS[fmt_name]
    if campaign and fmt.kind in ("click", "conversion"):
        raise ImportRejected(
            f"--campaign does not apply to {fmt.name} files: a click belongs to its message, "
            "and a conversion is credited to a message, or through its code to a campaign",
            file=src.name)
    if fmt.twilio and not campaign and not senders:
        raise ImportRejected(
            "a Twilio export does not say which campaign its rows belong to: pass "
            "--campaign NAME, or map sender numbers to campaigns in the [campaign_by_sender] "
            "table of a --map file or of the KPIBOT_SOURCES file"
            + (f" (which could not be read: {sources_error})" if sources_error else ""),
            file=src.name)
    return fmt


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"
