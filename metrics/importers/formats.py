"""The import formats: which columns each has, how it is detected, and how a row becomes
a canonical record (a tuple in the column order of its table)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Callable

from ..phones import BadPhoneNumber, PhoneHasher
from ..times import parse_time
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
    build: Callable[[list[str]], tuple]
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
    remembering new ones, so memory stays flat. Errors are never remembered."""

    __slots__ = ("fn", "limit")

    def __init__(self, fn: Callable[[str], Any], limit: int = 20_000):
        super().__init__()
        self.fn, self.limit = fn, limit

    def __missing__(self, raw: str) -> Any:
        value = self.fn(raw)
        if len(self) < self.limit:
            self[raw] = value
        return value


class _Fields:
    """How to read each canonical field from a CSV row: the column's value, a mapping's
    constant where the column is missing or empty, translated through the mapping's
    value table. The plain case (a column, no constant, no table) is an itemgetter."""

    def __init__(self, index: dict[str, int], consts: dict[str, str],
                 vmaps: dict[str, tuple[str, dict[str, str]]], labels: dict[str, str]):
        self.index, self.consts, self.vmaps, self.labels = index, consts, vmaps, labels

    def get(self, name: str) -> Callable[[list[str]], str]:
        i = self.index.get(name)
        const = self.consts.get(name)
        if i is None:
            value = const or ""
            return lambda f: value
        vmap = self.vmaps.get(name)
        if const is None and vmap is None:
            return itemgetter(i)
        label, table = vmap if vmap else (None, None)

        def read(f: list[str]) -> str:
            raw = f[i]
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

        return read


def _attrs(extras: list[tuple[str, int]], fields: list[str]) -> str | None:
    if not extras:
        return None
    d = {name: fields[i].strip() for name, i in extras if fields[i].strip()}
    return json.dumps(d, ensure_ascii=False, separators=(",", ":")) if d else None


def _nonempty_name(raw: str) -> str:
    name = raw.strip()
    if not name:
        raise V.BadValue("campaign is empty")
    return name


def _message_builder(fmt, ctx: Context, cols: _Fields, extras):
    tz, phones, twilio, labels = ctx.tz, ctx.phones, fmt.twilio, cols.labels
    senders, attributes = ctx.senders, ctx.attributes
    extra_names = [n for n, _ in extras]
    import_id = ctx.import_id
    G = cols.get
    g_dir, g_campaign, g_rcpt = G("direction"), G("campaign"), G("recipient")
    g_from, g_to, g_service = G("from"), G("to"), G("service")
    g_id, g_time, g_status, g_err, g_body = (G("message_id"), G("sent_at"), G("status"),
                                             G("error_code"), G("body"))
    g_cost, g_cur, g_segments, g_revenue = G("cost"), G("currency"), G("segments"), G("revenue")
    g_clicked, g_converted, g_opted, g_replied, g_spam = (
        G("clicked"), G("converted"), G("opted_out"), G("replied"), G("spam_complaint"))
    g_segment, g_variant = G("segment"), G("variant")
    m_dir, m_status, m_count, m_flag, m_text = (Memo(V.direction), Memo(V.sms_status),
                                                Memo(V.count), Memo(V.flag), Memo(V.text))
    m_cost = Memo(lambda s: V.money_micros(s, absolute=twilio) if s else None)
    m_money = Memo(lambda s: V.money_micros(s) if s else None)
    m_name = Memo(_nonempty_name)
    m_campaign = Memo(lambda name: ctx.campaign_id(name, "sms"))
    m_sender = Memo(lambda s: senders.get(_digits(s)))
    content_key = ctx.content_key

    def build(fields: list[str]) -> tuple:
        col = "direction"
        try:
            direction = m_dir[g_dir(fields)]
            if twilio:
                out = direction == "outbound"
                col = "from" if out else "to"
                name = ctx.campaign or m_sender[g_from(fields) if out else g_to(fields)] \
                    or senders.get(g_service(fields))
                if not name:
                    raise V.BadValue("no campaign for this sender: pass --campaign NAME, or map "
                                     "senders to campaigns in a --map file's [campaign_by_sender]")
                col = "to" if out else "from"
                raw_to = g_to(fields) if out else g_from(fields)
            else:
                col = "campaign"
                name = m_name[g_campaign(fields)]
                col = "recipient"
                raw_to = g_rcpt(fields)
            phone = phones(raw_to) if raw_to else None
            col = "sent_at"
            sent_at = parse_time(g_time(fields), tz)
            col = "status"
            status = m_status[g_status(fields)]
            col = "cost"
            cost = m_cost[g_cost(fields)]
            col = "revenue"
            revenue = m_money[g_revenue(fields)]
            col = "segments"
            segments = m_count[g_segments(fields)]
            col = "clicked"
            clicked = m_flag[g_clicked(fields)]
            col = "converted"
            converted = m_flag[g_converted(fields)]
            col = "opted_out"
            opted_out = m_flag[g_opted(fields)]
            col = "replied"
            replied = m_flag[g_replied(fields)]
            col = "spam_complaint"
            spam = m_flag[g_spam(fields)]
        except (V.BadValue, ValueError, BadPhoneNumber) as exc:
            raise RowProblem(labels.get(col, col), str(exc)) from None
        cid = m_campaign[name]   # only now: a rejected row creates no campaign
        keyword = V.keyword(g_body(fields)) if direction == "inbound" else None
        key = g_id(fields).strip() or content_key(f"m{cid}", fields)
        attrs = _attrs(extras, fields)
        if attrs:
            for n in extra_names:
                attributes.add((cid, n))
        if phone is None:
            rcpt = country = None
        else:
            rcpt, country = phone.hash, phone.country
        return (key, cid, sent_at, direction, status, m_text[g_err(fields)], rcpt, country,
                segments, cost, m_text[g_cur(fields)], clicked, converted, revenue, opted_out,
                replied, spam, keyword, m_text[g_segment(fields)], m_text[g_variant(fields)],
                attrs, import_id)

    return build


def _call_builder(fmt, ctx: Context, cols: _Fields, extras):
    tz, phones, twilio, labels = ctx.tz, ctx.phones, fmt.twilio, cols.labels
    senders, attributes = ctx.senders, ctx.attributes
    extra_names = [n for n, _ in extras]
    import_id = ctx.import_id
    G = cols.get
    g_dir, g_campaign, g_rcpt, g_from, g_to = (G("direction"), G("campaign"), G("recipient"),
                                               G("from"), G("to"))
    g_id, g_time, g_status, g_answered, g_duration = (G("call_id"), G("started_at"), G("status"),
                                                      G("answered_by"), G("duration_s"))
    g_disp, g_abandoned, g_converted, g_revenue, g_cost, g_cur, g_agent = (
        G("disposition"), G("abandoned"), G("converted"), G("revenue"), G("cost"),
        G("currency"), G("agent"))
    g_segment, g_variant = G("segment"), G("variant")
    m_dir, m_status, m_answered, m_seconds, m_flag, m_text = (
        Memo(V.direction), Memo(V.call_status), Memo(V.answered_by), Memo(V.seconds),
        Memo(V.flag), Memo(V.text))
    m_cost = Memo(lambda s: V.money_micros(s, absolute=twilio) if s else None)
    m_money = Memo(lambda s: V.money_micros(s) if s else None)
    m_name = Memo(_nonempty_name)
    m_campaign = Memo(lambda name: ctx.campaign_id(name, "call"))
    m_sender = Memo(lambda s: senders.get(_digits(s)))
    content_key = ctx.content_key

    def build(fields: list[str]) -> tuple:
        col = "direction"
        try:
            direction = m_dir[g_dir(fields)]
            if twilio:
                out = direction == "outbound"
                col = "from" if out else "to"
                name = ctx.campaign or m_sender[g_from(fields) if out else g_to(fields)]
                if not name:
                    raise V.BadValue("no campaign for this caller ID: pass --campaign NAME, or map "
                                     "numbers to campaigns in a --map file's [campaign_by_sender]")
                col = "to" if out else "from"
                raw_to = g_to(fields) if out else g_from(fields)
            else:
                col = "campaign"
                name = m_name[g_campaign(fields)]
                col = "recipient"
                raw_to = g_rcpt(fields)
            phone = phones(raw_to) if raw_to else None
            col = "started_at"
            started_at = parse_time(g_time(fields), tz)
            col = "status"
            status = m_status[g_status(fields)]
            col = "answered_by"
            answered_by = m_answered[g_answered(fields)]
            col = "duration_s"
            duration = m_seconds[g_duration(fields)]
            col = "abandoned"
            abandoned = m_flag[g_abandoned(fields)]
            col = "converted"
            converted = m_flag[g_converted(fields)]
            col = "revenue"
            revenue = m_money[g_revenue(fields)]
            col = "cost"
            cost = m_cost[g_cost(fields)]
        except (V.BadValue, ValueError, BadPhoneNumber) as exc:
            raise RowProblem(labels.get(col, col), str(exc)) from None
        cid = m_campaign[name]   # only now: a rejected row creates no campaign
        key = g_id(fields).strip() or content_key(f"c{cid}", fields)
        attrs = _attrs(extras, fields)
        if attrs:
            for n in extra_names:
                attributes.add((cid, n))
        if phone is None:
            rcpt = country = None
        else:
            rcpt, country = phone.hash, phone.country
        return (key, cid, started_at, direction, status, answered_by, duration,
                m_text[g_disp(fields)], abandoned, converted, revenue, cost,
                m_text[g_cur(fields)], m_text[g_agent(fields)], rcpt, country,
                m_text[g_segment(fields)], m_text[g_variant(fields)], attrs, import_id)

    return build


_DAILY_COUNTS = ("sent", "delivered", "failed", "clicks", "conversions", "opt_outs", "replies",
                 "complaints", "new_subscribers", "list_size", "calls_dialed", "calls_answered",
                 "calls_abandoned")


def _daily_builder(fmt, ctx: Context, cols: _Fields, extras):
    tz, campaign_id, import_id, labels = ctx.tz, ctx.campaign_id, ctx.import_id, cols.labels
    g_date, g_campaign, g_channel = cols.get("date"), cols.get("campaign"), cols.get("channel")
    g_cost, g_revenue, g_talk = cols.get("cost"), cols.get("revenue"), cols.get("talk_seconds")
    g_counts = [(c, cols.get(c)) for c in _DAILY_COUNTS]

    def build(fields: list[str]) -> tuple:
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
            col = "campaign"
            name = _nonempty_name(g_campaign(fields))
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
            talk = V.seconds(g_talk(fields))
        except (V.BadValue, ValueError) as exc:
            raise RowProblem(labels.get(col, col), str(exc)) from None
        cid = campaign_id(name, chan)
        return (cid, day.isoformat(), chan, counts["sent"], counts["delivered"], counts["failed"],
                counts["clicks"], counts["conversions"], counts["opt_outs"], counts["replies"],
                counts["complaints"], cost, revenue, counts["new_subscribers"],
                counts["list_size"], counts["calls_dialed"], counts["calls_answered"],
                counts["calls_abandoned"], talk, import_id)

    return build


def _digits(s: str) -> str:
    """Sender numbers are matched on their digits (+1 415-555-0100 == 14155550100)."""
    d = "".join(ch for ch in s if ch.isdigit())
    return d or s.strip()
