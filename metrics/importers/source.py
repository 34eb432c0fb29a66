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
from .fields import normalise_header, shown
from .spreadsheet import SheetCsv

__all__ = ["MAX_FIELD", "MAX_LINE", "CsvSource", "normalise_header", "prepare_csv_reading"]

MAX_FIELD = 65_536          # characters; larger values are rejected row by row
# Characters in one line, or in one record whose quoted values run over several lines
# (their line breaks counted). 1 MiB: sixteen values at MAX_FIELD, while the rows of real
# exports are a few hundred characters (an SMS body is at most 1,600). A longer data line
# is a bad row of its own ("line is longer than 1,048,576 characters"), found and skipped
# while no more than _PIECE characters of it are held (as the csv module's buffer, up to 4
# bytes a character); the import goes on at the next record. A longer header refuses the
# file in one line.
MAX_LINE = 1 << 20
_PIECE = MAX_LINE + 2       # characters a line is read in at most: MAX_LINE and a \r\n
_CHUNK = 1 << 20
_BLOCK = 1 << 18              # characters of lines handed to the CSV reader at once
_SAMPLE_LINES = 20            # lines after the header that the delimiter is sniffed on
_SAMPLE_CHARS = 1 << 14       # ... and the header at most this many characters in all
                              # (csv.Sniffer takes cubic time on quotes: 2 s for 32,000)
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

    chars_read = 0      # characters of lines read by rows() so far (for batch sizes)

    def __init__(self, path: str | os.PathLike, delimiter: str | None = None,
                 sheet: "SheetCsv | None" = None):
        self.path = Path(path)
        self.name = self.path.name
        # a spreadsheet's sheet written out as CSV: named as the workbook, its lines
        # reported as the sheet's rows
        self.sheet = sheet
        if sheet is not None:
            self.name = sheet.name
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
        if len(head[0].rstrip("\r\n")) > MAX_LINE:
            raise self._header_too_long()
        if not head[0].strip():
            raise ImportRejected("the first line is blank: the file must start with a header row",
                                 file=self.name)
        self.delimiter = delimiter or _sniff_delimiter(head)
        self.header = self._read_header()

    def state(self) -> dict:
        """What another process needs to stream this checked file again (see ``reopen``)."""
        return {"path": str(self.path), "name": self.name, "size": self.size,
                "sha256": self.sha256, "encoding": self.encoding, "delimiter": self.delimiter,
                "header": self.header, "sheet": self.sheet}

    @classmethod
    def reopen(cls, state: dict) -> "CsvSource":
        """A source for a file already checked by ``CsvSource(path)``, without re-reading it."""
        self = cls.__new__(cls)
        self.path = Path(state["path"])
        self.warnings = []
        self._fh = None
        for k in ("name", "size", "sha256", "encoding", "delimiter", "header"):
            setattr(self, k, state[k])
        self.sheet = state.get("sheet")
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
        """The first line (at most _PIECE characters of it), then up to _SAMPLE_LINES whole
        lines after it (at most _SAMPLE_CHARS characters with it): what the delimiter is
        sniffed on."""
        with self._open() as f:
            lines = [f.readline(_PIECE)]
            left = _SAMPLE_CHARS - len(lines[0])
            while left > 0 and len(lines) <= _SAMPLE_LINES:
                line = f.readline(left)
                if not line or (len(line) == left and not line.endswith(("\n", "\r"))):
                    break   # the end of the file, or a line cut short
                lines.append(line)
                left -= len(line)
        return lines

    def _header_too_long(self) -> ImportRejected:
        return ImportRejected(f"the header (line 1) is longer than {MAX_LINE:,} characters: "
                              "is this a CSV file?", file=self.name)

    def _read_header(self) -> list[str]:
        with self._open() as f:
            reader = csv.reader(_Feed(_Lines(f)), delimiter=self.delimiter)
            try:
                header = next(reader, None)
            except _TooLong:    # a quoted name over many lines
                raise self._header_too_long() from None
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
                same = "" if seen[key] == n else f" (as '{shown(seen[key])}')"
                raise ImportRejected(f"the header names column '{shown(n)}' twice{same}; "
                                     "rename one of them", file=self.name)
            seen[key] = n
        return names

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """Yield (line number where the record starts, fields) for each data row: for a
        spreadsheet's sheet, the row a person sees there (see ``_lines``)."""
        return self._lines() if self.sheet is None else self._sheet_rows()

    def _sheet_rows(self) -> Iterator[tuple[int, list[str]]]:
        row_of = self.sheet.row_of
        for line, fields in self._lines():
            row = row_of(line)
            if fields.__class__ is RowError:
                fields = RowError(row, fields.column, fields.reason)
            yield row, fields

    def _lines(self) -> Iterator[tuple[int, list[str]]]:
        """Yield (line number where the record starts, fields) for each data row.

        Rows with the wrong number of fields, an oversized value or a line (record) over
        MAX_LINE characters are yielded as a :class:`RowError` in place of the fields.

        The file is read a block of lines at a time, no line ever more than _PIECE
        characters at once (see _Lines). A block without a quote character or a NUL is
        split at its delimiters, which is what the csv module would make of it, at two
        thirds of the cost; other blocks go through the csv module, which takes further
        lines from the file when a quoted value runs past the block's end. A record that
        grows past MAX_LINE stops there (_Feed raises _TooLong) and the rest of it is read
        past without being kept (_Feed.skip)."""
        width = len(self.header)
        delim = self.delimiter
        error = RowError
        self.chars_read = 0
        with self._open() as f:
            self._fh = f
            lines = _Lines(f)
            feed = _Feed(lines)
            reader = csv.reader(feed, delimiter=delim, strict=False)
            end = 0          # the last line read
            header = True
            spread: set[int] = set()    # where the block's records over several lines start
            try:
                while block := lines.block():
                    longest = max(map(len, block))
                    long_line = longest > MAX_FIELD
                    self.chars_read += sum(map(len, block))
                    spread = set()
                    if header or longest > MAX_LINE or not _plain("".join(block)):
                        records = []
                        feed.load(block)
                        while feed.left:
                            try:
                                fields = next(reader)
                            except _TooLong as exc:
                                if header and not records:
                                    raise self._header_too_long() from None
                                records.append((end + 1, RowError(
                                    end + 1, None, f"line is longer than {MAX_LINE:,} characters")))
                                end += feed.skip(exc, delim)
                                continue
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
                        if fields.__class__ is error:
                            yield line, fields
                            continue
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
                            yield line, RowError(line, shown(self.header[big]),
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


class _Lines:
    """A text file's lines, read at most _PIECE characters at a time: a longer line comes
    in pieces, the first longer than MAX_LINE, so that no line is ever held whole. The
    one piece read too many (see _Feed.skip) can be put back."""

    def __init__(self, f):
        self._readline = f.readline
        self._back = ""

    def readline(self) -> str:
        if self._back:
            line, self._back = self._back, ""
            return line
        return self._readline(_PIECE)

    def unread(self, piece: str) -> None:
        self._back = piece

    def block(self) -> list[str]:
        """Lines of about _BLOCK characters in all. A piece longer than MAX_LINE is the
        block's last (the rest of its line is still to be read): the block stops at
        MAX_LINE characters at the latest, so the loop need not look at each line."""
        out: list[str] = []
        n = 0
        if self._back:
            out.append(self._back)
            n, self._back = len(self._back), ""
        readline, append, piece = self._readline, out.append, _PIECE
        stop = min(_BLOCK, MAX_LINE)
        while n < stop:
            line = readline(piece)
            if not line:
                break
            append(line)
            n += len(line)
        return out


class _TooLong(Exception):
    """The record being read grew past MAX_LINE characters at ``piece`` (not given to the
    csv module); ``inside`` when the record began on an earlier line, so that ``piece``
    starts inside a quoted value."""

    def __init__(self, piece: str, inside: bool):
        super().__init__()
        self.piece, self.inside = piece, inside


class _Feed:
    """Lines for the csv module: a block's, then, when a quoted value runs past the
    block's end, the following lines of the file. Counts the lines and characters it
    gives out for a record, and raises _TooLong rather than let a record pass MAX_LINE."""

    def __init__(self, lines: _Lines):
        self.lines = lines
        self.left = 0         # lines of the block not given out yet
        self.taken = 0        # lines given out since the last take()
        self.chars = 0        # ... and their characters
        self._block: Iterator[str] = iter(())

    def load(self, block: list[str]) -> None:
        self._block, self.left = iter(block), len(block)

    def take(self) -> int:
        n, self.taken, self.chars = self.taken, 0, 0
        return n

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.left:
            self.left -= 1
            line = next(self._block)
        else:
            line = self.lines.readline()
            if not line:
                raise StopIteration
        chars = self.chars + len(line)
        if chars > MAX_LINE and chars - (len(line) - len(line.rstrip("\r\n"))) > MAX_LINE:
            raise _TooLong(line, self.taken > 0)
        self.chars = chars
        self.taken += 1
        return line

    def _piece(self) -> str:
        """The next piece, unchecked and uncounted ('' at the end of the file)."""
        if self.left:
            self.left -= 1
            return next(self._block)
        return self.lines.readline()

    def skip(self, exc: _TooLong, delim: str) -> int:
        """Read past the rest of the record ``exc`` stopped, keeping none of it: to the
        end of the line where it is outside quotes, as the csv module would. Returns the
        number of lines the record spans."""
        lines = self.take() + 1
        piece, state = exc.piece, (_QUOTED if exc.inside else _START)
        while True:
            body = piece.rstrip("\r\n")
            state = _scan(body, state, delim)
            if len(body) < len(piece):          # the line ends
                if len(piece) == _PIECE and piece[-1] == "\r":
                    after = self._piece()       # a \r\n cut in two by the read?
                    if after != "\n":
                        self.lines.unread(after)
                if state != _QUOTED:
                    return lines
                piece = self._piece()
                if not piece:
                    return lines
                lines += 1
            else:                               # the line goes on, or the file ends
                piece = self._piece()
                if not piece:
                    return lines


# Where the csv module (a double quote, doubled inside quotes; no escape character;
# strict=False) is within a line: at the start of a value, inside an unquoted value,
# inside a quoted one, or just past a quote inside a quoted one.
_START, _FIELD, _QUOTED, _QUOTE = range(4)


def _scan(text: str, state: int, delim: str) -> int:
    """The state after ``text`` (a line or a piece of one, without its line break) read
    from ``state``, found with str.find rather than character by character."""
    i, n = 0, len(text)
    opener = delim + '"'        # only a quote at a value's start opens a quoted value
    while i < n:
        if state == _QUOTED:
            j = text.find('"', i)
            if j < 0:
                return _QUOTED
            i, state = j + 1, _QUOTE
        elif state == _QUOTE:
            c = text[i]
            if c == '"':
                i, state = i + 1, _QUOTED
            elif c == delim:
                i, state = i + 1, _START
            else:
                state = _FIELD
        elif state == _START and text[i] == '"':
            i, state = i + 1, _QUOTED
        else:
            j = text.find(opener, i)
            if j < 0:
                return _START if text[-1] == delim else _FIELD
            i, state = j + 2, _QUOTED
    return state


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
    decimal commas in the header and the values would come out as comma-separated.
    A header longer than _SAMPLE_CHARS is not shown to the Sniffer at all (see there)."""
    header = head[0]
    counts = {d: _count_outside_quotes(header, d) for d in _DELIMITERS}
    sample = "".join(head)
    sniffer = csv.Sniffer()
    try:
        if len(sample) > _SAMPLE_CHARS:
            raise csv.Error("too long to sniff")
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
    """How often ``ch`` occurs outside quotes (every quote opening or closing them): in
    the even pieces between quotes. A header may be a megabyte."""
    return sum(part.count(ch) for part in line.split('"')[::2])


def _latin1_fallback(err: UnicodeDecodeError) -> tuple[str, int]:
    bad = err.object[err.start:err.end]
    return bytes(bad).decode("latin-1"), err.end

