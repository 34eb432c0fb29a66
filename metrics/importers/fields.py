"""What the import formats are made of: the canonical fields of each kind of row, the
formats that spell them (and how a format is recognised from a header), and the table
columns a built row fills. A leaf: it imports nothing of the project, so the mapping
reader, the binder and the row builders can all depend on it."""
from __future__ import annotations

import re
from dataclasses import dataclass


def normalise_header(name: str) -> str:
    """How header names are matched: case, spaces, dashes and underscores do not matter."""
    return re.sub(r"[\s_\-.]+", "", name.strip().lower())


def shown(text: str, limit: int = 60) -> str:
    """``text`` as a message may quote it: at most ``limit`` characters, cut with "…"."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def shown_names(names: list[str], limit: int = 200) -> str:
    """Column names for a message, comma-separated: each :func:`shown`, about ``limit``
    characters in all, then how many more there are. A header may be a megabyte."""
    out: list[str] = []
    used = 0
    for i, name in enumerate(names):
        s = shown(name)
        if out and used + len(s) > limit:
            out.append(f"… {len(names) - i:,} more")
            break
        out.append(s)
        used += len(s) + 2
    return ", ".join(out)


def _spell(*names: str) -> tuple[str, ...]:
    return tuple(normalise_header(n) for n in names)


@dataclass(frozen=True)
class Format:
    name: str
    kind: str                                  # message, call, daily, click or conversion
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

# Clicks on links in messages (Twilio's link-shortening click event: format 7) and
# conversions from a shop, form or CRM (format 8). ``cancelled`` and ``refunded`` are
# optional: a cancelled order is kept and counts for nothing, a refund comes off revenue.
CLICK_FIELDS = ("message_sid", "to", "link", "click_time")
CONVERSION_FIELDS = ("order_id", "converted_at", "revenue", "currency", "type", "message_id",
                     "recipient", "code", "cancelled", "refunded")

# The canonical fields a mapping file may name, by its [source] format.
FIELDS_BY_FORMAT = {"events": MESSAGE_FIELDS, "calls": CALL_FIELDS, "daily": DAILY_FIELDS,
                    "clicks": CLICK_FIELDS, "conversions": CONVERSION_FIELDS}

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
    "clicks": Format(
        "clicks", "click",
        {"message_sid": _spell("message_sid", "MessageSid", "sms_sid"),
         "to": _spell("to", "recipient"), "link": _spell("link", "url"),
         "click_time": _spell("click_time", "clicked_at")},
        ("message_sid", "click_time"), keep_extras=False),
    "conversions": Format(
        "conversions", "conversion",
        {**{f: _spell(f) for f in CONVERSION_FIELDS},
         "order_id": _spell("order_id", "order"),
         "converted_at": _spell("converted_at", "conversion_time"),
         "message_id": _spell("message_id", "message_sid"),
         "recipient": _spell("recipient", "phone")},
        ("order_id", "converted_at"), keep_extras=False),
}

# How a format is recognised from its header (normalised names), most specific first.
_DETECT: list[tuple[str, tuple[str, ...]]] = [
    ("twilio-messages", _spell("Sid", "SentDate")),
    ("twilio-messages", _spell("Sid", "NumSegments")),
    ("twilio-calls", _spell("sid", "start_time")),
    ("clicks", _spell("message_sid", "click_time")),
    ("conversions", _spell("order_id", "converted_at")),
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


# What a built row holds, in its table's column order (see rows.py and writer.py).
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

CLICK_COLUMNS = ("click_key", "message_key", "clicked_at", "recipient", "link", "import_id")
CONVERSION_COLUMNS = ("order_key", "converted_at", "type", "revenue_micros", "currency",
                      "cancelled", "message_key", "recipient", "code", "import_id")

# "No value" in a built row. The writer's SQL turns it into NULL (NULLIF(?, '') on every
# column that may be NULL): Python's sqlite3 binds str, int and bytearray directly but
# sends None and bytes through its adapter lookup, which made up a third of the insert time.
NULL = ""
