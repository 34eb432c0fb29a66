"""The import formats: which columns each has, how it is detected, and how a row becomes
a canonical record (a tuple in the column order of its table)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, Callable, Sequence

from ..names import MAX_NAME, clean_label
from ..phones import BadPhoneNumber, PhoneHasher
from ..times import check_day, parse_time
from . import values as V
from .mapping import Mapping
from .source import normalise_header


def _spell(*names: str) -> tuple[str, ...]:
    return tuple(normalise_header(n) for n in names)


@dataclass(frozen=True)
class Format:
    name: str
    kind: str                                  # message, call or daily
    fields: dict[str, tuple[str, ...]]          # canonical field -> header spellings
    required: tuple[str, ...]
    keep_extras: bool                          # unmapped columns become attributes
    twilio: bool = False
    ignore: tuple[str, ...] = ()               # known provider columns we do not keep


MESSAGE_FIELDS = ("campaign", "message_id", "sent_at", "recipient", "status", "error_code",
                  "direction", "body", "cost", "currency", "segments", "clicked", "converted",
                  "revenue", "opted_out", "replied", "spam_complaint", "segment", "variant")
CALL_FIELDS = ("campaign", "call_id", "started_at", "recipient", "direction", "status",
               "answered_by", "duration_s", "disposition", "abandoned", "converted", "revenue",
               "cost", "currency", "agent", "segment", "variant")
DAILY_FIELDS = ("date", "campaign", "channel", "sent", "delivered", "failed", "clicks",
                "conversions", "opt_outs", "replies", "complaints", "cost", "revenue",
                "new_subscribers", "list_size", "calls_dialed", "calls_answered",
                "calls_abandoned", "talk_seconds")

FORMATS: dict[str, Format] = {
    "events": Format("events", "message", {f: _spell(f) for f in MESSAGE_FIELDS},
                     ("campaign", "sent_at", "status"), keep_extras=True),
    "calls": Format("calls", "call", {f: _spell(f) for f in CALL_FIELDS},
                    ("campaign", "started_at", "status"), keep_extras=True),
    "daily": Format("daily", "daily", {f: _spell(f) for f in DAILY_FIELDS},
                    ("date", "campaign"), keep_extras=False),
    "twilio-messages": Format(
        "twilio-messages", "message",
        {"message_id": _spell("Sid", "MessageSid"), "sent_at": _spell("SentDate", "DateSent"),
         "status": _spell("Status"), "error_code": _spell("ErrorCode"),
         "direction": _spell("Direction"), "body": _spell("Body"), "cost": _spell("Price"),
         "currency": _spell("PriceUnit"), "segments": _spell("NumSegments"),
         "from": _spell("From"), "to": _spell("To"),
         "service": _spell("MessagingServiceSid")},
        ("message_id", "sent_at", "status", "direction", "from", "to"), keep_extras=False,
        twilio=True),
    "twilio-calls": Format(
        "twilio-calls", "call",
        {"call_id": _spell("sid", "CallSid", "Call Sid"),
         "started_at": _spell("start_time", "StartTime", "Date Created"),
         "status": _spell("status"), "direction": _spell("direction"),
         "duration_s": _spell("duration", "Duration (seconds)"), "cost": _spell("price"),
         "currency": _spell("price_unit"), "answered_by": _spell("answered_by"),
         "from": _spell("from"), "to": _spell("to")},
        ("call_id", "started_at", "status", "direction", "from", "to"), keep_extras=False,
        twilio=True),
}

# How a format is recognised from its header (normalised names), most specific first.
_DETECT: list[tuple[str, tuple[str, ...]]] = [
    ("twilio-messages", _spell("Sid", "SentDate")),
    ("twilio-messages", _spell("Sid", "NumSegments")),
    ("twilio-calls", _spell("sid", "start_time")),
    ("events", _spell("message_id", "sent_at")),
    ("events", _spell("campaign", "sent_at", "status")),
    ("calls", _spell("call_id", "started_at")),
    ("calls", _spell("campaign", "started_at", "status")),
    ("daily", _spell("date", "campaign", "sent")),
    ("daily", _spell("date", "campaign", "calls_dialed")),
]


def detect(header: list[str]) -> str | None:
    names = {normalise_header(h) for h in header}
    for name, needs in _DETECT:
        if all(n in names for n in needs):
            return name
    return None


# "No value" in a built row. The writer's SQL turns it into NULL (NULLIF(?, '') on every
# column that may be NULL): Python's sqlite3 binds str, int and bytearray directly but
# sends None and bytes through its adapter lookup, which made up a third of the insert time.
NULL = ""


class RowProblem(Exception):
    def __init__(self, column: str | None, reason: str):
        self.column, self.reason = column, reason
        super().__init__(reason)


MESSAGE_COLUMNS = ("message_key", "campaign_id", "sent_at", "direction", "status", "error_code",
                   "recipient", "country", "segments", "cost_micros", "currency", "clicked",
                   "converted", "revenue_micros", "opted_out", "replied", "spam_complaint",
                   "keyword", "segment", "variant", "attrs", "import_id")
CALL_COLUMNS = ("call_key", "campaign_id", "started_at", "direction", "status", "answered_by",
                "duration_s", "disposition", "abandoned", "converted", "revenue_micros",
                "cost_micros", "currency", "agent", "recipient", "country", "segment",
                "variant", "attrs", "import_id")
DAILY_COLUMNS = ("campaign_id", "date", "channel", "sent", "delivered", "failed", "clicks",
                 "conversions", "opt_outs", "replies", "complaints", "cost_micros",
                 "revenue_micros", "new_subscribers", "list_size", "calls_dialed",
                 "calls_answered", "calls_abandoned", "talk_seconds", "import_id")


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


@dataclass
class Plan:
    """A format bound to one file's header: builds one table row from one CSV row."""

    format: str
    kind: str
    build: Callable[[list[list[str]]], list[list]]   # a batch's rows -> its columns
    columns_used: dict[str, str]               # canonical field -> source label
    extras: list[str]
    ignored: list[str]


def bind(fmt: Format, header: list[str], ctx: Context, mapping: Mapping | None = None) -> Plan:
    """Bind a format (or a mapping onto a format) to a header; raises RowProblem-free
    ``ValueError`` with a clear message when a required column is missing."""
    norm = [normalise_header(h) for h in header]
    index: dict[str, int] = {}
    labels: dict[str, str] = {}
    consts: dict[str, str] = {}
    if mapping is not None:
        for canon, col in mapping.columns.items():
            i = _find(header, col)
            if i is None:
                raise ValueError(
                    f"the mapping's [columns] {canon} = \"{col}\", but the file has no column "
                    f"'{col}' (it has: {', '.join(header)})")
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
        except V.BadValue as exc:
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
                         f"{fmt.name} format: {wanted} (the header has: {', '.join(header)})")
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
    builder = {"message": _message_builder, "call": _call_builder, "daily": _daily_builder}[fmt.kind]
    build = builder(fmt, ctx, _Fields(index, consts, vmaps, labels), extras)
    return Plan(fmt.name, fmt.kind, build, labels, [e for e, _ in extras], ignored)


def _find(header: list[str], col: str) -> int | None:
    if col in header:
        return header.index(col)
    n = normalise_header(col)
    for i, h in enumerate(header):
        if normalise_header(h) == n:
            return i
    return None


class Memo(dict):
    """``memo[raw]`` is ``fn(raw)``, computed once per distinct raw value: most columns
    (statuses, flags, currencies, prices, segments) hold a handful of distinct values, and
    a dict hit costs far less than parsing. Bounded: past ``limit`` values it stops
    remembering new ones, so memory stays flat. Errors are never remembered. With
    ``null``, a result of None is given as :data:`NULL`."""

    __slots__ = ("fn", "limit", "null")

    def __init__(self, fn: Callable[[str], Any], limit: int = 20_000, null: bool = False):
        super().__init__()
        self.fn, self.limit, self.null = fn, limit, null

    def __missing__(self, raw: str) -> Any:
        value = self.fn(raw)
        if value is None and self.null:
            value = NULL
        if len(self) < self.limit:
            self[raw] = value
        return value

    def column(self, values: Sequence[str]) -> list:
        """The whole column at once (a C-level loop over dict lookups)."""
        return list(map(self.__getitem__, values))


class _Fields:
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


def _attrs(extras: list[tuple[str, int]], fields: Sequence[str]) -> str:
    d = {name: fields[i].strip() for name, i in extras if fields[i].strip()}
    return json.dumps(d, ensure_ascii=False, separators=(",", ":")) if d else NULL


def campaign_name(raw: str) -> str:
    """A campaign name as stored: cleaned of control characters (see
    :func:`metrics.names.clean_label`), not empty, at most 200 characters."""
    name = clean_label(raw)
    if not name:
        raise V.BadValue("campaign is empty")
    if len(name) > MAX_NAME:
        raise V.BadValue(f"campaign name is longer than {MAX_NAME} characters")
    return name


class _Common:
    """What the message and call builders share: campaigns, recipients, keys, attributes.
    Nothing here has side effects until :meth:`finish`, which runs only for a batch whose
    every value was read."""

    def __init__(self, ctx: Context, fmt: Format, cols: _Fields, extras, channel: str,
                 id_field: str, key_prefix: str, no_sender: str):
        self.ctx, self.cols, self.extras = ctx, cols, extras
        self.twilio = twilio = fmt.twilio
        self.channel, self.key_prefix, self.no_sender = channel, key_prefix, no_sender
        self.m_dir = Memo(V.direction)
        self.m_flag, self.m_text = Memo(V.flag), Memo(V.text, null=True)
        # Twilio writes charges as negative prices
        self.m_cost = Memo(lambda s: V.money_micros(s, absolute=twilio) if s else None, null=True)
        self.m_money = Memo(lambda s: V.money_micros(s) if s else None, null=True)
        R = cols.reader
        self.r_dir = R("direction")
        self.r_campaign, self.r_rcpt, self.r_id = R("campaign"), R("recipient"), R(id_field)
        self.r_from, self.r_to, self.r_service = R("from"), R("to"), R("service")
        self.m_name = Memo(campaign_name)
        self.m_campaign = Memo(lambda name: ctx.campaign_id(name, channel))
        senders = ctx.senders
        self.m_sender = Memo(lambda s: senders.get(_digits(s)))

    def read_parties(self, rows: Sequence[Sequence[str]]) -> tuple:
        """The batch's size and columns, each row's direction, campaign name and the other
        party's number as table cells."""
        n = len(rows)
        C = list(zip(*rows))
        self.col = "direction"
        try:
            direction = self.m_dir.column(self.r_dir(C, n))
            names, raw_to = self.names_and_numbers(C, n, direction)
            cells = self.ctx.phones.cells(raw_to)
        except (V.BadValue, ValueError, BadPhoneNumber) as exc:
            raise RowProblem(self.cols.labels.get(self.col, self.col), str(exc)) from None
        return n, C, direction, names, cells

    def names_and_numbers(self, C, n: int, direction: list[str]) -> tuple[list, Sequence[str]]:
        """Each row's campaign name and the other party's raw number. Sets ``self.col``
        to the column being read, for the error message."""
        if not self.twilio:
            self.col = "campaign"
            names = self.m_name.column(self.r_campaign(C, n))
            self.col = "recipient"
            return names, self.r_rcpt(C, n)
        ctx = self.ctx
        froms, tos = self.r_from(C, n), self.r_to(C, n)
        out = [d == "outbound" for d in direction]
        if ctx.campaign:
            names = [ctx.campaign] * n
        else:
            own = [f if o else t for o, f, t in zip(out, froms, tos)]
            names = self.m_sender.column(own)
            if None in names:
                services = self.r_service(C, n)
                for j, name in enumerate(names):
                    if not name:
                        name = names[j] = ctx.senders.get(services[j])
                        if not name:
                            self.col = "from" if out[j] else "to"
                            raise V.BadValue(self.no_sender)
        self.col = "to" if out[0] else "from"   # what a one-row batch names
        return names, [t if o else f for o, f, t in zip(out, froms, tos)]

    def finish(self, rows: Sequence[Sequence[str]], C, n: int, names: list[str],
               cells: list[tuple]) -> tuple[list[int], list[str], list[str]]:
        """Campaign ids, row keys and attributes for a batch that read cleanly."""
        ctx = self.ctx
        cids = self.m_campaign.column(names)   # only now: a rejected row creates no campaign
        keys = list(map(str.strip, self.r_id(C, n)))
        if "" in keys:
            for j, k in enumerate(keys):
                if not k:
                    keys[j] = ctx.content_key(f"{self.key_prefix}{cids[j]}", rows[j])
        if self.extras:
            extras = self.extras
            attrs = [_attrs(extras, r) for r in rows]
            names_ = [name for name, _ in extras]
            for cid, a in zip(cids, attrs):
                if a:
                    ctx.attributes.update((cid, name) for name in names_)
        else:
            attrs = [NULL] * n
        ctx.phones.invalid += n - sum(map(itemgetter(2), cells))
        return cids, keys, attrs


def _message_builder(fmt, ctx: Context, cols: _Fields, extras):
    tz, labels = ctx.tz, cols.labels
    R = cols.reader
    r_time, r_status, r_err, r_body = R("sent_at"), R("status"), R("error_code"), R("body")
    r_cost, r_cur, r_segments, r_revenue = R("cost"), R("currency"), R("segments"), R("revenue")
    r_flags = [(f, R(f)) for f in ("clicked", "converted", "opted_out", "replied",
                                   "spam_complaint")]
    r_segment, r_variant = R("segment"), R("variant")
    common = _Common(ctx, fmt, cols, extras, "sms", "message_id", "m",
                     "no campaign for this sender: pass --campaign NAME, or map senders to "
                     "campaigns in a --map file's [campaign_by_sender]")
    m_status, m_count = Memo(V.sms_status), Memo(V.count, null=True)
    m_flag, m_text, m_cost, m_money = common.m_flag, common.m_text, common.m_cost, common.m_money
    import_id = ctx.import_id

    def build(rows: Sequence[Sequence[str]]) -> list[list]:
        n, C, direction, names, cells = common.read_parties(rows)
        try:
            col = "sent_at"
            sent_at = list(map(parse_time, r_time(C, n), repeat(tz)))
            col = "status"
            status = m_status.column(r_status(C, n))
            col = "cost"
            cost = m_cost.column(r_cost(C, n))
            col = "revenue"
            revenue = m_money.column(r_revenue(C, n))
            col = "segments"
            segments = m_count.column(r_segments(C, n))
            flags = []
            for col, read in r_flags:
                flags.append(m_flag.column(read(C, n)))
        except (V.BadValue, ValueError, BadPhoneNumber) as exc:
            raise RowProblem(labels.get(col, col), str(exc)) from None
        cids, keys, attrs = common.finish(rows, C, n, names, cells)
        if "inbound" in direction:
            keyword = [(V.keyword(b) or NULL) if d == "inbound" else NULL
                       for d, b in zip(direction, r_body(C, n))]
        else:
            keyword = [NULL] * n
        clicked, converted, opted_out, replied, spam = flags
        return [keys, cids, sent_at, direction, status, m_text.column(r_err(C, n)),
                list(map(itemgetter(0), cells)), list(map(itemgetter(1), cells)), segments,
                cost, m_text.column(r_cur(C, n)), clicked, converted, revenue, opted_out,
                replied, spam, keyword, m_text.column(r_segment(C, n)),
                m_text.column(r_variant(C, n)), attrs, [import_id] * n]

    return build


def _call_builder(fmt, ctx: Context, cols: _Fields, extras):
    tz, labels = ctx.tz, cols.labels
    R = cols.reader
    r_time, r_status, r_answered, r_duration = (R("started_at"), R("status"), R("answered_by"),
                                                R("duration_s"))
    r_disp, r_abandoned, r_converted, r_revenue, r_cost, r_cur, r_agent = (
        R("disposition"), R("abandoned"), R("converted"), R("revenue"), R("cost"),
        R("currency"), R("agent"))
    r_segment, r_variant = R("segment"), R("variant")
    common = _Common(ctx, fmt, cols, extras, "call", "call_id", "c",
                     "no campaign for this caller ID: pass --campaign NAME, or map numbers to "
                     "campaigns in a --map file's [campaign_by_sender]")
    m_status, m_answered, m_seconds = (Memo(V.call_status), Memo(V.answered_by, null=True),
                                       Memo(V.seconds, null=True))
    m_flag, m_text, m_cost, m_money = common.m_flag, common.m_text, common.m_cost, common.m_money
    import_id = ctx.import_id

    def build(rows: Sequence[Sequence[str]]) -> list[list]:
        n, C, direction, names, cells = common.read_parties(rows)
        try:
            col = "started_at"
            started_at = list(map(parse_time, r_time(C, n), repeat(tz)))
            col = "status"
            status = m_status.column(r_status(C, n))
            col = "answered_by"
            answered_by = m_answered.column(r_answered(C, n))
            col = "duration_s"
            duration = m_seconds.column(r_duration(C, n))
            col = "abandoned"
            abandoned = m_flag.column(r_abandoned(C, n))
            col = "converted"
            converted = m_flag.column(r_converted(C, n))
            col = "revenue"
            revenue = m_money.column(r_revenue(C, n))
            col = "cost"
            cost = m_cost.column(r_cost(C, n))
        except (V.BadValue, ValueError, BadPhoneNumber) as exc:
            raise RowProblem(labels.get(col, col), str(exc)) from None
        cids, keys, attrs = common.finish(rows, C, n, names, cells)
        return [keys, cids, started_at, direction, status, answered_by, duration,
                m_text.column(r_disp(C, n)), abandoned, converted, revenue, cost,
                m_text.column(r_cur(C, n)), m_text.column(r_agent(C, n)),
                list(map(itemgetter(0), cells)), list(map(itemgetter(1), cells)),
                m_text.column(r_segment(C, n)), m_text.column(r_variant(C, n)), attrs,
                [import_id] * n]

    return build


_DAILY_COUNTS = ("sent", "delivered", "failed", "clicks", "conversions", "opt_outs", "replies",
                 "complaints", "new_subscribers", "list_size", "calls_dialed", "calls_answered",
                 "calls_abandoned")


def _daily_builder(fmt, ctx: Context, cols: _Fields, extras):
    tz, campaign_id, import_id, labels = ctx.tz, ctx.campaign_id, ctx.import_id, cols.labels
    g_date, g_campaign, g_channel = cols.get("date"), cols.get("campaign"), cols.get("channel")
    g_cost, g_revenue, g_talk = cols.get("cost"), cols.get("revenue"), cols.get("talk_seconds")
    g_counts = [(c, cols.get(c)) for c in _DAILY_COUNTS]

    def build_row(fields: Sequence[str]) -> tuple:
        col = "date"
        try:
            raw = g_date(fields).strip()
            try:
                day = dt.date.fromisoformat(raw[:10]) if len(raw) >= 10 else None
            except ValueError:
                day = None
            if day is None:
                ts = parse_time(raw, tz)
                day = dt.datetime.fromtimestamp(ts, tz).date()
            check_day(day)
            col = "campaign"
            name = campaign_name(g_campaign(fields))
            counts = {}
            for c, g in g_counts:
                col = c
                counts[c] = V.count(g(fields))
            col = "channel"
            ch = g_channel(fields).strip()
            if ch:
                chan = V.channel(ch)
            elif counts["calls_dialed"] is not None and counts["sent"] is None:
                chan = "call"
            else:
                chan = "sms"
            col = "cost"
            raw = g_cost(fields)
            cost = V.money_micros(raw) if raw else None
            col = "revenue"
            raw = g_revenue(fields)
            revenue = V.money_micros(raw) if raw else None
            col = "talk_seconds"
            talk = V.seconds(g_talk(fields), limit=V.MAX_COUNT)   # a day's total
        except (V.BadValue, ValueError) as exc:
            raise RowProblem(labels.get(col, col), str(exc)) from None
        cid = campaign_id(name, chan)
        return tuple(NULL if v is None else v for v in (
            cid, day.isoformat(), chan, counts["sent"], counts["delivered"], counts["failed"],
            counts["clicks"], counts["conversions"], counts["opt_outs"], counts["replies"],
            counts["complaints"], cost, revenue, counts["new_subscribers"],
            counts["list_size"], counts["calls_dialed"], counts["calls_answered"],
            counts["calls_abandoned"], talk, import_id))

    def build(rows: Sequence[Sequence[str]]) -> list[list]:
        # a few rows per campaign and day: row by row (campaign_id is idempotent, so a
        # batch retried after a bad row creates nothing twice)
        built = [build_row(r) for r in rows]
        return [list(col) for col in zip(*built)] if built else []

    return build


def _digits(s: str) -> str:
    """Sender numbers are matched on their digits (+1 415-555-0100 == 14155550100)."""
    d = "".join(ch for ch in s if ch.isdigit())
    return d or s.strip()
