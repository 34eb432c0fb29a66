"""Twilio BulkExport day files (format ``twilio-bulk``): gzipped JSON, one record a line,
shaped like the REST API's Message (or Call) resource, times in ISO 8601 UTC, without
``price_unit``.

A day file is turned, as it streams, into a CSV of the ``twilio-messages`` (or
``twilio-calls``) format in a temporary file, which the importer then reads as any
other: the same checks, keys and campaign rules. Line numbers in what it reports are
the day file's."""
from __future__ import annotations

import csv
import gzip
import json
import os
import tempfile
import zlib
from pathlib import Path

from ..errors import ImportRejected, RowError

MESSAGE_HEADER = ["Sid", "From", "To", "Body", "Status", "SentDate", "Direction",
                  "NumSegments", "ErrorCode", "Price", "PriceUnit", "MessagingServiceSid"]
_MESSAGE_FIELDS = ["sid", "from", "to", "body", "status", "date_sent", "direction",
                   "num_segments", "error_code", "price", "price_unit",
                   "messaging_service_sid"]
CALL_HEADER = ["sid", "from", "to", "status", "start_time", "duration", "price", "price_unit",
               "direction", "answered_by"]
_CALL_FIELDS = ["sid", "from", "to", "status", "start_time", "duration", "price", "price_unit",
                "direction", "answered_by"]


def looks_like_day_file(path: str | os.PathLike) -> bool:
    """Gzip whose content starts with a JSON object (a gzipped CSV is something else)."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                return False
        with gzip.open(path, "rb") as f:
            return f.read(4096).lstrip().startswith(b"{")
    except (OSError, EOFError, zlib.error):
        return False


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def to_csv(path: str | os.PathLike, skip_bad_rows: bool = False
           ) -> tuple[Path, str, list[str], "LineMap"]:
    """Convert a day file into a temporary CSV (the caller removes it). Returns the CSV's
    path, the format to read it with, warnings, and the map from the CSV's line numbers
    to the day file's. A line that is not a JSON object is a
    bad row (strict: the file is refused, naming it)."""
    src = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="kpibot-bulk-", suffix=".csv")
    kind = None
    bad: list[RowError] = []
    rows = 0
    shifts: list[tuple[int, int]] = []     # (CSV line, day-file line - CSV line) from there
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as out, \
                gzip.open(src, "rt", encoding="utf-8", errors="replace") as lines:
            writer = csv.writer(out)
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except (ValueError, RecursionError):    # incl. too deep, too many digits
                    rec = None
                if not isinstance(rec, dict):
                    bad.append(RowError(n, None, "not a JSON object"))
                    continue
                if kind is None:
                    kind = "call" if ("start_time" in rec or str(rec.get("sid", ""))
                                      .startswith("CA")) else "message"
                    writer.writerow(MESSAGE_HEADER if kind == "message" else CALL_HEADER)
                fields = _MESSAGE_FIELDS if kind == "message" else _CALL_FIELDS
                try:
                    values = [_cell(rec.get(f)) for f in fields]
                except (ValueError, RecursionError):   # a number too long to print
                    bad.append(RowError(n, None, "a value cannot be read"))
                    continue
                if kind == "message" and not values[5]:      # not sent (yet): its creation
                    values[5] = _cell(rec.get("date_created"))
                writer.writerow(values)
                rows += 1
                # the CSV's data row k is on its line k + 1 (after the header)
                if n - (rows + 1) != (shifts[-1][1] if shifts else -1):
                    shifts.append((rows + 1, n - (rows + 1)))
    except (OSError, EOFError, zlib.error) as exc:
        os.unlink(tmp)
        raise ImportRejected(f"cannot read the gzipped day file ({exc})", file=src.name) from None
    except BaseException:
        os.unlink(tmp)
        raise
    if kind is None:
        os.unlink(tmp)
        raise ImportRejected("the day file holds no records", file=src.name, errors=bad[:20],
                             total_errors=len(bad))
    warnings = []
    if bad and not skip_bad_rows:
        os.unlink(tmp)
        what = "line is not a JSON object" if len(bad) == 1 else "lines are not JSON objects"
        raise ImportRejected(f"rejected: {len(bad):,} {what}; nothing was imported (pass "
                             "--skip-bad-rows to import the others)", file=src.name,
                             errors=bad[:20], total_errors=len(bad))
    if bad:
        what = "line was not a JSON object" if len(bad) == 1 else "lines were not JSON objects"
        warnings.append(f"{len(bad):,} {what} and skipped (first: line {bad[0].line})")
    return (Path(tmp), "twilio-messages" if kind == "message" else "twilio-calls", warnings,
            LineMap(shifts))


class LineMap:
    """The day file's line number of a line of the CSV made from it."""

    def __init__(self, shifts: list[tuple[int, int]]):
        self.starts = [s for s, _ in shifts]
        self.shifts = [d for _, d in shifts]

    def __call__(self, csv_line: int) -> int:
        import bisect
        i = bisect.bisect_right(self.starts, csv_line) - 1
        return csv_line + (self.shifts[i] if i >= 0 else -1)   # line 1 is CSV line 2
