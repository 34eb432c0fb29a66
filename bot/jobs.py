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

from .blocks import alert_message

log = logging.getLogger(__name__)


def sender_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _deliver(store: Store, client: WebClient, now: int, sender: str | None, kind: str,
             prepare) -> int:
    """Send every due post of ``kind`` this sender can take. ``prepare(post)`` returns
    (channel, chat.postMessage arguments, what to do once it is out), or a string: why it
    cannot be sent (kept and retried), or None: nothing to send any more."""
    sender = sender or sender_id()
    sent = 0
    for post in alerts.pending(store, now, kind=kind):
        if not alerts.take(store, post["key"], now, sender):
            continue
        ready = prepare(post)
        if ready is None:
            alerts.mark_sent(store, post["key"], now)
            continue
        if isinstance(ready, str):
            alerts.mark_failed(store, post["key"], now, ready)
            continue
        channel, message, after = ready
        try:
            resp = client.chat_postMessage(channel=channel, **message)
        except Exception as exc:   # Slack's refusals, and connection errors after retries
            error = exc.response.get("error", "error") if isinstance(exc, SlackApiError) \
                else repr(exc)
            delay = alerts.mark_failed(store, post["key"], now, error)
            log.warning("%s post %s failed (%s); retrying in %s s", kind, post["key"], error,
                        delay)
            continue
        alerts.mark_sent(store, post["key"], now, resp.get("ts"))
        sent += 1
        try:
            after(resp.get("ts"))
        except Exception:     # a chart that fails is logged; the post itself is out
            log.exception("after sending %s", post["key"])
    return sent


def send_pending(store: Store, client: WebClient, now: int, sender: str | None = None) -> int:
    """Send every due alert post this sender can take; returns how many went out."""
    def prepare(post):
        payload = post["payload"]
        if not post["channel"]:
            return "the rule has no channel: remove it and add it again with `in #channel`"
        thread = alerts.thread_ts(store, payload.get("thread_key"))
        message = {**alert_message(payload), "thread_ts": thread,
                   "reply_broadcast": bool(thread) and payload["kind"] == "recovered"}

        def after(ts):
            if payload["kind"] == "firing":
                _chart_in_thread(store, client, post["channel"], ts, payload, now)
        return post["channel"], message, after
    return _deliver(store, client, now, sender, "alert", prepare)


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


# -- digests -----------------------------------------------------------------------------------

DIGEST_GRACE_S = 6 * 3600     # a digest missed while the bot was down goes out this late
ON_TIME_S = 180               # later than this after its time, a digest says it is late


def last_fire(sub, now: int, not_before: int | None = None):
    """The subscription's latest scheduled time at or before ``now``, an aware datetime in
    its zone. Daylight saving: a time that does not exist that day (02:30 when clocks
    jump from 02:00 to 03:00) fires as much later as the clocks jumped (03:30); a time
    that happens twice fires at its first occurrence (and a digest is keyed by its local
    day, so never twice)."""
    import datetime as dt

    from metrics.times import zone
    tz = zone(sub.tz)
    hour, minute = (int(x) for x in sub.at.split(":"))
    today = dt.datetime.fromtimestamp(now, tz).date()
    for back in range(0, 9):
        day = today - dt.timedelta(days=back)
        if sub.frequency == "weekly" and day.weekday() != sub.weekday:
            continue
        wall = dt.datetime.combine(day, dt.time(hour, minute))
        at = wall.replace(tzinfo=tz, fold=0)
        utc = at.astimezone(dt.timezone.utc)
        if utc.astimezone(tz).replace(tzinfo=None) != wall:
            # in the gap: read with the offset before the jump, i.e. as much later as the
            # clocks jumped (02:30 becomes 03:30), as cron and APScheduler do
            at = utc.astimezone(tz)
        if at.timestamp() <= now:
            if not_before is not None and at.timestamp() < not_before:
                return None
            return at
    return None


def claim_digests(store: Store, now: int, sender: str | None = None) -> list[str]:
    """Claim every digest whose time has come (within the grace period); returns keys."""
    import datetime as dt
    import json

    from metrics import digests
    claimed = []
    for sub in digests.subscriptions(store):
        created = store.conn.execute("SELECT created_at FROM digests WHERE id = ?",
                                     (sub.id,)).fetchone()[0]
        not_before = int(dt.datetime.fromisoformat(created).timestamp())
        last = last_fire(sub, now, not_before)
        if last is None or now - last.timestamp() > DIGEST_GRACE_S:
            continue
        key = f"digest:{sub.id}:{last.date().isoformat()}"   # once per local day
        late = now - last.timestamp() > ON_TIME_S
        payload = {"digest_id": sub.id, "scheduled": last.isoformat(), "late": late}
        with store.transaction() as conn:
            if conn.execute("INSERT INTO posts(key, kind, channel, payload, status, claimed_at, "
                            "claimed_by) VALUES (?, 'digest', ?, ?, 'claimed', ?, ?) "
                            "ON CONFLICT(key) DO NOTHING",
                            (key, sub.channel, json.dumps(payload), now,
                             sender or sender_id())).rowcount:
                claimed.append(key)
    return claimed


def digest_for(store: Store, sub, scheduled):
    from metrics import digests
    start, end, prev_start, prev_end = digests.period_for(sub.frequency, scheduled)
    return digests.build(store, start, end, prev_start, prev_end, sub.tz)


def send_digests(store: Store, client: WebClient, now: int, sender: str | None = None) -> int:
    import datetime as dt

    from metrics import charts, digests

    from .blocks import digest_message

    def prepare(post):
        p = post["payload"]
        try:
            sub = digests.get(store, p["digest_id"])
        except digests.DigestError:
            return None                       # unsubscribed meanwhile: nothing to say
        if not sub.channel:
            return "the digest has no channel"
        scheduled = dt.datetime.fromisoformat(p["scheduled"])
        d = digest_for(store, sub, scheduled)
        late = (f"late: due {scheduled:%Y-%m-%d %H:%M %Z}, sent "
                f"{dt.datetime.fromtimestamp(now, scheduled.tzinfo):%H:%M}") if p["late"] else None

        def after(ts):
            if d.lines:
                title = "Volume by campaign · " + digests_title(d)
                png = charts.digest_volume(title, [(ln.campaign, ln.volume, ln.channel)
                                                   for ln in d.lines])
                client.files_upload_v2(channel=sub.channel, thread_ts=ts, file=png,
                                       filename=f"digest-{sub.id}.png", title=title)
        return sub.channel, digest_message(d, late), after
    return _deliver(store, client, now, sender, "digest", prepare)


def digests_title(d) -> str:
    from .text import digest_lines
    return digest_lines(d)["title"].split(" · ", 1)[-1]


def run_digests(store: Store, client: WebClient, now: int) -> int:
    claim_digests(store, now)
    return send_digests(store, client, now)
