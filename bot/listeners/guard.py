"""What every request goes through after Bolt has checked its signature: a request seen
before is answered 200 and not run again, and a listener that fails still answers.

Replays: a signed request stays valid for Slack's five minutes, so anyone who captured one
could send it again (the same `alert add` twice made two rules). Every signed request is
remembered by its signature (and every event by its ``event_id``, which Slack's retries
keep) for ``SEEN_FOR_S``, in the store, so that a repeat reaching another bot on the same
database is caught too.
"""
from __future__ import annotations

import logging
import time

from slack_bolt import App, BoltRequest, BoltResponse

from .. import blocks
from ..deps import Deps, webhook

log = logging.getLogger(__name__)
SEEN_FOR_S = 600     # longer than the 5 minutes in which Bolt accepts a signed request
SORRY = "Sorry, something went wrong answering that; it has been logged."


def request_key(req: BoltRequest) -> str | None:
    """What makes a request the same one again: an event's id, else its signature."""
    body = req.body if isinstance(req.body, dict) else {}
    if body.get("event_id"):
        return f"slack-event:{body['event_id']}"
    sig = (req.headers.get("x-slack-signature") or [None])[0]
    return f"slack-sig:{sig}" if sig else None


def register(app: App, deps: Deps) -> None:
    @app.middleware
    def once(req: BoltRequest, resp: BoltResponse, next):   # noqa: A002 (Bolt's name)
        key = request_key(req)
        if key is not None and not deps.store().first_seen(key, int(time.time()), SEEN_FOR_S):
            log.info("ignored a repeated request (%s)", key[:40])
            return BoltResponse(status=200, body="")
        return next()

    @app.error
    def failed(error: Exception, body: dict) -> None:
        log.error("a listener failed", exc_info=error)
        url = body.get("response_url") if isinstance(body, dict) else None
        if url:
            try:
                webhook(url, deps.settings.timeout).send(
                    text=blocks.fallback(SORRY), response_type="ephemeral",
                    replace_original=False)
            except Exception:
                log.exception("could not tell the user")
