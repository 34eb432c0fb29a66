"""Scheduled work as plain functions of (store, Slack client, now), so tests call them
with a fixed ``now``; ``bot.scheduler`` is the only place that wires them to APScheduler.

A post goes out only after it was claimed in the outbox (``metrics.outbox``), and is
taken for sending with a lease, so two bots on one database never both send it; a post
that fails is retried with backoff, not dropped. Every post carries its outbox key in
Slack's message metadata: a sender that takes over a post whose earlier sender died
mid-send looks for that key in the channel first, and records the post it finds instead
of posting it again.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from typing import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from metrics import alerts, digests, outbox
from metrics.store import Store
from metrics.times import zone

from .blocks import alert_message, digest_message
from .text import digest_lines

log = logging.getLogger(__name__)
METADATA_EVENT = "kpibot_post"
HISTORY_PAGES = 5            # how far back (pages of 200 messages) a post is looked for


def sender_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _deliver(store: Store, client: WebClient, now: int, sender: str | None, kind: str,
             prepare: Callable[[outbox.Post], object]) -> int:
    """Send every due post of ``kind`` this sender can take; returns how many went out.
    ``prepare(post)`` answers (channel, chat.postMessage arguments, what to do once it is
    out), a string (why it cannot be sent now: kept and retried), or None (nothing to
    send any more)."""
    sender = sender or sender_id()
    sent = 0
    for post in outbox.pending(store, now, kind=kind):
        taken = outbox.take(store, post.key, now, sender)
        if taken is None:
            continue
        ready = prepare(taken.post)
        if ready is None:
            outbox.mark_sent(store, post.key, now)
            continue
        if isinstance(ready, str):
            outbox.mark_failed(store, post.key, now, ready)
            continue
        channel, message, after = ready
        if taken.uncertain:
            found = already_posted(client, channel, post, message.get("thread_ts"))
            if found is not None:
                log.info("%s post %s was sent before its sender stopped (ts %s); not again",
                         kind, post.key, found)
                outbox.mark_sent(store, post.key, now, found)
                continue
        metadata = {"event_type": METADATA_EVENT, "event_payload": {"key": post.key}}
        try:
            resp = client.chat_postMessage(channel=channel, metadata=metadata, **message)
        except Exception as exc:   # Slack's refusals, and connection errors after retries
            error = exc.response.get("error", "error") if isinstance(exc, SlackApiError) \
                else repr(exc)
            delay = outbox.mark_failed(store, post.key, now, error)
            log.warning("%s post %s failed (%s); retrying in %s s", kind, post.key, error,
                        delay)
            continue
        outbox.mark_sent(store, post.key, now, resp.get("ts"))
        sent += 1
        try:
            after(resp.get("ts"))
        except Exception:     # a chart that fails is logged; the post itself is out
            log.exception("after sending %s", post.key)
    return sent


def already_posted(client: WebClient, channel: str, post: outbox.Post,
                   thread_ts: str | None) -> str | None:
    """The ts of the message carrying ``post``'s key in ``channel`` (or in the thread it
    replies to), posted since it was claimed; None when there is none, or when the
    channel cannot be read (then the post is sent: a rare double beats a lost alert)."""
    oldest = str(post.claimed_at - 60)
    cursor = None
    try:
        for _ in range(HISTORY_PAGES):
            if thread_ts:
                page = client.conversations_replies(channel=channel, ts=thread_ts, oldest=oldest,
                                                    include_all_metadata=True, limit=200,
                                                    cursor=cursor)
            else:
                page = client.conversations_history(channel=channel, oldest=oldest,
                                                    include_all_metadata=True, limit=200,
                                                    cursor=cursor)
            for m in page.get("messages", []):
                meta = m.get("metadata") or {}
                if meta.get("event_type") == METADATA_EVENT and \
                        (meta.get("event_payload") or {}).get("key") == post.key:
                    return m.get("ts")
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
    except SlackApiError as exc:
        log.warning("could not look for post %s in %s (%s); sending it", post.key, channel,
                    exc.response.get("error"))
    return None


# -- alerts --------------------------------------------------------------------------------

def send_pending(store: Store, client: WebClient, now: int, sender: str | None = None) -> int:
    """Send every due alert post this sender can take; returns how many went out."""
    def prepare(post: outbox.Post):
        payload = post.payload
        if not post.channel:
            return "the rule has no channel: remove it and add it again with `in #channel`"
        thread = outbox.thread_ts(store, payload.get("thread_key"))
        message = {**alert_message(payload), "thread_ts": thread,
                   "reply_broadcast": bool(thread) and payload["kind"] == "recovered"}

        def after(ts):
            if payload["kind"] == "firing":
                _chart_in_thread(store, client, post.channel, ts, payload, now)
        return post.channel, message, after
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
                               title=f"{payload['campaign']} · {payload['metric']}"[:250])
    except Exception:
        log.exception("chart for alert %s failed", payload.get("rule_id"))


def check_alerts(store: Store, client: WebClient, now: int) -> int:
    """Evaluate every rule, then send what is due (new claims and retries)."""
    alerts.evaluate(store, now, evaluator=sender_id())
    return send_pending(store, client, now)


# -- digests -----------------------------------------------------------------------------------

DIGEST_GRACE_S = 6 * 3600     # a digest missed while the bot was down goes out this late
ON_TIME_S = 180               # later than this after its time, a digest says it is late


def last_fire(sub: digests.Subscription, now: int,
              not_before: int | None = None) -> dt.datetime | None:
    """The subscription's latest scheduled time at or before ``now`` (not before
    ``not_before``), an aware datetime in its zone, from APScheduler's ``CronTrigger``.
    Daylight saving: a time that does not exist that day (02:30 when clocks jump from
    02:00 to 03:00) fires as much later as the clocks jumped (03:30); a time that happens
    twice fires at its first occurrence only (and a digest is keyed by its local day, so
    never twice)."""
    from apscheduler.triggers.cron import CronTrigger
    tz = zone(sub.tz)
    hour, minute = (int(x) for x in sub.at.split(":"))
    trigger = CronTrigger(hour=hour, minute=minute, timezone=tz,
                          day_of_week=None if sub.weekday is None else sub.weekday)
    at = dt.datetime.fromtimestamp(now - 8 * 86400, tz)
    last, previous = None, None
    while True:
        fire = trigger.get_next_fire_time(previous, at)
        if fire is None or fire.timestamp() > now:
            break
        previous = at = fire
        if fire.fold and fire.replace(fold=0).utcoffset() != fire.utcoffset():
            continue          # the second 01:30 of the night the clocks go back
        last = fire.astimezone(dt.timezone.utc).astimezone(tz)
    if last is None or (not_before is not None and last.timestamp() < not_before):
        return None
    return last


def claim_digests(store: Store, now: int, sender: str | None = None) -> list[str]:
    """Claim every digest whose time has come (within the grace period); returns keys."""
    claimed = []
    for sub in digests.subscriptions(store):
        last = last_fire(sub, now, sub.created_ts)
        if last is None or now - last.timestamp() > DIGEST_GRACE_S:
            continue
        key = f"digest:{sub.id}:{last.date().isoformat()}"   # once per local day
        payload = {"digest_id": sub.id, "scheduled": last.isoformat(),
                   "late": now - last.timestamp() > ON_TIME_S}
        if outbox.claim_one(store, key, "digest", sub.channel, payload, now,
                            sender or sender_id()):
            claimed.append(key)
    return claimed


def digest_for(store: Store, sub: digests.Subscription, scheduled: dt.datetime):
    start, end, prev_start, prev_end = digests.period_for(sub.frequency, scheduled)
    return digests.build(store, start, end, prev_start, prev_end, sub.tz)


def send_digests(store: Store, client: WebClient, now: int, sender: str | None = None) -> int:
    from metrics import charts

    def prepare(post: outbox.Post):
        p = post.payload
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


def digests_title(d: digests.Digest) -> str:
    return digest_lines(d)["title"].split(" · ", 1)[-1]


def run_digests(store: Store, client: WebClient, now: int) -> int:
    claim_digests(store, now)
    return send_digests(store, client, now)
