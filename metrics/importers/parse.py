"""Turning a checked CSV file into table rows, as a stream of messages.

The parser needs nothing from the database but a snapshot of the campaigns, so it can run
in a second process while the first one writes (child.py): on two cores parsing and
inserting overlap, which roughly halves the time of a large import. Small files are parsed
in process with the very same generator. New campaigns get their ids here (the writer holds
the write lock for the whole import, so the next id cannot be taken by anyone else).

Messages, in order:
    ("campaign", id, name, channel, new)     before any rows that use it
    ("rows", [column, ...], [RowError, ...], bytes_read)   columns of table values
    ("done", rows_in, total_errors, attributes, invalid_phones, touched_names, ignored)
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field
from itertools import chain
from typing import Iterator

from ..errors import ImportRejected, RowError
from ..names import merged_channel, name_key
from ..phones import PhoneHasher
from ..times import zone
from .binding import Context, RowProblem
from .fields import FORMATS
from .formats import bind
from .mapping import Mapping
from .source import CsvSource

BATCH = 10_000
# A batch also ends once the lines read for it pass this many characters: rows may be a
# megabyte each (source.MAX_LINE), and 10,000 of them must not be held at once.
BATCH_CHARS = 32 << 20
GC_EVERY = 16                # batches between collections of reference cycles
MAX_REPORTED = 50


@dataclass
class ParseJob:
    """Everything the parser needs; plain data, so it can be sent to another process."""

    source: dict                               # CsvSource.state()
    format: str
    mapping: Mapping | None
    campaign: str | None                       # --campaign
    tz: str
    hash_key: bytes
    region: str
    import_id: int
    campaigns: dict[str, tuple[int, str | None]]   # name key -> (id, channel)
    next_campaign_id: int
    skip_bad_rows: bool
    batch: int = BATCH
    senders: dict[str, str] = field(default_factory=dict)


class _Campaigns:
    """Campaign ids for names met in the file; new ones numbered from the snapshot's next."""

    def __init__(self, known: dict[str, tuple[int, str | None]], next_id: int):
        self.known = dict(known)
        self.next_id = next_id
        self.pending: list[tuple] = []
        self.touched: dict[int, str] = {}
        self._seen: dict[tuple[str, str], int] = {}

    def __call__(self, name: str, channel: str) -> int:
        hit = self._seen.get((name, channel))
        if hit is not None:
            return hit
        if len(name) > 200:
            raise RowProblem("campaign", "campaign name is over 200 characters")
        key = name_key(name)
        if key in self.known:
            cid, existing = self.known[key]
            merged = merged_channel(existing, channel)
            if merged != existing:
                self.known[key] = (cid, merged)
                self.pending.append(("campaign", cid, name, merged, False))
        else:
            cid = self.next_id
            self.next_id += 1
            self.known[key] = (cid, channel)
            self.pending.append(("campaign", cid, name, channel, True))
        self._seen[(name, channel)] = cid
        self.touched.setdefault(cid, name.strip())
        return cid

    def flush(self) -> list[tuple]:
        out, self.pending = self.pending, []
        return out


def parse(job: ParseJob) -> Iterator[tuple]:
    """Parse the whole file, yielding the messages above. Strict mode (not
    ``skip_bad_rows``) stops sending rows after the first bad one but reads on, so the
    user learns about every bad row at once."""
    src = CsvSource.reopen(job.source)
    fmt = FORMATS[job.format]
    phones = PhoneHasher(job.hash_key, job.region)
    campaigns = _Campaigns(job.campaigns, job.next_campaign_id)
    ctx = Context(tz=zone(job.tz), phones=phones, campaign_id=campaigns, import_id=job.import_id,
                  campaign=job.campaign, senders=dict(job.senders))
    try:
        plan = bind(fmt, src.header, ctx, job.mapping)
    except ValueError as exc:
        raise ImportRejected(str(exc), file=src.name) from None
    build = plan.build
    pending: list[tuple[int, object]] = []     # (line, fields or RowError)
    rows_in = total_errors = reported = 0
    writing = True
    size = min(1_000, job.batch)
    done = False
    batches = 0
    rows_iter = iter(src.rows())
    # The memo tables hold hundreds of thousands of small objects, and Python's cyclic
    # collector walked them all again and again as batches were allocated: a third of the
    # parse time. Nothing here makes reference cycles to speak of, so collect by hand, once
    # every few batches, for as long as the parse runs.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        while not done:
            stop = src.chars_read + BATCH_CHARS
            for line, fields in rows_iter:
                rows_in += 1
                pending.append((line, fields))
                if len(pending) >= size or src.chars_read > stop:
                    break
            else:
                done = True
            columns, errors = build_batch(build, pending)
            pending = []
            if errors:
                total_errors += len(errors)
                keep = errors[:max(0, MAX_REPORTED - reported)]
                reported += len(keep)
                errors = keep
                if not job.skip_bad_rows:
                    writing = False
            if not writing:
                columns = []
            yield from campaigns.flush()
            yield ("rows", columns, errors, src.size if done else src.bytes_read())
            batches += 1
            if batches % GC_EVERY == 0:
                gc.collect()
            size = min(size * 2, job.batch)   # small first: the writer starts soon
    finally:
        if gc_was_on:
            gc.enable()
    yield ("done", rows_in, total_errors, sorted(ctx.attributes), phones.invalid,
           sorted(set(campaigns.touched.values()), key=name_key), plan.ignored)


def build_batch(build, items: list[tuple[int, object]]) -> tuple[list, list[RowError]]:
    """Build a batch's rows column by column; when a value is bad, halve the batch until
    the bad rows stand alone (a one-row batch names the row's first bad column), so a
    clean batch costs one pass and a bad one a few more. Returns the columns of the good
    rows ([] when there are none) and the errors."""
    errors = [f for _, f in items if isinstance(f, RowError)]
    good = [(line, f) for line, f in items if not isinstance(f, RowError)] if errors else items
    parts: list[list] = []
    _build_part(build, good, parts, errors)
    if errors:
        errors.sort(key=lambda e: e.line)
    parts = [p for p in parts if p and len(p[0])]
    if len(parts) <= 1:
        return (parts[0] if parts else []), errors
    return [list(chain.from_iterable(col)) for col in zip(*parts)], errors


def _build_part(build, part: list[tuple[int, object]], parts: list[list],
                errors: list[RowError]) -> None:
    if not part:
        return
    try:
        parts.append(build([f for _, f in part]))
    except RowProblem as exc:
        if len(part) == 1:
            errors.append(RowError(part[0][0], exc.column, exc.reason))
            return
        mid = len(part) // 2
        _build_part(build, part[:mid], parts, errors)
        _build_part(build, part[mid:], parts, errors)
