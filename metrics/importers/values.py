"""Parsers for single CSV values: flags, counts, money, statuses, directions, keywords."""
from __future__ import annotations

import hashlib
import re
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

from ..names import MAX_NAME, clean_label


class BadValue(ValueError):
    """A value that cannot be read; the message says why (never echoing phone numbers)."""


# The largest values a row may hold. Anything bigger is a typo or a hostile file, and it
# must be a bad row, not a crash: SQLite integers are 64-bit (9.2e18), and money is stored
# in micro-units. A campaign's totals are checked again at the end of an import (rollup).
MAX_AMOUNT = 10_000_000_000          # currency units per amount: 1e16 micro-units
MAX_COUNT = 1_000_000_000_000        # a count in a daily total (sent, delivered, ...)
MAX_FLAG = 1_000_000                 # a per-row count in a flag column (clicks, conversions)
MAX_CALL_SECONDS = 7 * 86_400        # one call's duration


_TRUE = {"1", "true", "yes", "y", "t", "x"}
_FALSE = {"", "0", "false", "no", "n", "f", "-"}


_FLAG_FAST = {"": 0, "0": 0, "1": 1}


def _not_ascii(s: str, what: str) -> BadValue:
    """The error for a number written with other characters than ASCII: Python reads
    Arabic-Indic (٣٤٥) and full-width (１２３) digits as numbers, kpibot does not (a
    spreadsheet would not sum them either, and they are more often a mix-up than meant)."""
    if any(c.isdigit() for c in s if not c.isascii()):
        return BadValue(f"'{s[:30]}' has digits other than 0-9: write numbers with 0-9")
    return BadValue(f"'{s[:30]}' is not {what}")


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
    if not t.isascii():
        raise _not_ascii(s, "a yes/no value (use 1/0, true/false or yes/no)")
    if t.isdecimal():
        if len(t) <= 7 and int(t) <= MAX_FLAG:
            return int(t)
        raise BadValue(f"'{s[:30]}' is too large for a count in a yes/no column "
                       f"(at most {MAX_FLAG:,})")
    raise BadValue(f"'{s[:30]}' is not a yes/no value (use 1/0, true/false or yes/no)")


def count(s: str) -> int | None:
    """A whole number from 0 to :data:`MAX_COUNT` (``1,234``, ``12.0`` and ``1e3`` read)."""
    t = s.strip().replace(",", "").replace("_", "")
    if not t:
        return None
    if not t.isascii():
        raise _not_ascii(s, "a number")
    try:
        f = float(t)
    except ValueError:
        raise BadValue(f"'{s[:30]}' is not a number") from None
    if f != f or f < 0:
        raise BadValue(f"'{s[:30]}' is not a whole number of 0 or more")
    if f > MAX_COUNT:   # below it a float holds every whole number exactly
        raise BadValue(f"'{s[:30]}' is too large (a count is at most {MAX_COUNT:,})")
    if f != int(f):
        raise BadValue(f"'{s[:30]}' is not a whole number of 0 or more")
    return int(f)


_MONEY_JUNK = re.compile(r"[\s$€£¥₹\u00a0]|^[A-Z]{3}|[A-Z]{3}$")
_MONEY_MARK = re.compile(r"[$€£¥₹]|^[A-Z]{3}|[A-Z]{3}$")   # a currency in an amount
# The ISO 4217 codes a currency symbol may stand for.
CURRENCY_SYMBOLS: dict[str, frozenset[str]] = {
    "$": frozenset("USD CAD AUD NZD SGD HKD TWD MXN ARS CLP COP UYU DOP CUP BSD BBD BMD BND "
                   "BZD FJD GYD JMD KYD LRD NAD SBD SRD TTD XCD".split()),
    "€": frozenset({"EUR"}),
    "£": frozenset({"GBP", "EGP", "FKP", "GIP", "SHP", "SSP"}),
    "¥": frozenset({"JPY", "CNY"}),
    "₹": frozenset({"INR"}),
}
_SYMBOL_NAMES = {"$": "dollars or pesos", "€": "euros", "£": "pounds", "¥": "yen or yuan",
                 "₹": "rupees"}
# Below this many currency units, float(text) * 1e6 rounds to the exact micro-units of any
# text with at most 6 decimals: the two roundings err by less than 2**-52 of a value
# under 2**51 micro-units, i.e. by less than half a micro-unit.
_FAST_LIMIT = 2 ** 51 / 1_000_000
_MICRO = Decimal("0.000001")
_MAX_AMOUNT = Decimal(MAX_AMOUNT)
_EXACT = Context(prec=40, rounding=ROUND_HALF_EVEN)   # whatever the thread's context says


def money_micros(s: str, *, absolute: bool = False) -> int | None:
    """Money to integer micro-units (exact sums), at most :data:`MAX_AMOUNT` currency units.

    ``0,0075`` (decimal comma), ``1,234.56``, ``$12`` and ``EUR 3`` are accepted (whether
    the currency agrees with the row's: :func:`currency_conflict`). Every digit counts:
    plain numbers take a float fast path only where it is provably exact (no exponent, at
    most 6 decimals, under 2.2 billion); any other text is read as a decimal and rounded
    to the micro-unit half-to-even (0.0000025 -> 2 micro-units). An amount that is not
    zero but would round to zero is a bad value, as are digits other than 0-9."""
    return money(s, absolute=absolute)[0]


def money(s: str, *, absolute: bool = False) -> tuple[int | None, str | None]:
    """:func:`money_micros`, and the currency the amount is written in: its ISO code
    (``12 USD``), its symbol (``$12``), or None. Two currencies that cannot be one
    (``$1 EUR``) are a bad value."""
    try:
        v = float(s)   # the common case: a plain number
    except ValueError:
        pass
    else:
        if (0.0 <= v < _FAST_LIMIT or absolute and -_FAST_LIMIT < v <= 0.0) and s.isascii():
            dot = s.find(".")
            if (dot < 0 or len(s) - dot <= 7) and "e" not in s and "E" not in s:
                return round(abs(v) * 1_000_000), None
    stripped = s.strip()
    t = _MONEY_JUNK.sub("", stripped)
    if not t:
        return None, None
    mark = money_mark(stripped)
    if not t.isascii():
        raise _not_ascii(s, "an amount of money")
    if "," in t:
        if "." in t:
            t = t.replace(",", "") if t.rfind(",") < t.rfind(".") else t.replace(".", "").replace(",", ".")
        else:
            t = t.replace(",", ".")
    try:
        d = Decimal(t)
    except InvalidOperation:
        raise BadValue(f"'{s[:30]}' is not an amount of money") from None
    if not d.is_finite():
        raise BadValue(f"'{s[:30]}' is not an amount of money")
    if absolute:
        d = abs(d)  # Twilio writes charges as negative prices
    elif d < 0:
        raise BadValue(f"'{s[:30]}' is negative")
    if d > _MAX_AMOUNT:
        raise BadValue(f"'{s[:30]}' is too large (an amount is at most {MAX_AMOUNT:,})")
    micros = int(d.quantize(_MICRO, context=_EXACT).scaleb(6, context=_EXACT))
    if micros == 0 and d != 0:
        raise BadValue(f"'{s[:30]}' has more decimals than kpibot keeps (6): it would be "
                       "stored as 0")
    return micros, mark


def money_mark(s: str) -> str | None:
    """The currency an amount is written in: an ISO code (``EUR 3``), else a symbol
    (``$12``), else None. A code and a symbol that cannot be one (``$1 EUR``), or two
    of either, are a bad value."""
    marks = _MONEY_MARK.findall(s.strip())
    if not marks:
        return None
    codes = {m for m in marks if len(m) == 3}
    symbols = {m for m in marks if len(m) == 1}
    if len(codes) > 1 or len(symbols) > 1 or (
            codes and symbols and not codes <= CURRENCY_SYMBOLS[next(iter(symbols))]):
        raise BadValue(f"'{s[:30]}' names two currencies ({', '.join(sorted(codes | symbols))})")
    return next(iter(codes or symbols))


def currency_conflict(amount: str, mark: str, currency: str) -> str | None:
    """Why ``amount``, written in ``mark`` (see :func:`money_mark`), cannot be in the row's
    ``currency``; None when it can be, or when ``currency`` is empty or neither an ISO
    code nor a known symbol (nothing to hold it against)."""
    cur = currency.strip().upper()
    row = CURRENCY_SYMBOLS.get(cur) or (
        frozenset({cur}) if len(cur) == 3 and cur.isascii() and cur.isalpha() else None)
    if row is None:
        return None
    codes = CURRENCY_SYMBOLS.get(mark) or frozenset({mark})
    if row & codes:
        return None
    what = mark if len(mark) == 3 else f"{mark} ({_SYMBOL_NAMES[mark]})"
    return f"'{amount[:30]}' is an amount in {what}, but the row's currency is {cur[:30]}"


def seconds(s: str, limit: float = MAX_CALL_SECONDS) -> float | None:
    """A duration in seconds (``65``, ``1:05``, ``0:01:05``), from 0 to ``limit``."""
    t = s.strip()
    if not t:
        return None
    if not t.isascii():
        raise _not_ascii(s, "a duration in seconds")
    try:
        v = float(t)
    except ValueError:
        if not re.fullmatch(r"[0-9]+:[0-9]{2}(:[0-9]{2})?", t):   # 1:05 or 0:01:05
            raise BadValue(f"'{s[:30]}' is not a duration in seconds") from None
        parts = t.split(":")
        if len(parts[0]) > 12:
            raise BadValue(f"'{s[:30]}' is too long a duration (at most {limit:,.0f} seconds)")
        v = 0.0
        for p in parts:
            v = v * 60 + int(p)
    if v < 0 or v != v:
        raise BadValue(f"'{s[:30]}' is not a duration of 0 seconds or more")
    if v > limit:
        raise BadValue(f"'{s[:30]}' is too long a duration (at most {limit:,.0f} seconds)")
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
    """A short label (segment, variant, agent, disposition, currency, error code): see
    :func:`metrics.names.clean_label`. Empty once cleaned is no value."""
    return clean_label(s) or None


def campaign_name(raw: str) -> str:
    """A campaign name as stored: cleaned of control characters (see
    :func:`metrics.names.clean_label`), not empty, at most 200 characters."""
    name = clean_label(raw)
    if not name:
        raise BadValue("campaign is empty")
    if len(name) > MAX_NAME:
        raise BadValue(f"campaign name is longer than {MAX_NAME} characters")
    return name


def sender_key(sender: str) -> str:
    """How a sender is matched to its campaign ([campaign_by_sender] in a mapping or the
    sources file): a number on its digits (+1 415-555-0100 == 14155550100), a messaging
    service SID (MG...) or an alphanumeric sender ID as written."""
    s = sender.strip()
    if s[:2].isalpha():
        return s
    digits = "".join(ch for ch in s if ch.isdigit())
    return digits or s


# -- clicks and conversions (formats 7 and 8) ------------------------------------------------

CONVERSION_TYPES = {"sale": "sale", "sales": "sale", "purchase": "sale", "order": "sale",
                    "signup": "sign-up", "registration": "sign-up", "subscribe": "sign-up",
                    "appointment": "appointment", "booking": "appointment",
                    "schedule": "appointment", "lead": "lead"}
MAX_ID = 200                        # characters of an order id or a message SID


def conversion_type(s: str) -> str | None:
    """sale, sign-up, appointment or lead (a few common synonyms too); None when empty (a
    new conversion is then a sale, and a later copy of one keeps its type)."""
    t = s.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    if not t:
        return None
    hit = CONVERSION_TYPES.get(t)
    if hit is None:
        raise BadValue(f"type must be sale, sign-up, appointment or lead, not '{s.strip()[:30]}'")
    return hit


_ISO_CURRENCY = re.compile(r"[A-Z]{3}")


def iso_currency(s: str) -> str | None:
    """A currency as an ISO 4217 code (``usd`` -> ``USD``); None when empty."""
    t = s.strip().upper()
    if not t:
        return None
    if not _ISO_CURRENCY.fullmatch(t):
        raise BadValue(f"currency must be a 3-letter ISO 4217 code (USD, EUR), not "
                       f"'{s.strip()[:20]}'")
    return t


def cancelled(s: str) -> int:
    """Whether an order is cancelled: a yes/true flag, or any time it was cancelled at."""
    t = s.strip().lower()
    if t in _FALSE:
        return 0
    return 1


def identifier(s: str, what: str) -> str:
    """An order id or message SID as stored: stripped, not empty, at most MAX_ID characters."""
    t = s.strip()
    if not t:
        raise BadValue(f"no {what}")
    if len(t) > MAX_ID:
        raise BadValue(f"{what} is longer than {MAX_ID} characters")
    return t


def click_key(sid: str, clicked_at: int, link: str) -> str:
    """What a click is known by: its message, second and link (a repeat of the same click,
    from an export and from Event Streams, is one click)."""
    h = hashlib.blake2b(link.strip().encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{sid}:{clicked_at}:{h}"
