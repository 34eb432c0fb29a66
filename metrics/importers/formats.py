"""The import formats: which columns each has, how it is detected, and how a row becomes
a canonical record (a tuple in the column order of its table)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Callable

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
    build = builder(fmt, ctx, index, consts, labels, vmaps, extras)
    return Plan(fmt.name, fmt.kind, build, labels, [e for e, _ in extras], ignored)


def _find(header: list[str], col: str) -> int | None:
    if col in header:
        return header.index(col)
    n = normalise_header(col)
    for i, h in enumerate(header):
        if normalise_header(h) == n:
            return i
    return None


def _reader(index: dict[str, int], consts: dict[str, str],
            vmaps: dict[str, tuple[str, dict[str, str]]]) -> Callable[[list[str]], dict[str, str]]:
    names = list(index)
    get = itemgetter(*index.values()) if len(names) > 1 else (lambda f, i=index[names[0]]: (f[i],))

    def read(fields: list[str]) -> dict[str, str]:
        v = dict(zip(names, get(fields)))
        if consts:
            for k, c in consts.items():   # a constant fills a missing column or an empty value
                if not v.get(k, "").strip():
                    v[k] = c
        for canon, (label, m) in vmaps.items():
            raw = v.get(canon, "")
            hit = m.get(raw)
            if hit is None:
                hit = m.get(raw.strip().lower())
            if hit is None:
                known = ", ".join(sorted(m)[:8])
                raise RowProblem(label, f"value '{raw[:30]}' has no mapping in [values.{canon}] "
                                        f"(mapped: {known})")
            v[canon] = hit
        return v

    return read


def _attrs(extras: list[tuple[str, int]], fields: list[str]) -> str | None:
    if not extras:
        return None
    d = {name: fields[i].strip() for name, i in extras if fields[i].strip()}
    return json.dumps(d, ensure_ascii=False, separators=(",", ":")) if d else None


def _money(v: dict[str, str], name: str, absolute: bool = False) -> int | None:
    s = v.get(name)
    return V.money_micros(s, absolute=absolute) if s else None


def _message_builder(fmt, ctx: Context, index, consts, labels, vmaps, extras):
    read = _reader(index, consts, vmaps)
    tz, phones, twilio = ctx.tz, ctx.phones, fmt.twilio
    campaign_id, senders, attributes = ctx.campaign_id, ctx.senders, ctx.attributes
    extra_names = [n for n, _ in extras]
    import_id = ctx.import_id

    def build(fields: list[str]) -> tuple:
        v = read(fields)
        col = "direction"
        try:
            direction = V.direction(v.get("direction", ""))
            if twilio:
                col = "to" if direction == "outbound" else "from"
                raw_to = v["to"] if direction == "outbound" else v["from"]
                ours = v["from"] if direction == "outbound" else v["to"]
                name = ctx.campaign or senders.get(_digits(ours)) or senders.get(v.get("service", ""))
                if not name:
                    col = "from" if direction == "outbound" else "to"
                    raise V.BadValue("no campaign for this sender: pass --campaign NAME, or map "
                                     "senders to campaigns in a --map file's [campaign_by_sender]")
            else:
                raw_to = v.get("recipient", "")
                col = "campaign"
                name = v.get("campaign", "").strip()
                if not name:
                    raise V.BadValue("campaign is empty")
            col = "recipient" if not twilio else col
            phone = phones(raw_to) if raw_to.strip() else None
            col = "sent_at"
            sent_at = parse_time(v.get("sent_at", ""), tz)
            col = "status"
            status = V.sms_status(v.get("status", ""))
            col = "cost"
            cost = _money(v, "cost", absolute=twilio)
            col = "revenue"
            revenue = _money(v, "revenue")
            col = "segments"
            segments = V.count(v.get("segments", ""))
            col = "clicked"
            clicked = V.flag(v.get("clicked", ""))
            col = "converted"
            converted = V.flag(v.get("converted", ""))
            col = "opted_out"
            opted_out = V.flag(v.get("opted_out", ""))
            col = "replied"
            replied = V.flag(v.get("replied", ""))
            col = "spam_complaint"
            spam = V.flag(v.get("spam_complaint", ""))
        except (V.BadValue, ValueError, BadPhoneNumber) as exc:
            raise RowProblem(labels.get(col, col), str(exc)) from None
        keyword = V.keyword(v.get("body", "")) if direction == "inbound" else None
        cid = campaign_id(name, "sms")
        key = v.get("message_id", "").strip() or ctx.content_key(f"m{cid}", fields)
        attrs = _attrs(extras, fields)
        if attrs:
            for n in extra_names:
                attributes.add((cid, n))
        return (key, cid, sent_at, direction, status, V.text(v.get("error_code", "")),
                phone.hash if phone else None, phone.country if phone else None, segments,
                cost, V.text(v.get("currency", "")), clicked, converted, revenue, opted_out,
                replied, spam, keyword, V.text(v.get("segment", "")),
                V.text(v.get("variant", "")), attrs, import_id)

    return build


def _call_builder(fmt, ctx: Context, index, consts, labels, vmaps, extras):
    read = _reader(index, consts, vmaps)
    tz, phones, twilio = ctx.tz, ctx.phones, fmt.twilio
    campaign_id, senders, attributes = ctx.campaign_id, ctx.senders, ctx.attributes
    extra_names = [n for n, _ in extras]
    import_id = ctx.import_id

    def build(fields: list[str]) -> tuple:
        v = read(fields)
        col = "direction"
        try:
            direction = V.direction(v.get("direction", ""))
            if twilio:
                raw_to = v["to"] if direction == "outbound" else v["from"]
                ours = v["from"] if direction == "outbound" else v["to"]
                name = ctx.campaign or senders.get(_digits(ours))
                col = "to" if direction == "outbound" else "from"
                if not name:
                    col = "from" if direction == "outbound" else "to"
                    raise V.BadValue("no campaign for this caller ID: pass --campaign NAME, or map "
                                     "numbers to campaigns in a --map file's [campaign_by_sender]")
                col = "to" if direction == "outbound" else "from"
            else:
                raw_to = v.get("recipient", "")
                col = "campaign"
                name = v.get("campaign", "").strip()
                if not name:
                    raise V.BadValue("campaign is empty")
                col = "recipient"
            phone = phones(raw_to) if raw_to.strip() else None
            col = "started_at"
            started_at = parse_time(v.get("started_at", ""), tz)
            col = "status"
            status = V.call_status(v.get("status", ""))
            col = "answered_by"
            answered_by = V.answered_by(v.get("answered_by", ""))
            col = "duration_s"
            duration = V.seconds(v.get("duration_s", ""))
            col = "abandoned"
            abandoned = V.flag(v.get("abandoned", ""))
            col = "converted"
            converted = V.flag(v.get("converted", ""))
            col = "revenue"
            revenue = _money(v, "revenue")
            col = "cost"
            cost = _money(v, "cost", absolute=twilio)
        except (V.BadValue, ValueError, BadPhoneNumber) as exc:
            raise RowProblem(labels.get(col, col), str(exc)) from None
        cid = campaign_id(name, "call")
        key = v.get("call_id", "").strip() or ctx.content_key(f"c{cid}", fields)
        attrs = _attrs(extras, fields)
        if attrs:
            for n in extra_names:
                attributes.add((cid, n))
        return (key, cid, started_at, direction, status, answered_by, duration,
                V.text(v.get("disposition", "")), abandoned, converted, revenue, cost,
                V.text(v.get("currency", "")), V.text(v.get("agent", "")),
                phone.hash if phone else None, phone.country if phone else None,
                V.text(v.get("segment", "")), V.text(v.get("variant", "")), attrs, import_id)

    return build


_DAILY_COUNTS = ("sent", "delivered", "failed", "clicks", "conversions", "opt_outs", "replies",
                 "complaints", "new_subscribers", "list_size", "calls_dialed", "calls_answered",
                 "calls_abandoned")


def _daily_builder(fmt, ctx: Context, index, consts, labels, vmaps, extras):
    read = _reader(index, consts, vmaps)
    tz, campaign_id, import_id = ctx.tz, ctx.campaign_id, ctx.import_id

    def build(fields: list[str]) -> tuple:
        v = read(fields)
        col = "date"
        try:
            raw = v.get("date", "").strip()
            try:
                day = dt.date.fromisoformat(raw[:10]) if len(raw) >= 10 else None
            except ValueError:
                day = None
            if day is None:
                ts = parse_time(raw, tz)
                day = dt.datetime.fromtimestamp(ts, tz).date()
            col = "campaign"
            name = v.get("campaign", "").strip()
            if not name:
                raise V.BadValue("campaign is empty")
            counts = {}
            for c in _DAILY_COUNTS:
                col = c
                counts[c] = V.count(v.get(c, ""))
            col = "channel"
            ch = v.get("channel", "").strip()
            if ch:
                chan = V.channel(ch)
            elif counts["calls_dialed"] is not None and counts["sent"] is None:
                chan = "call"
            else:
                chan = "sms"
            col = "cost"
            cost = _money(v, "cost")
            col = "revenue"
            revenue = _money(v, "revenue")
            col = "talk_seconds"
            talk = V.seconds(v.get("talk_seconds", ""))
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
