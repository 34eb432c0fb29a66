"""The live-data front door: a WSGI app beside Slack's ``/slack/events`` on the port
``kpibot serve`` listens on.

| path | what | checked with |
| --- | --- | --- |
| POST /twilio/messages/status  | messaging status callbacks (form) | X-Twilio-Signature |
| POST /twilio/messages/inbound | incoming messages (form)          | X-Twilio-Signature |
| POST /twilio/calls/status     | voice status callbacks (form)     | X-Twilio-Signature |
| POST /twilio/events           | an Event Streams sink (JSON)      | X-Twilio-Signature, bodySHA256 |
| POST /ingest                  | canonical rows (JSON, NDJSON)     | Bearer KPIBOT_INGEST_TOKEN |
| GET  /healthz                 | can the store be read and written | none |

Every request is hostile until its signature or token checks: before that nothing is
parsed beyond the size, and nothing is stored. A 2xx means the events are committed to
the inbox (``Store.inbox_put``); the applier thread (``bot.live``) takes them from there.
Handlers are thin: payloads become events in ``metrics.live.events``."""
from __future__ import annotations

import hmac
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import parse_qs

from metrics.errors import KpiBotError
from metrics.live import events as E
from metrics.store import Store

log = logging.getLogger("kpibot.webhooks")

TWILIO_PATHS = {"/twilio/messages/status", "/twilio/messages/inbound",
                "/twilio/calls/status", "/twilio/events"}
INGEST_PATH = "/ingest"
HEALTH_PATH = "/healthz"
PATHS = TWILIO_PATHS | {INGEST_PATH, HEALTH_PATH}
MAX_FORM_BYTES = 64 << 10            # a Twilio callback is a few hundred bytes
MAX_EVENTS_BYTES = 4 << 20           # an Event Streams delivery (read before its signature checks)
MAX_JSON_BYTES = 16 << 20            # an /ingest batch (read once its token checked)
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@dataclass(frozen=True)
class LiveSettings:
    twilio_token: str | None = None          # TWILIO_AUTH_TOKEN: the Twilio paths are on
    public_url: str | None = None            # KPIBOT_PUBLIC_URL: what Twilio calls
    ingest_token: str | None = None          # KPIBOT_INGEST_TOKEN: /ingest is on
    region: str = "US"

    @classmethod
    def from_env(cls) -> "LiveSettings":
        url = (os.environ.get("KPIBOT_PUBLIC_URL") or "").strip().rstrip("/") or None
        return cls(twilio_token=os.environ.get("TWILIO_AUTH_TOKEN") or None, public_url=url,
                   ingest_token=os.environ.get("KPIBOT_INGEST_TOKEN") or None,
                   region=os.environ.get("KPIBOT_REGION", "US"))

    def __repr__(self) -> str:   # never print a secret
        return (f"LiveSettings(twilio={bool(self.twilio_token)}, public_url={self.public_url!r}, "
                f"ingest={bool(self.ingest_token)})")


class _Params(dict):
    """Form fields with every value of a repeated name, as Twilio's validator reads them."""

    def getlist(self, name: str) -> list[str]:
        return self[name]

    def first(self) -> dict[str, str]:
        return {k: v[0] for k, v in self.items()}


class Response(Exception):
    """An answer that ends the request early."""

    def __init__(self, status: str, body: dict | bytes, content_type: str = "application/json"):
        super().__init__(status)
        self.status, self.body, self.content_type = status, body, content_type


def _json(status: str, **body) -> Response:
    return Response(status, body)


class Webhooks:
    """The WSGI app. ``fallback`` takes every other path (Slack's handler, or a 404)."""

    def __init__(self, settings: LiveSettings, store: Callable[[], Store],
                 fallback: Callable | None = None, wake: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.settings, self.fallback = settings, fallback
        self._store = store
        self.wake = wake or (lambda: None)
        self.clock = clock
        self._validator = None

    def store(self) -> Store:
        """This thread's store, its inbox commits left without checkpoints (the applier
        thread makes them: ``bot.live``)."""
        store = self._store()
        if not getattr(store, "_webhook_ready", False):
            store.defer_inbox_checkpoints()
            store._webhook_ready = True
        return store

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in PATHS:
            if self.fallback is not None:
                return self.fallback(environ, start_response)
            return self._send(start_response, _json("404 Not Found", error="not found"))
        try:
            answer = self._route(path, environ)
        except Response as r:
            answer = r
        except KpiBotError as exc:      # a store that cannot be written: the sender retries
            log.error("%s: %s", path, exc)
            answer = _json("503 Service Unavailable", error=str(exc))
        except Exception:
            log.exception("%s failed", path)
            answer = _json("500 Internal Server Error", error="internal error; nothing stored")
        return self._send(start_response, answer)

    @staticmethod
    def _send(start_response: Callable, r: Response) -> list[bytes]:
        body = r.body if isinstance(r.body, bytes) else json.dumps(r.body).encode()
        start_response(r.status, [("Content-Type", r.content_type),
                                  ("Content-Length", str(len(body)))])
        return [body]

    # -- routing ------------------------------------------------------------------------
    def _route(self, path: str, environ: dict) -> Response:
        method = environ.get("REQUEST_METHOD", "GET")
        if path == HEALTH_PATH:
            if method not in ("GET", "HEAD"):
                raise _json("405 Method Not Allowed", error="use GET")
            return self._health()
        if method != "POST":
            raise _json("405 Method Not Allowed", error="use POST")
        if path == INGEST_PATH:
            return self._ingest(environ)
        return self._twilio(path, environ)

    def _health(self) -> Response:
        try:
            state = self.store().health()
        except Exception as exc:
            return _json("503 Service Unavailable", ok=False, error=" ".join(str(exc).split()))
        return _json("200 OK", ok=True, **state)

    # -- Twilio -------------------------------------------------------------------------
    def _twilio(self, path: str, environ: dict) -> Response:
        token = self.settings.twilio_token
        if not token:
            raise _json("404 Not Found", error="Twilio webhooks are off: set TWILIO_AUTH_TOKEN")
        is_json = path == "/twilio/events"
        raw = _body(environ, MAX_EVENTS_BYTES if is_json else MAX_FORM_BYTES)
        signature = environ.get("HTTP_X_TWILIO_SIGNATURE", "")
        if not signature:
            raise _json("403 Forbidden", error="missing X-Twilio-Signature")
        url = self._url(environ)
        query = _Params(parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        campaign = (query.get("campaign") or [None])[0]
        from twilio.request_validator import RequestValidator, get_signature_algorithm
        if self._validator is None:       # the token is fixed for the server's life
            self._validator = RequestValidator(token)
        validator = self._validator
        algorithm = get_signature_algorithm(
            environ.get("HTTP_X_TWILIO_WEBHOOKS_SIGNATURE_SETTINGS", ""))
        if is_json:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _json("403 Forbidden", error="bad signature") from None
            if "bodySHA256" not in query:
                raise _json("403 Forbidden", error="bad signature: a JSON body is signed with "
                            "bodySHA256 in the URL")
            try:
                ok = validator.validate(url, text, signature, algorithm)
            except (TypeError, ValueError):
                ok = False
        else:
            try:
                form = _Params(parse_qs(raw.decode("utf-8"), keep_blank_values=True,
                                        max_num_fields=1000))
            except ValueError:     # not UTF-8, or more fields than any callback has
                raise _json("403 Forbidden", error="bad signature") from None
            try:
                ok = validator.validate(url, form, signature, algorithm)
            except (TypeError, ValueError):
                ok = False
        if not ok:
            log.warning("%s: bad Twilio signature (checked against %s)", path, url)
            raise _json("403 Forbidden", error="bad signature")
        # authenticated from here on
        now = int(self.clock())
        try:
            if is_json:
                try:
                    payload = json.loads(text)
                except (ValueError, RecursionError) as exc:   # too deep, too many digits
                    raise _json("400 Bad Request",
                                error=f"not JSON: {getattr(exc, 'msg', str(exc))[:200]}") from None
                events, ignored = E.cloud_events(payload, campaign)
            elif path == "/twilio/messages/status":
                events = E.twilio_message_status(form.first(), campaign)
            elif path == "/twilio/messages/inbound":
                events = E.twilio_inbound(form.first(), campaign)
            else:
                events = E.twilio_call_status(form.first(), campaign, received_at=now)
        except E.BadRequest as exc:
            raise _json("400 Bad Request", error=str(exc)) from None
        if events:
            self.store().inbox_put(events, now)
            self.wake()
        return Response("200 OK", EMPTY_TWIML, "text/xml")   # no reply to anyone

    def _url(self, environ: dict) -> str:
        """The URL Twilio signed: $KPIBOT_PUBLIC_URL + path + query (a TLS proxy in front
        changes what this server sees); without it, the request's own Host and scheme."""
        base = self.settings.public_url
        if not base:
            scheme = environ.get("wsgi.url_scheme", "http")
            host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "localhost")
            base = f"{scheme}://{host}"
        query = environ.get("QUERY_STRING", "")
        return base + environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") + \
            (f"?{query}" if query else "")

    # -- /ingest ------------------------------------------------------------------------
    def _ingest(self, environ: dict) -> Response:
        token = self.settings.ingest_token
        if not token:
            raise _json("404 Not Found", error="/ingest is off: set KPIBOT_INGEST_TOKEN")
        given = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                                 token.encode()):
            raise Response("401 Unauthorized", {"error": "a valid Authorization: Bearer token "
                                                         "is needed"})
        raw = _body(environ, MAX_JSON_BYTES)
        store = self.store()
        try:
            rows = E.read_ingest(raw, environ.get("CONTENT_TYPE", ""))
            events = E.ingest_events(rows, store.timezone(), self.settings.region)
        except E.BadRow as exc:
            raise _json("422 Unprocessable Entity", error=f"nothing stored: {exc}",
                        row=exc.row, column=exc.column, reason=exc.reason,
                        errors=exc.errors) from None
        except E.BadRequest as exc:
            raise _json("400 Bad Request", error=f"nothing stored: {exc}") from None
        new = store.inbox_put(events, int(self.clock()))
        self.wake()
        return _json("202 Accepted", accepted=len(rows), repeat=new == 0)


def _body(environ: dict, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 past it, 411 without a length)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        raise _json("411 Length Required", error="Content-Length is needed") from None
    if length < 0:
        raise _json("400 Bad Request", error="bad Content-Length")
    if length > limit:
        raise _json("413 Content Too Large", error=f"the body is over {limit:,} bytes")
    stream = environ["wsgi.input"]
    data = b""
    while len(data) < length:
        chunk = stream.read(length - len(data))
        if not chunk:
            break
        data += chunk
    return data
