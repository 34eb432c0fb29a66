"""Reconciliation with Twilio: page the Messages and Calls lists over the REST API (with
the ``twilio`` library) and queue every record as an inbox event, so what callbacks
missed (Twilio retries a failed status callback once at most) is filled in by the same
applier, under the same rules: a status only moves forward, a repeat counts once. A
record also brings what callbacks never carry: the price, the segments and the time the
message was really sent.

Twilio answers 429 when it is asked too fast and the library does not retry: a page is
asked again after ``Retry-After`` (or a growing pause), up to :data:`RETRIES` times."""
from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..store import Store
from .events import Event

RETRIES = 6
PAGE_SIZE = 1000
FLUSH = 1000          # records per inbox transaction
SYNC_SETTING = "twilio_sync_until"


class SyncError(Exception):
    pass


@dataclass
class SyncResult:
    since: dt.datetime
    messages: int = 0
    calls: int = 0
    queued: int = 0          # records new or changed since they were last seen
    pages: int = 0
    retries: int = 0

    def summary(self) -> str:
        return (f"Twilio: read {self.messages:,} message{'s' * (self.messages != 1)} and "
                f"{self.calls:,} call{'s' * (self.calls != 1)} since "
                f"{self.since:%Y-%m-%d %H:%M} UTC ({self.pages} page{'s' * (self.pages != 1)}"
                + (f", {self.retries} retried after a rate limit or error" if self.retries
                   else "") + f"); {self.queued:,} new or changed")


def _iso(d: dt.datetime | None) -> str:
    return d.astimezone(dt.timezone.utc).isoformat() if d else ""


def _s(v: Any) -> str:
    return "" if v is None else str(v)


def message_event(m: Any, campaign: str | None) -> Event:
    body = {"t": "record", "kind": "message", "sid": m.sid, "status": _s(m.status),
            "sent": _iso(m.date_sent or m.date_created), "from": _s(m.from_), "to": _s(m.to),
            "body": _s(m.body), "segments": _s(m.num_segments), "error": _s(m.error_code),
            "price": _s(m.price), "price_unit": _s(m.price_unit),
            "direction": _s(m.direction), "service": _s(m.messaging_service_sid),
            "campaign": campaign}
    return _event(body)


def call_event(c: Any, campaign: str | None) -> Event:
    body = {"t": "record", "kind": "call", "sid": c.sid, "status": _s(c.status),
            "sent": _iso(c.start_time or c.date_created), "from": _s(c._from), "to": _s(c.to),
            "duration": _s(c.duration), "answered_by": _s(c.answered_by),
            "price": _s(c.price), "price_unit": _s(c.price_unit),
            "direction": _s(c.direction), "campaign": campaign}
    return _event(body)


def _event(body: dict) -> Event:
    key = f"twilio:rest:{body['sid']}:{body['status']}:{body['price']}:{body.get('error', '')}"
    return key, "twilio-sync", json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                                          sort_keys=True)


def _pages(first: Callable[[], Any], result: SyncResult, sleep: Callable[[float], None]
           ) -> Iterator[Any]:
    page = _fetch(first, result, sleep)
    while page is not None:
        result.pages += 1
        yield from page
        page = _fetch(page.next_page, result, sleep)


def _fetch(get: Callable[[], Any], result: SyncResult, sleep: Callable[[float], None]) -> Any:
    from twilio.base.exceptions import TwilioException
    pause = 1.0
    for attempt in range(RETRIES + 1):
        try:
            return get()
        except TwilioException as exc:
            response = exc.args[1] if len(exc.args) > 1 else getattr(exc, "response", None)
            status = getattr(response, "status_code", None) or getattr(exc, "status", None)
            if status not in (429, 500, 502, 503, 504) or attempt == RETRIES:
                raise SyncError(f"Twilio answered {status or 'an error'}: "
                                f"{' '.join(str(exc).split())[:300]}") from None
            wait = pause
            headers = getattr(response, "headers", None) or {}
            try:
                wait = max(wait, min(60.0, float(headers.get("Retry-After", 0))))
            except (TypeError, ValueError):
                pass
            result.retries += 1
            sleep(wait)
            pause = min(pause * 2, 30.0)
        except OSError as exc:       # the connection: tried again the same way
            if attempt == RETRIES:
                raise SyncError(f"cannot reach Twilio: {exc}") from None
            result.retries += 1
            sleep(pause)
            pause = min(pause * 2, 30.0)
    raise AssertionError("unreachable")


def sync_twilio(store: Store, client: Any, since: dt.datetime, *, campaign: str | None = None,
                page_size: int = PAGE_SIZE, sleep: Callable[[float], None] = time.sleep,
                progress: Callable[[SyncResult], None] | None = None,
                now: Callable[[], float] = time.time) -> SyncResult:
    """Queue every message and call Twilio lists since ``since`` into the inbox. The
    applier applies them (``kpibot sync`` runs it at once; under ``kpibot serve`` its
    applier thread does). ``campaign`` is the campaign of records whose sender names
    none (as ``--campaign`` for an import)."""
    result = SyncResult(since=since)
    started = int(now())
    batch: list[Event] = []

    def flush() -> None:
        if batch:
            result.queued += store.inbox_put(batch, int(now()))
            batch.clear()
        if progress:
            progress(result)

    lists = [("messages", message_event,
              lambda: client.messages.page(date_sent_after=since, page_size=page_size)),
             ("calls", call_event,
              lambda: client.calls.page(start_time_after=since, page_size=page_size))]
    for counter, event, first in lists:
        for record in _pages(first, result, sleep):
            batch.append(event(record, campaign))
            setattr(result, counter, getattr(result, counter) + 1)
            if len(batch) >= FLUSH:
                flush()
        flush()
    store.set_setting(SYNC_SETTING, str(started))
    return result


API_URL_ENV = "KPIBOT_TWILIO_API_URL"


def twilio_client(account_sid: str, auth_token: str, api_url: str | None = None) -> Any:
    """A ``twilio`` REST client; ``api_url`` (or ``$KPIBOT_TWILIO_API_URL``) points it at
    another host than api.twilio.com: a proxy, or a local stand-in in tests."""
    import os

    from twilio.rest import Client
    client = Client(account_sid, auth_token)
    url = api_url or os.environ.get(API_URL_ENV)
    if url:
        client.api.base_url = url.rstrip("/")
    return client


def since_of(text: str, now: float | None = None) -> dt.datetime:
    """``48h``, ``7d``, ``90m``, ``2w``, or a date or time (UTC unless it says)."""
    import re

    from ..times import parse_time
    now = time.time() if now is None else now
    m = re.fullmatch(r"(\d{1,5})([mhdw])", text.strip().lower())
    if m:
        seconds = int(m.group(1)) * {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[m.group(2)]
        return dt.datetime.fromtimestamp(now - seconds, dt.timezone.utc)
    try:
        return dt.datetime.fromtimestamp(parse_time(text), dt.timezone.utc)
    except ValueError:
        raise SyncError(f"--since '{text[:40]}': expected a duration (48h, 7d) or a date "
                        "(2026-11-01)") from None
