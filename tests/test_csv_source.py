"""The CSV reader splits quote-free blocks itself: it must read every file exactly as the
csv module reads it, line numbers included."""
import csv
import hashlib
import random

import pytest

from metrics.importers import source
from metrics.importers.source import CsvSource


def _reference(path, delimiter):
    """(line where the record starts, fields) of each data record, by the csv module."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=False)
        next(reader)
        out, last = [], reader.line_num
        for fields in reader:
            out.append((last + 1, fields))
            last = reader.line_num
    return out


def _value(rng, delimiter):
    kind = rng.random()
    if kind < 0.6:
        return rng.choice(["", "a", "delivered", "2026-03-01T09:30:00Z", "0.0075", "Zoë ✨"])
    if kind < 0.75:   # needs quoting: the delimiter, a quote
        return rng.choice([f"a{delimiter}b", 'say "hi"', f'{delimiter}"{delimiter}'])
    if kind < 0.85:   # a value over several lines, in either line end
        return "line one\nline two" + rng.choice(["\nmore", "\r\nmore"]) * rng.randrange(0, 40)
    return "x" * rng.randrange(1, 80)


def _file(tmp_path, rng, delimiter, newline, quoted_share):
    header = ["campaign", "message_id", "body", "status"]
    w = csv.writer(open(tmp_path / "f.csv", "w", newline="", encoding="utf-8"),
                   delimiter=delimiter, lineterminator=newline)
    w.writerow(header)
    for i in range(3000):
        quoted = rng.random() < quoted_share
        row = [f"c{i % 7}", f"m{i}", _value(rng, delimiter) if quoted else "plain text", "sent"]
        w.writerow(row)
    return tmp_path / "f.csv"


@pytest.mark.parametrize("delimiter", [",", ";"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("quoted_share", [0.0, 0.002, 0.3])
def test_rows_are_what_the_csv_module_reads(tmp_path, monkeypatch, delimiter, newline,
                                            quoted_share):
    """Blocks of a few hundred characters, so that quoted values, some over dozens of
    lines, fall across block ends; files with none, a few and many such values."""
    monkeypatch.setattr(source, "_BLOCK", 300)
    path = _file(tmp_path, random.Random(7), delimiter, newline, quoted_share)
    src = CsvSource(path)
    assert src.delimiter == delimiter
    got = list(src.rows())
    want = _reference(path, delimiter)
    assert len(want) == 3000
    assert got == want


def test_plain_blocks_are_split_without_the_csv_module(tmp_path, monkeypatch):
    """A quote-free file never reaches the csv module past its header block."""
    monkeypatch.setattr(source, "_BLOCK", 300)
    path = _file(tmp_path, random.Random(1), ",", "\n", 0.0)
    fed = []

    class Counting(source._Feed):
        def __next__(self):
            line = super().__next__()
            fed.append(line)
            return line
    monkeypatch.setattr(source, "_Feed", Counting)
    assert len(list(CsvSource(path).rows())) == 3000
    assert 0 < len(fed) < 20   # the first block only


@pytest.mark.parametrize("tail, utf8", [
    ("é", True),                 # a two-byte character split across two chunks
    ("✨", True),                # three bytes, split across chunks
    (b"\xe9", False),            # Latin-1 é after ASCII chunks
    (b"\xc3", False),            # a character cut off, ASCII after it
    (b"\xc3" + b"z" * 32 + b"\xa9", False),  # ... and a lone continuation byte chunks later
])
def test_encoding_check_over_chunks(tmp_path, monkeypatch, tail, utf8):
    """The encoding scan skips decoding ASCII chunks: a character open across a chunk's
    end, or a bad byte after many ASCII chunks, must still be told apart."""
    monkeypatch.setattr(source, "_CHUNK", 16)
    head = b"campaign,message_id\n" + b"spring,SM1\n" * 5
    bad = tail if isinstance(tail, bytes) else tail.encode()
    cut = 16 - len(head) % 16 - 2    # the character starts on a chunk's last byte
    body = head + b"x" * cut + b"," + bad + b"\n" + b"autumn,SM2\n" * 5
    (tmp_path / "f.csv").write_bytes(body)
    src = CsvSource(tmp_path / "f.csv")
    assert (src.encoding == "utf-8") is utf8
    assert src.sha256 == hashlib.sha256(body).hexdigest()
