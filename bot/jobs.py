"""Scheduled work as plain functions of (store, Slack client, now), so tests call them
with a fixed ``now``; ``bot.scheduler`` is the only place that wires them to APScheduler.

A post goes out only after it was claimed in the database (``metrics.alerts``), and is
taken for sending with a lease, so two bots on one database never both send it; a post
that fails is retried with backoff, not dropped.
"""
from __future__ import annotations

import logging
import os
import socket

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from metrics import alerts
from metrics.store import Store

from .text import notice_text

log = logging.getLogger(__name__)
SNOOZE_ACTION = "alert_snooze"
MUTE_ACTION = "alert_mute"


def sender_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def alert_message(payload: dict) -> dict:
    """Text and Block Kit for one alert post."""
    text = notice_text(payload)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}]
    if payload["kind"] != "recovered":
        value = f"{payload['rule_id']}:{payload['campaign_id']}"
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "action_id": SNOOZE_ACTION, "value": value,
             "text": {"type": "plain_text", "text": "Snooze 1 day"}},
            {"type": "button", "action_id": MUTE_ACTION, "value": str(payload["rule_id"]),
             "style": "danger", "text": {"type": "plain_text", "text": "Mute rule"},
             "confirm": {"title": {"type": "plain_text", "text": "Mute this rule?"},
                         "text": {"type": "plain_text",
                                  "text": "It stops posting for every campaign until unmuted."},
                         "confirm": {"type": "plain_text", "text": "Mute"},
                         "deny": {"type": "plain_text", "text": "Cancel"}}}]})
    return {"text": text, "blocks": blocks}


def send_pending(store: Store, client: WebClient, now: int, sender: str | None = None) -> int:
    """Send every due alert post this sender can take; returns how many went out."""
    sender = sender or sender_id()
    sent = 0
    for post in alerts.pending(store, now, kind="alert"):
        if not alerts.take(store, post["key"], now, sender):
            continue
        payload = post["payload"]
        if not post["channel"]:
            alerts.mark_failed(store, post["key"], now, "the rule has no channel: remove it "
                               "and add it again with `in #channel`")
            continue
        thread = alerts.thread_ts(store, payload.get("thread_key"))
        try:
            resp = client.chat_postMessage(channel=post["channel"], thread_ts=thread,
                                           reply_broadcast=bool(thread) and
                                           payload["kind"] == "recovered",
                                           **alert_message(payload))
        except SlackApiError as exc:
            error = exc.response.get("error", "error")
            delay = alerts.mark_failed(store, post["key"], now, error)
            log.warning("alert post %s failed (%s); retrying in %s s", post["key"], error, delay)
            continue
        except Exception as exc:   # connection errors after the client's own retries
            delay = alerts.mark_failed(store, post["key"], now, repr(exc))
            log.warning("alert post %s failed (%r); retrying in %s s", post["key"], exc, delay)
            continue
        alerts.mark_sent(store, post["key"], now, resp.get("ts"))
        sent += 1
        if payload["kind"] == "firing":
            _chart_in_thread(store, client, post["channel"], resp.get("ts"), payload, now)
    return sent


def _chart_in_thread(store: Store, client: WebClient, channel: str, ts: str | None,
                     payload: dict, now: int) -> None:
    """A small chart of the metric over the last two weeks, under the alert post. A chart
    that fails is logged; the alert itself has gone out."""
    try:
        from metrics import charts, engine
        from metrics.periods import Period
        rep = engine.report(store, payload["campaign"],
                            Period(now - 14 * 86400, now, "last 14 days"), now=now)
        png = charts.trend(rep, payload["metric"], payload["threshold"])
        client.files_upload_v2(channel=channel, thread_ts=ts, file=png,
                               filename=f"alert-{payload['rule_id']}.png",
                               title=f"{payload['campaign']} · {payload['metric']}")
    except Exception:
        log.exception("chart for alert %s failed", payload.get("rule_id"))


def check_alerts(store: Store, client: WebClient, now: int) -> int:
    """Evaluate every rule, then send what is due (new claims and retries)."""
    alerts.evaluate(store, now, evaluator=sender_id())
    return send_pending(store, client, now)
