"""Streaming CSV input: encoding, delimiter, header checks and per-row line numbers."""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
import shlex
from pathlib import Path
from typing import Iterator

from ..errors import ImportRejected, RowError
from .fields import normalise_header

__all__ = ["MAX_FIELD", "CsvSource", "normalise_header", "prepare_csv_reading"]

MAX_FIELD = 65_536          # characters; larger values are rejected row by row
_CHUNK = 1 << 20
_BLOCK = 1 << 18              # characters of lines handed to the CSV reader at once
_SAMPLE_LINES = 20            # lines after the header that the delimiter is sniffed on
_SAMPLE_CHARS = 1 << 14       # ... at most this many characters of them
CSV_FIELD_LIMIT = 1 << 30     # characters; see prepare_csv_reading
LATIN1_FALLBACK = "kpibot-latin1"   # the codecs error handler cp1252 files are read with


def prepare_csv_reading() -> None:
    """Set up the process-wide state that reading kpibot's CSV files needs; idempotent.

    - The csv module's field size limit goes up (to 2**30, never down): a value over its
      default 131,072 characters must be a bad row of its own (see MAX_FIELD), not a
      csv.Error that rejects the whole file as malformed.
    - The codecs error handler ``kpibot-latin1`` is registered: cp1252 files read the
      bytes cp1252 leaves undefined as Latin-1.

    Importing ``metrics`` changes neither: this runs where the CLI starts
    (``bot.cli.main``) and wherever a file is opened for reading (``CsvSource._open``,
    in the parser process too), as sqlite-utils' CLI calls its
    ``maximize_csv_field_size_limit()``."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        codecs.lookup_error(LATIN1_FALLBACK)
    except LookupError:
        codecs.register_error(LATIN1_FALLBACK, _latin1_fallback)


class CsvSource:
    """One CSV file, checked up front (sha256, encoding, header) and then streamed."""

    def __init__(self, path: str | os.PathLike, delimiter: str | None = None):
        self.path = Path(path)
        self.name = self.path.name
        self.warnings: list[str] = []
        if not self.path.exists():
            raise ImportRejected("file not found", file=str(path))
        if self.path.is_dir():
            raise ImportRejected("is a folder, not a CSV file", file=str(path))
        self.size = self.path.stat().st_size
        if self.size == 0:
            raise ImportRejected("the file is empty (0 bytes): nothing to import", file=self.name)
        self.sha256, self.encoding = self._scan()
        self._fh = None
        head = self._head()
        if not head[0].strip():
            raise ImportRejected("the first line is blank: the file must start with a header row",
                                 file=self.name)
        self.delimiter = delimiter or _sniff_delimiter(head)
        self.header = self._read_header()

    def state(self) -> dict:
        """What another process needs to stream this checked file again (see ``reopen``)."""
        return {"path": str(self.path), "name": self.name, "size": self.size,
                "sha256": self.sha256, "encoding": self.encoding, "delimiter": self.delimiter,
                "header": self.header}

    @classmethod
    def reopen(cls, state: dict) -> "CsvSource":
        """A source for a file already checked by ``CsvSource(path)``, without re-reading it."""
        self = cls.__new__(cls)
        self.path = Path(state["path"])
        self.warnings = []
        self._fh = None
        for k in ("name", "size", "sha256", "encoding", "delimiter", "header"):
            setattr(self, k, state[k])
        return self

    def _scan(self) -> tuple[str, str]:
        """One pass over the bytes: the sha256, and whether they are valid UTF-8."""
        digest = hashlib.sha256()
        utf8 = codecs.getincrementaldecoder("utf-8")()
        is_utf8 = True
        with open(self.path, "rb") as f:
            head = f.read(16)
            f.seek(0)
            binary = _not_text(head, self.path)
            if binary:
                raise ImportRejected(binary, file=self.name)
            if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    digest.update(chunk)
                self.warnings.append("read as UTF-16 (it has a UTF-16 byte-order mark)")
                return digest.hexdigest(), "utf-16"
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
                # ASCII is valid UTF-8, and checking for it is ten times cheaper than
                # decoding, as long as no multi-byte character is left open from before
                if is_utf8 and not (chunk.isascii() and not utf8.getstate()[0]):
                    try:
                        utf8.decode(chunk)
                    except UnicodeDecodeError:
                        is_utf8 = False
            if is_utf8:
                try:
                    utf8.decode(b"", final=True)
                except UnicodeDecodeError:
                    is_utf8 = False
        if is_utf8:
            return digest.hexdigest(), ("utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8")
        self.warnings.append("not valid UTF-8: read as Windows-1252 (Latin-1); "
                             "check accented names look right")
        return digest.hexdigest(), "cp1252"

    def _open(self) -> io.TextIOWrapper:
        prepare_csv_reading()
        errors = "strict" if self.encoding != "cp1252" else "replace"
        if self.encoding == "cp1252":
            # bytes cp1252 leaves undefined (0x81, 0x8d, 0x8f, 0x90, 0x9d) read as Latin-1
            errors = LATIN1_FALLBACK
        return open(self.path, "r", encoding=self.encoding, errors=errors, newline="")

    def _head(self) -> list[str]:
        """The first line, then up to _SAMPLE_LINES whole lines after it (at most
        _SAMPLE_CHARS characters of them): what the delimiter is sniffed on."""
        with self._open() as f:
            lines = [f.readline(_CHUNK)]
            left = _SAMPLE_CHARS
            while left > 0 and len(lines) <= _SAMPLE_LINES:
                line = f.readline(left)
                if not line or (len(line) == left and not line.endswith(("\n", "\r"))):
                    break   # the end of the file, or a line cut short
                lines.append(line)
                left -= len(line)
        return lines

    def _read_header(self) -> list[str]:
        with self._open() as f:
            reader = csv.reader(f, delimiter=self.delimiter)
            header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise ImportRejected("no header row", file=self.name)
        names = [h.strip() for h in header]
        while names and not names[-1]:   # Excel's trailing empty columns
            names.pop()
        for i, n in enumerate(names):
            if not n:
                raise ImportRejected(f"column {i + 1} of the header has no name", file=self.name)
        seen: dict[str, str] = {}
        for n in names:
            key = normalise_header(n)
            if key in seen:
                same = "" if seen[key] == n else f" (as '{seen[key]}')"
                raise ImportRejected(f"the header names column '{n}' twice{same}; "
                                     "rename one of them", file=self.name)
            seen[key] = n
        return names

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """Yield (line number where the record starts, fields) for each data row.

        Rows with the wrong number of fields or an oversized value are yielded as a
        :class:`RowError` in place of the fields.

        The file is read a block of lines at a time. A block without a quote character
        or a NUL is split at its delimiters, which is what the csv module would make of
        it, at two thirds of the cost; other blocks go through the csv module, which
        takes further lines from the file when a quoted value runs past the block's end."""
        width = len(self.header)
        delim = self.delimiter
        with self._open() as f:
            self._fh = f
            feed = _Feed(f)
            reader = csv.reader(feed, delimiter=delim, strict=False)
            end = 0          # the last line read
            header = True
            spread: set[int] = set()    # where the block's records over several lines start
            try:
                while block := f.readlines(_BLOCK):
                    long_line = max(map(len, block)) > MAX_FIELD
                    spread = set()
                    if header or not _plain("".join(block)):
                        records = []
                        feed.load(block)
                        while feed.left:
                            fields = next(reader)
                            records.append((end + 1, fields))
                            taken = feed.take()
                            if taken > 1:     # a record over several lines
                                spread.add(end + 1)
                            end += taken
                        if header:
                            header = False
                            records = records[1:]
                    else:
                        records = [(end + i, raw.rstrip("\r\n").split(delim))
                                   for i, raw in enumerate(block, 1)]
                        end += len(block)
                    for line, fields in records:
                        n = len(fields)
                        if n != width:
                            if n == 0 or (n == 1 and not fields[0].strip()):
                                continue  # blank line
                            if n > width and not any(x.strip() for x in fields[width:]):
                                fields = fields[:width]
                            else:
                                yield line, RowError(line, None, f"has {n} fields but the header "
                                                                 f"has {width}")  # type: ignore[misc]
                                continue
                        # near a long line, or for a record over several lines, measure
                        # every value
                        if (long_line or spread and line in spread) and \
                                max(map(len, fields)) > MAX_FIELD:
                            big = next(i for i, x in enumerate(fields) if len(x) > MAX_FIELD)
                            yield line, RowError(line, self.header[big],
                                                 f"value is {len(fields[big]):,} characters "
                                                 f"long; the limit is {MAX_FIELD:,}")  # type: ignore[misc]
                            continue
                        yield line, fields
            except csv.Error as exc:
                raise ImportRejected(f"line {end + feed.taken}: the CSV is malformed ({exc})",
                                     file=self.name) from None
            finally:
                self._fh = None

    def estimated_rows(self) -> int:
        """Roughly how many rows the file has, from the line length of its first 256 KB."""
        with open(self.path, "rb") as f:
            head = f.read(1 << 18)
        lines = max(1, head.count(b"\n"))
        return max(1, round(self.size / (len(head) / lines)) - 1)

    def bytes_read(self) -> int:
        """How far the reader has got, for progress bars."""
        fh = self._fh
        if fh is None:
            return self.size
        try:
            return fh.buffer.tell()
        except (OSError, ValueError):
            return 0


# Compressed files, told by their first bytes: (magic, what it is, the command that
# decompresses it). Archives, workbooks and other binary files: see _not_text.
_MAGIC: list[tuple[bytes, str, str]] = [
    (b"\x1f\x8b", "gzip-compressed", "gunzip"),
    (b"BZh", "bzip2-compressed", "bunzip2"),      # then a digit and 1AY&SY (checked below)
    (b"\xfd7zXZ\x00", "xz-compressed", "unxz"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "unzstd"),
]
_SUFFIX = {"gunzip": ".gz", "bunzip2": ".bz2", "unxz": ".xz", "unzstd": ".zst"}


def _not_text(head: bytes, path: Path) -> str | None:
    """Why a file whose first bytes are ``head`` is not a CSV file and what to do instead,
    in one line; None for anything that may be text."""
    name = path.name
    q = shlex.quote(name)    # for the commands shown
    for magic, what, tool in _MAGIC:
        if not head.startswith(magic):
            continue
        if tool == "bunzip2" and head[4:10] not in (b"1AY&SY", b"\x17rE8P\x90"):
            continue   # text that happens to start with BZh
        suffix = _SUFFIX[tool]
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            plain = name[:-len(suffix)]
            return f"is {what}: decompress it first ({tool} {q}) and import {plain}"
        out = f"{path.stem or name}-unzipped.csv"
        return (f"is {what}: decompress it first ({tool} -c {q} > {shlex.quote(out)}) "
                f"and import {out}")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        kind = _zip_kind(path)
        if kind == "xlsx":
            return "is an Excel workbook: save it as CSV first (File > Save As > CSV UTF-8)"
        if kind == "ods":
            return "is an OpenDocument spreadsheet: save it as CSV first"
        return f"is a zip archive: unzip it first (unzip {q}) and import the CSV inside"
    if head.startswith(b"%PDF-"):
        return "is a PDF document, not a CSV file: export the data as CSV instead"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return f"is a 7-Zip archive: extract it first (7z x {q}) and import the CSV inside"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "is an old-format Excel workbook (.xls): save it as CSV first"
    if head.startswith(b"SQLite format 3\x00"):
        return "is a SQLite database, not a CSV file: export the table as CSV first"
    return None


def _zip_kind(path: Path) -> str:
    """'xlsx', 'ods' or 'zip': what a zip file holds."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if "mimetype" in names and b"opendocument.spreadsheet" in z.read("mimetype"):
                return "ods"
    except (zipfile.BadZipFile, OSError, KeyError, RuntimeError, ValueError, EOFError):
        names = []
    if any(n.startswith("xl/") for n in names) or path.suffix.lower() in (".xlsx", ".xlsm"):
        return "xlsx"
    return "ods" if path.suffix.lower() == ".ods" else "zip"


def _plain(text: str) -> bool:
    """Whether the csv module would read ``text`` as its lines split at the delimiter."""
    return '"' not in text and "\0" not in text


class _Feed:
    """Lines for the csv module: a block's, then, when a quoted value runs past the
    block's end, the following lines of the file. Counts the lines it gives out."""

    def __init__(self, f):
        self.f = f
        self.left = 0         # lines of the block not given out yet
        self.taken = 0        # lines given out since the last take()
        self._block: Iterator[str] = iter(())

    def load(self, block: list[str]) -> None:
        self._block, self.left = iter(block), len(block)

    def take(self) -> int:
        n, self.taken = self.taken, 0
        return n

    def __iter__(self):
        return self

    def __next__(self) -> str:
        self.taken += 1
        if self.left:
            self.left -= 1
            return next(self._block)
        line = self.f.readline()
        if not line:
            self.taken -= 1
            raise StopIteration
        return line


_DELIMITERS = ",;\t|"


def _sniff_delimiter(head: list[str]) -> str:
    """The delimiter, of , ; tab and |: what ``csv.Sniffer`` finds in the header and the
    lines after it (``head``), where it is sure.

    Where it is not, the rule from before decides: the candidate seen most often outside
    quotes in the header (ties in the order , ; tab |; a comma when there is none). That is
    when the Sniffer raises (no candidate is used consistently: a one-column file, say),
    when its guess does not split the header (it appears there only inside quotes, or not
    at all), and when the header has other candidates that, asked again without its
    guess, the Sniffer finds consistent too: then it chose among them by its fixed
    preference (comma, tab, semicolon) rather than by the data, and a semicolon file with
    decimal commas in the header and the values would come out as comma-separated."""
    header = head[0]
    counts = {d: _count_outside_quotes(header, d) for d in _DELIMITERS}
    sample = "".join(head)
    sniffer = csv.Sniffer()
    try:
        guess = sniffer.sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        guess = None
    if guess and counts.get(guess):
        others = "".join(d for d in _DELIMITERS if d != guess and counts[d])
        if not others:
            return guess
        try:
            sniffer.sniff(sample, delimiters=others)
        except csv.Error:
            return guess     # of the header's candidates, only the guess fits the sample
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else ","


def _count_outside_quotes(line: str, ch: str) -> int:
    n, quoted = 0, False
    for c in line:
        if c == '"':
            quoted = not quoted
        elif c == ch and not quoted:
            n += 1
    return n


def _latin1_fallback(err: UnicodeDecodeError) -> tuple[str, int]:
    bad = err.object[err.start:err.end]
    return bytes(bad).decode("latin-1"), err.end

