"""A format bound to one file's header: which column (or mapping constant, through which
value table) each canonical field is read from, and the readers the row builders use."""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Callable, Sequence

from ..phones import PhoneHasher
from .fields import NULL, Format, normalise_header, shown, shown_names
from .mapping import Mapping
from .values import BadValue, campaign_name


class RowProblem(Exception):
    """A bad value in a row: the column to name (its label in the file, which a header
    may spell at any length: shortened) and why."""

    def __init__(self, column: str | None, reason: str):
        self.column, self.reason = (column and shown(column)), shown(reason, 400)
        super().__init__(self.reason)


@dataclass
class Context:
    """What a row builder needs from the outside world."""

    tz: dt.tzinfo
    phones: PhoneHasher
    campaign_id: Callable[[str, str], int]     # (name, channel) -> id
    import_id: int
    campaign: str | None = None                # --campaign
    senders: dict[str, str] = field(default_factory=dict)   # sender number/service -> campaign
    attributes: set[tuple[int, str]] = field(default_factory=set)  # (campaign_id, name) seen
    _occurrences: dict[bytes, int] = field(default_factory=dict)

    def content_key(self, prefix: str, fields: list[str]) -> str:
        """A stable key for a row without a provider id: its content and how many identical
        rows came before it in this file (so re-importing the file counts it once)."""
        h = hashlib.blake2b("\x1f".join(fields).encode(), digest_size=12).digest()
        n = self._occurrences.get(h, 0) + 1
        self._occurrences[h] = n
        return f"{prefix}:{h.hex()}:{n}"


def bind_header(fmt: Format, header: list[str], ctx: Context, mapping: Mapping | None = None
                ) -> tuple[Fields, list[tuple[str, int]], list[str]]:
    """Bind a format (or a mapping onto a format) to a header: the fields' readers, the
    extra columns kept as attributes (name, index) and the columns ignored. Raises a
    RowProblem-free ``ValueError`` with a clear message when a required column is
    missing. Cleans ``ctx.campaign`` (--campaign) on the way."""
    norm = [normalise_header(h) for h in header]
    index: dict[str, int] = {}
    labels: dict[str, str] = {}
    consts: dict[str, str] = {}
    if mapping is not None:
        for canon, col in mapping.columns.items():
            i = _find(header, col)
            if i is None:
                raise ValueError(
                    f"the mapping's [columns] {canon} = \"{shown(col)}\", but the file has no "
                    f"column '{shown(col)}' (it has: {shown_names(header)})")
            index[canon], labels[canon] = i, header[i]
        for canon, val in mapping.constants.items():
            consts[canon] = val
            labels[canon] = f"[constants] {canon}"
    for canon, spellings in fmt.fields.items():
        if canon in index or canon in consts:
            continue
        for i, n in enumerate(norm):
            if n in spellings and i not in index.values():
                index[canon], labels[canon] = i, header[i]
                break
    if ctx.campaign:
        try:
            ctx.campaign = campaign_name(ctx.campaign)
        except BadValue as exc:
            raise ValueError(f"--campaign: {exc}") from None
    if mapping is None and ctx.campaign:
        consts["campaign"] = ctx.campaign
        labels["campaign"] = "--campaign"
    missing = [c for c in fmt.required if c not in index and c not in consts]
    if fmt.twilio and "campaign" in missing:
        missing.remove("campaign")
    if fmt.kind == "message" and not fmt.twilio and mapping is None and "campaign" in missing \
            and ctx.campaign:
        missing.remove("campaign")
    if missing:
        wanted = ", ".join(missing)
        raise ValueError(f"missing required column{'s' if len(missing) > 1 else ''} for the "
                         f"{fmt.name} format: {wanted} (the header has: {shown_names(header)})")
    used = set(index.values())
    rest = [i for i in range(len(header)) if i not in used]
    extras: list[tuple[str, int]] = []
    ignored: list[str] = []
    renames = {v: k for k, v in (mapping.attributes.items() if mapping else [])}
    for i in rest:
        if fmt.keep_extras:
            extras.append((renames.get(header[i], header[i]), i))
        else:
            ignored.append(header[i])
    vmaps = {canon: (labels.get(canon, canon), m) for canon, m in (mapping.values.items() if mapping else [])
             if canon in index}
    return Fields(index, consts, vmaps, labels), extras, ignored


def _find(header: list[str], col: str) -> int | None:
    if col in header:
        return header.index(col)
    n = normalise_header(col)
    for i, h in enumerate(header):
        if normalise_header(h) == n:
            return i
    return None


MEMO_CHARS = 256


class Memo(dict):
    """``memo[raw]`` is ``fn(raw)``, computed once per distinct raw value: most columns
    (statuses, flags, currencies, prices, segments) hold a handful of distinct values, and
    a dict hit costs far less than parsing. Bounded: past ``limit`` values it stops
    remembering new ones, and it never remembers a value longer than ``MEMO_CHARS``
    (a label can be 65,536 characters), so memory stays flat. Errors are never
    remembered. With
    ``null``, a result of None is given as :data:`NULL`."""

    __slots__ = ("fn", "limit", "null")

    def __init__(self, fn: Callable[[str], Any], limit: int = 20_000, null: bool = False):
        super().__init__()
        self.fn, self.limit, self.null = fn, limit, null

    def __missing__(self, raw: str) -> Any:
        value = self.fn(raw)
        if value is None and self.null:
            value = NULL
        if len(self) < self.limit and len(raw) <= MEMO_CHARS:
            self[raw] = value
        return value

    def column(self, values: Sequence[str]) -> list:
        """The whole column at once (a C-level loop over dict lookups)."""
        return list(map(self.__getitem__, values))


class Fields:
    """How to read each canonical field from a batch of CSV rows: the column's values, a
    mapping's constant where the column is missing or empty, translated through the
    mapping's value table. The plain case (a column, no constant, no table) is the
    column itself."""

    def __init__(self, index: dict[str, int], consts: dict[str, str],
                 vmaps: dict[str, tuple[str, dict[str, str]]], labels: dict[str, str]):
        self.index, self.consts, self.vmaps, self.labels = index, consts, vmaps, labels

    def has(self, name: str) -> bool:
        return name in self.index or name in self.consts

    def _source(self, name: str) -> tuple[int | None, Callable[[str], str] | None]:
        """The field's column (None: a constant) and what turns a raw value into the
        field's value (None: the raw value itself)."""
        i = self.index.get(name)
        const = self.consts.get(name)
        if i is None:
            value = const or ""
            return None, lambda raw: value
        vmap = self.vmaps.get(name)
        if const is None and vmap is None:
            return i, None
        label, table = vmap if vmap else (None, None)

        def one(raw: str) -> str:
            if not raw.strip():
                if const is not None:
                    return const
                if table is None:
                    return raw
            if table is None:
                return raw
            hit = table.get(raw)
            if hit is None:
                hit = table.get(raw.strip().lower())
            if hit is None:
                known = ", ".join(sorted(table)[:8])
                raise RowProblem(label, f"value '{raw[:30]}' has no mapping in [values.{name}] "
                                        f"(mapped: {known})")
            return hit

        return i, one

    def reader(self, name: str) -> Callable[[Sequence[Sequence[str]], int], Sequence[str]]:
        """``read(columns, n)``: the field's n values from a batch's columns."""
        i, fn = self._source(name)
        if i is None:
            value = fn("")
            return lambda cols, n: [value] * n
        if fn is None:
            return lambda cols, n: cols[i]
        return lambda cols, n: list(map(fn, cols[i]))

    def get(self, name: str) -> Callable[[Sequence[str]], str]:
        """``get(fields)``: the field's value in one CSV row."""
        i, fn = self._source(name)
        if i is None:
            value = fn("")
            return lambda fields: value
        if fn is None:
            return itemgetter(i)
        return lambda fields: fn(fields[i])

