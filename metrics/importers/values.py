"""Parsers for single CSV values: flags, counts, money, statuses, directions, keywords."""
from __future__ import annotations

import re


class BadValue(ValueError):
    """A value that cannot be read; the message says why (never echoing phone numbers)."""


_TRUE = {"1", "true", "yes", "y", "t", "x"}
_FALSE = {"", "0", "false", "no", "n", "f", "-"}


_FLAG_FAST = {"": 0, "0": 0, "1": 1}


def flag(s: str) -> int:
    """A yes/no flag or a small count (clicks, conversions): returns an int >= 0."""
    hit = _FLAG_FAST.get(s)
    if hit is not None:
        return hit
    t = s.strip().lower()
    if t in _FALSE:
        return 0
    if t in _TRUE:
        return 1
    if t.isdigit():
        return int(t)
    raise BadValue(f"'{s[:30]}' is not a yes/no value (use 1/0, true/false or yes/no)")


def count(s: str) -> int | None:
    t = s.strip().replace(",", "").replace("_", "")
    if not t:
        return None
    try:
        f = float(t)
    except ValueError:
        raise BadValue(f"'{s[:30]}' is not a number") from None
    if f < 0 or f != int(f):
        raise BadValue(f"'{s[:30]}' is not a whole number of 0 or more")
    return int(f)


_MONEY_JUNK = re.compile(r"[\s$€£¥₹\u00a0]|^[A-Z]{3}|[A-Z]{3}$")


def money_micros(s: str, *, absolute: bool = False) -> int | None:
    """Money to integer micro-units (exact sums). ``0,0075`` (decimal comma) is accepted."""
    try:
        v = float(s)   # the common case: a plain number
    except ValueError:
        pass
    else:
        if v == v and v not in (float("inf"), float("-inf")) and (absolute or v >= 0):
            return round(abs(v) * 1_000_000)
    t = _MONEY_JUNK.sub("", s.strip())
    if not t:
        return None
    if "," in t:
        if "." in t:
            t = t.replace(",", "") if t.rfind(",") < t.rfind(".") else t.replace(".", "").replace(",", ".")
        else:
            t = t.replace(",", ".")
    try:
        v = float(t)
    except ValueError:
        raise BadValue(f"'{s[:30]}' is not an amount of money") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise BadValue(f"'{s[:30]}' is not an amount of money")
    if absolute:
        v = abs(v)  # Twilio writes charges as negative prices
    elif v < 0:
        raise BadValue(f"'{s[:30]}' is negative")
    return round(v * 1_000_000)


def seconds(s: str) -> float | None:
    t = s.strip()
    if not t:
        return None
    try:
        v = float(t)
    except ValueError:
        if re.fullmatch(r"\d+:\d{2}(:\d{2})?", t):   # 1:05 or 0:01:05
            parts = [int(p) for p in t.split(":")]
            v = 0.0
            for p in parts:
                v = v * 60 + p
            return v
        raise BadValue(f"'{s[:30]}' is not a duration in seconds") from None
    if v < 0 or v != v:
        raise BadValue(f"'{s[:30]}' is not a duration of 0 seconds or more")
    return v


def _key(s: str) -> str:
    return s.strip().lower().replace("-", "_").replace(" ", "_")


SMS_STATUS = {
    **dict.fromkeys(["pending", "queued", "accepted", "scheduled", "sending", "buffered"], "pending"),
    **dict.fromkeys(["sent", "submitted"], "sent"),
    **dict.fromkeys(["delivered", "read"], "delivered"),
    **dict.fromkeys(["undelivered", "expired", "rejected", "delivery_failed"], "undelivered"),
    **dict.fromkeys(["failed", "sending_failed"], "failed"),
    **dict.fromkeys(["unknown", "delivery_unconfirmed"], "unknown"),
    **dict.fromkeys(["canceled", "cancelled"], "canceled"),
    **dict.fromkeys(["received", "receiving"], "received"),   # inbound messages
}

CALL_STATUS = {
    **dict.fromkeys(["completed", "answered", "complete"], "completed"),
    "busy": "busy",
    **dict.fromkeys(["no_answer", "noanswer", "not_answered", "unanswered"], "no-answer"),
    "failed": "failed",
    **dict.fromkeys(["canceled", "cancelled"], "canceled"),
    "queued": "queued",
    **dict.fromkeys(["ringing", "initiated"], "ringing"),
    **dict.fromkeys(["in_progress", "inprogress"], "in-progress"),
}

ANSWERED_BY = {"", "human", "unknown", "fax", "machine_start", "machine_end_beep",
               "machine_end_silence", "machine_end_other", "machine"}


def sms_status(s: str) -> str:
    hit = SMS_STATUS.get(s)
    if hit is not None:
        return hit
    try:
        return SMS_STATUS[_key(s)]
    except KeyError:
        raise BadValue(f"unknown SMS status '{s[:30]}' (expected "
                       + ", ".join(dict.fromkeys(SMS_STATUS.values()))
                       + ", or a provider's word for one: queued, accepted, expired, ...)") from None


def call_status(s: str) -> str:
    hit = CALL_STATUS.get(s)
    if hit is not None:
        return hit
    try:
        return CALL_STATUS[_key(s)]
    except KeyError:
        raise BadValue(f"unknown call status '{s[:30]}' (expected one of: "
                       + ", ".join(sorted(set(CALL_STATUS.values()))) + ")") from None


def answered_by(s: str) -> str | None:
    t = _key(s)
    if t not in ANSWERED_BY:
        raise BadValue(f"unknown answered_by '{s[:30]}' (expected human, machine_start, "
                       "machine_end_beep, machine_end_silence, machine_end_other, fax or unknown)")
    return t or None


_DIRECTION_FAST = {"": "outbound", "outbound": "outbound", "inbound": "inbound",
                   "outbound-api": "outbound", "outbound-call": "outbound",
                   "outbound-reply": "outbound", "outbound-dial": "outbound"}


def direction(s: str) -> str:
    hit = _DIRECTION_FAST.get(s)
    if hit is not None:
        return hit
    t = _key(s)
    if t in ("", "out", "mt") or t.startswith(("outbound", "outgoing")):   # Outgoing API
        return "outbound"
    if t in ("in", "mo", "received") or t.startswith(("inbound", "incoming")):
        return "inbound"
    raise BadValue(f"unknown direction '{s[:30]}' (expected outbound or inbound)")


def channel(s: str) -> str:
    t = _key(s)
    if t in ("sms", "text", "message", "messages", "mms"):
        return "sms"
    if t in ("call", "calls", "voice", "phone"):
        return "call"
    raise BadValue(f"unknown channel '{s[:30]}' (expected sms or call)")


OPT_OUT = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
OPT_IN = {"START", "YES", "UNSTOP"}
HELP = {"HELP", "INFO"}


def keyword(body: str) -> str | None:
    """The keyword a whole reply body is (opt_out, opt_in, help), or None for a real reply."""
    t = body.strip().strip(".!").strip().upper()
    if t in OPT_OUT:
        return "opt_out"
    if t in OPT_IN:
        return "opt_in"
    if t in HELP:
        return "help"
    return None


def text(s: str) -> str | None:
    t = s.strip()
    return t or None
