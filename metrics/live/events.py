"""Requests into inbox events: ``(key, source, body)``, the body JSON.

The key is what a repeat shares: a Twilio status callback is its message and status (a
callback retried, or the same status sent twice, is one event), an inbound message its
SID, a call callback its call and status, a CloudEvent its source and id, an ``/ingest``
batch its content. Bodies hold only what applying needs, in these shapes (``t``):

- ``status``: ``sid, status, error, from, to, service, campaign`` (an outbound message's
  status; the time it happened is the receipt's)
- ``inbound``: ``sid, from, to, body, segments, opt, service, campaign``
- ``call``: ``sid, status, duration, answered_by, direction, from, to, at, campaign``
- ``click``: ``sid, to, link, at``
- ``rows``: ``kind, header, rows`` (an ``/ingest`` batch of one kind, as strings)

Values a payload carries are kept as text; they are read (and any that cannot be are
kept aside with the reason, never dropped) when the event is applied. What is checked
here is what makes an event usable at all: a request missing its SID is refused, and
``/ingest`` rows get the importer's checks in full (:func:`ingest_events`)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import KpiBotError
from ..importers.binding import Context
from ..importers.fields import FORMATS
from ..importers.formats import bind
from ..importers.parse import build_batch
from ..phones import BadPhoneNumber, PhoneHasher
from ..times import parse_time, zone

MAX_INGEST_ROWS = 10_000
MAX_TEXT = 65_536            # characters of any one value (as importers.source.MAX_FIELD)

Event = tuple[str, str, str]   # key, source, JSON body


class BadRequest(KpiBotError):
    """A payload that cannot be taken (400), with what is wrong."""


@dataclass
class BadRow(KpiBotError):
    """An ``/ingest`` batch refused (422): the first bad row's number (1-based), column
    and reason, and up to 20 bad rows in all."""

    row: int | None
    column: str | None
    reason: str
    errors: list[dict]

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row else "the batch"
        col = f", column {self.column}" if self.column else ""
        return f"{where}{col}: {self.reason}"


def _dump(body: dict) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """A form or JSON value as text (None and missing are empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        try:
            s = str(value)
        except ValueError:           # an integer of more digits than Python will print
            raise BadRequest("a number is too long") from None
    else:
        raise BadRequest("a value is not text, a number or true/false")
    if len(s) > limit:
        raise BadRequest(f"a value is longer than {limit:,} characters")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:       # a lone surrogate ("\ud800") from JSON
        raise BadRequest("a value is not valid Unicode text") from None
    return s


def _sid(value: Any, name: str) -> str:
    sid = _text(value, 64).strip()
    if not sid:
        raise BadRequest(f"{name} is missing")
    return sid


def _campaign(campaign: str | None) -> str | None:
    return campaign.strip() or None if campaign else None


# -- Twilio's form-encoded callbacks ---------------------------------------------------

def twilio_message_status(form: dict[str, str], campaign: str | None = None) -> list[Event]:
    """A messaging status callback (MessageSid, MessageStatus, ErrorCode, From, To, ...)."""
    sid = _sid(form.get("MessageSid") or form.get("SmsSid"), "MessageSid")
    status = _text(form.get("MessageStatus") or form.get("SmsStatus"), 40).strip().lower()
    if not status:
        raise BadRequest("MessageStatus is missing")
    body = {"t": "status", "sid": sid, "status": status,
            "error": _text(form.get("ErrorCode"), 40).strip(),
            "from": _text(form.get("From"), 64), "to": _text(form.get("To"), 64),
            "service": _text(form.get("MessagingServiceSid"), 64),
            "campaign": _campaign(campaign)}
    return [(f"twilio:status:{sid}:{status}", "twilio-status", _dump(body))]


def twilio_inbound(form: dict[str, str], campaign: str | None = None) -> list[Event]:
    """An incoming message (MessageSid, From, To, Body, NumSegments, OptOutType, ...)."""
    sid = _sid(form.get("MessageSid") or form.get("SmsSid"), "MessageSid")
    body = {"t": "inbound", "sid": sid, "from": _text(form.get("From"), 64),
            "to": _text(form.get("To"), 64), "body": _text(form.get("Body")),
            "segments": _text(form.get("NumSegments"), 10),
            "opt": _text(form.get("OptOutType"), 20).strip().upper(),
            "service": _text(form.get("MessagingServiceSid"), 64),
            "campaign": _campaign(campaign)}
    return [(f"twilio:inbound:{sid}", "twilio-inbound", _dump(body))]


def twilio_call_status(form: dict[str, str], campaign: str | None = None,
                       received_at: int | None = None) -> list[Event]:
    """A voice status callback (CallSid, CallStatus, CallDuration, AnsweredBy, Direction,
    Timestamp, ...). The call's start is its Timestamp less its duration when it has
    ended, else the Timestamp (or the receipt's time when there is none to read)."""
    sid = _sid(form.get("CallSid"), "CallSid")
    status = _text(form.get("CallStatus"), 40).strip().lower()
    if not status:
        raise BadRequest("CallStatus is missing")
    duration = _text(form.get("CallDuration"), 20).strip()   # seconds ('Duration' is minutes)
    at = received_at
    stamp = _text(form.get("Timestamp"), 64).strip()
    if stamp:
        try:
            at = parse_time(stamp)
        except ValueError:
            pass
    if at is not None and duration.isdigit():
        at -= int(duration)
    body = {"t": "call", "sid": sid, "status": status, "duration": duration,
            "answered_by": _text(form.get("AnsweredBy"), 40).strip(),
            "direction": _text(form.get("Direction"), 40).strip(),
            "from": _text(form.get("From"), 64), "to": _text(form.get("To"), 64),
            "at": at, "campaign": _campaign(campaign)}
    return [(f"twilio:call:{sid}:{status}", "twilio-call", _dump(body))]


# -- Event Streams ---------------------------------------------------------------------

_MESSAGE_TYPE = "com.twilio.messaging.message."
_INBOUND_TYPE = "com.twilio.messaging.inbound-message.received"
_CLICK_TYPE = "com.twilio.daptbt.link-shortening.link-clicked"


def cloud_events(payload: Any, campaign: str | None = None) -> tuple[list[Event], int]:
    """An Event Streams webhook delivery: a JSON array of CloudEvents (one object is taken
    too). Returns the events to keep and how many were of types kpibot does not use."""
    if isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list):
        raise BadRequest("expected a JSON array of CloudEvents")
    out: list[Event] = []
    ignored = 0
    for i, ce in enumerate(payload, 1):
        kind = ce.get("type") if isinstance(ce, dict) else None
        if not (isinstance(kind, str) and kind.startswith(_USED)):
            ignored += 1                 # a type kpibot does not use (or no type at all)
            continue
        try:
            out.append(_cloud_event(ce, kind, campaign))
        except BadRequest as exc:        # one we use, but unreadable: kept, with the reason
            try:
                raw = json.dumps(ce, ensure_ascii=True)[:MAX_TEXT]
            except (ValueError, RecursionError):
                raw = repr(ce)[:MAX_TEXT].encode("ascii", "backslashreplace").decode()
            key = "ce:bad:" + hashlib.sha256(raw.encode()).hexdigest()
            out.append((key, "twilio-events", _dump({"t": "unreadable", "reason": str(exc),
                                                     "raw": raw})))
    return out, ignored


_USED = (_MESSAGE_TYPE, _INBOUND_TYPE, _CLICK_TYPE)


def _cloud_event(ce: dict, kind: str, campaign: str | None) -> Event:
    if not ce.get("id"):
        raise BadRequest("the CloudEvent has no id")
    data = ce.get("data")
    if not isinstance(data, dict):
        raise BadRequest("the CloudEvent has no data object")
    key = f"ce:{_text(ce.get('source'), 512)}:{_text(ce['id'], 128)}"
    if kind.startswith(_MESSAGE_TYPE):
        status = (_text(data.get("messageStatus"), 40)
                  or kind[len(_MESSAGE_TYPE):]).strip().lower()
        body = {"t": "status", "sid": _sid(data.get("messageSid"), "data.messageSid"),
                "status": status, "error": _text(data.get("errorCode"), 40).strip(),
                "from": _text(data.get("from"), 64), "to": _text(data.get("to"), 64),
                "service": _text(data.get("messagingServiceSid"), 64),
                "campaign": _campaign(campaign)}
    elif kind == _INBOUND_TYPE:
        body = {"t": "inbound", "sid": _sid(data.get("messageSid"), "data.messageSid"),
                "from": _text(data.get("from"), 64), "to": _text(data.get("to"), 64),
                "body": _text(data.get("body")),
                "segments": _text(data.get("numSegments"), 10),
                "opt": _text(data.get("optOutType"), 20).strip().upper(),
                "service": _text(data.get("messagingServiceSid"), 64),
                "campaign": _campaign(campaign)}
    else:
        body = {"t": "click", "sid": _sid(data.get("message_sid"), "data.message_sid"),
                "to": _text(data.get("to"), 64), "link": _text(data.get("link"), 4096),
                "at": _text(data.get("click_time") or ce.get("time"), 64)}
    return key, "twilio-events", _dump(body)


# -- /ingest -----------------------------------------------------------------------------

INGEST_FORMATS = {"message": "events", "call": "calls", "conversion": "conversions"}
CLICK_FIELDS = ("message_sid", "to", "link", "click_time")


def read_ingest(raw: bytes, content_type: str = "") -> list[dict]:
    """The rows of an ``/ingest`` body: a JSON array of objects, or NDJSON (one object a
    line; blank lines skipped)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except (ValueError, RecursionError) as exc:   # incl. too deep, too many digits
            raise BadRequest(f"the body is not valid JSON: {str(exc)[:200]}") from None
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except (ValueError, RecursionError) as exc:
                reason = f"line {n} is not valid JSON: {getattr(exc, 'msg', str(exc))[:200]}"
                raise BadRow(len(rows) + 1, None, reason,
                             [{"row": len(rows) + 1, "column": None, "reason": reason}]) from None
    if not isinstance(rows, list):
        raise BadRequest("expected a JSON array of rows, or NDJSON")
    if not rows:
        raise BadRequest("the batch has no rows")
    if len(rows) > MAX_INGEST_ROWS:
        raise BadRequest(f"a batch holds at most {MAX_INGEST_ROWS:,} rows (this one has "
                         f"{len(rows):,}): send it in parts")
    return rows


def ingest_events(rows: list, tz_name: str, region: str = "US") -> list[Event]:
    """Check an ``/ingest`` batch with the importer's own row builders and turn it into
    inbox events (one per kind of row, applied together). Raises :class:`BadRow` naming
    the first bad row (1-based), its column and the reason, with up to 20 bad rows."""
    by_kind: dict[str, list[tuple[int, dict]]] = {}
    errors: list[dict] = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            errors.append({"row": n, "column": None, "reason": "a row must be a JSON object"})
            continue
        kind = row.get("kind")
        if kind not in ("message", "call", "click", "conversion"):
            errors.append({"row": n, "column": "kind", "reason":
                           "kind must be message, call, click or conversion"
                           + (f", not '{_text(kind, 30)}'" if kind is not None else "")})
            continue
        by_kind.setdefault(kind, []).append((n, row))
    tz = zone(tz_name)
    tables: dict[str, tuple[list[str], list[list[str]]]] = {}
    for kind, items in by_kind.items():
        header: dict[str, None] = {}
        for n, row in items:
            for k in row:
                if k != "kind" and k not in header:
                    try:
                        _text(k, 200)
                    except BadRequest as exc:
                        errors.append({"row": n, "column": None, "reason": f"a field name: {exc}"})
                        continue
                    header[k] = None
        names = list(header)
        cells: list[tuple[int, list[str]]] = []
        for n, row in items:
            try:
                cells.append((n, [_text(row.get(k)) for k in names]))
            except BadRequest as exc:
                bad = next(k for k in names if _bad_value(row.get(k)))
                errors.append({"row": n, "column": bad, "reason": str(exc)})
        if kind == "click":
            errors.extend(_check_clicks(names, cells, tz))
        else:
            errors.extend(_check_rows(kind, names, cells, tz, region))
        tables[kind] = (names, [c for _, c in cells])
    if errors:
        errors.sort(key=lambda e: e["row"] or 0)
        first = errors[0]
        raise BadRow(first["row"], first["column"], first["reason"], errors[:20])
    body = json.dumps({k: [h, r] for k, (h, r) in sorted(tables.items())},
                      ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(body.encode()).hexdigest()
    out = []
    # a click and a conversion after the messages they may belong to
    order = {"message": 0, "call": 1, "click": 2, "conversion": 3}
    for kind, (h, r) in sorted(tables.items(), key=lambda kv: order[kv[0]]):
        if kind == "click":      # each click on its own: one whose message is not stored
            out.extend((f"ingest:{digest}:click:{n}", "ingest", _dump(c))   # yet waits alone
                       for n, c in enumerate(click_bodies(h, r), 1))
        else:
            out.append((f"ingest:{digest}:{kind}", "ingest",
                        _dump({"t": "rows", "kind": kind, "header": h, "rows": r})))
    return out


def _bad_value(v: Any) -> bool:
    try:
        _text(v)
        return False
    except BadRequest:
        return True


def validation_context(tz: dt.tzinfo, region: str) -> Context:
    """A row builder's context that touches nothing: campaigns are numbered in memory, and
    numbers hashed with a throwaway key (the rows are only checked)."""
    ids: dict[str, int] = {}
    return Context(tz=tz, phones=PhoneHasher(b"check-only", region),
                   campaign_id=lambda name, channel: ids.setdefault(name, len(ids) + 1),
                   import_id=0)


def _check_rows(kind: str, header: list[str], cells: list[tuple[int, list[str]]],
                tz: dt.tzinfo, region: str) -> list[dict]:
    """The importer's checks of message, call or conversion rows: the same binding
    (required fields, spellings) and the same row builders."""
    fmt = FORMATS[INGEST_FORMATS[kind]]
    try:
        plan = bind(fmt, header, validation_context(tz, region))
    except ValueError as exc:
        return [{"row": cells[0][0] if cells else None, "column": None, "reason": str(exc)}]
    _, errs = build_batch(plan.build, cells)
    return [{"row": e.line, "column": e.column, "reason": e.reason} for e in errs]


def _check_clicks(header: list[str], cells: list[tuple[int, list[str]]],
                  tz: dt.tzinfo) -> list[dict]:
    """Click rows (format 7): ``message_sid`` and ``click_time`` are needed, ``to`` must be
    a phone number when given."""
    errors = []
    index = {k: i for i, k in enumerate(header)}
    missing = [f for f in ("message_sid", "click_time") if f not in index]
    if missing:
        return [{"row": cells[0][0] if cells else None, "column": missing[0],
                 "reason": f"missing required field for click rows: {', '.join(missing)}"}]
    phones = PhoneHasher(b"check-only")
    for n, row in cells:
        sid, when = row[index["message_sid"]].strip(), row[index["click_time"]]
        to = row[index["to"]] if "to" in index else ""
        if not sid:
            errors.append({"row": n, "column": "message_sid", "reason": "no value"})
            continue
        try:
            parse_time(when, tz)
        except ValueError as exc:
            errors.append({"row": n, "column": "click_time", "reason": str(exc)})
            continue
        try:
            phones(to)
        except BadPhoneNumber as exc:
            errors.append({"row": n, "column": "to", "reason": str(exc)})
    return errors


def click_bodies(header: list[str], rows: Iterable[list[str]]) -> list[dict]:
    """``/ingest`` click rows as the click bodies Event Streams gives."""
    index = {k: i for i, k in enumerate(header)}

    def get(row: list[str], name: str) -> str:
        return row[index[name]] if name in index else ""
    return [{"t": "click", "sid": get(r, "message_sid").strip(), "to": get(r, "to"),
             "link": get(r, "link"), "at": get(r, "click_time")} for r in rows]
