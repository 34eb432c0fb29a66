"""Digests: due at their local time in their own zone (across daylight saving), posted
once by two running bots, late but once after downtime, within Slack's limits."""
from __future__ import annotations

import datetime as dt
import time

import pytest

from bot import jobs, scheduler
from bot.blocks import digest_message
from bot.command import Context, run
from metrics import digests
from metrics.importers import import_file
from metrics.store import Store

from .fake_slack import FakeSlack
from .test_alert_posts import client

U = dt.timezone.utc


def ts(*a) -> int:
    return int(dt.datetime(*a, tzinfo=U).timestamp())


def sub(frequency, at, tz, weekday=None):
    return digests.Subscription(1, frequency, weekday, at, tz, "C1", None)


@pytest.mark.parametrize("now, expected", [
    # weekly Monday 09:00 Berlin, the day after summer time began: 07:00 UTC, not 08:00
    (ts(2026, 3, 30, 7, 0, 30), "2026-03-30T09:00:00+02:00"),
    (ts(2026, 3, 30, 6, 59), "2026-03-23T09:00:00+01:00"),
    # and the Monday after winter time began
    (ts(2026, 10, 26, 8, 0), "2026-10-26T09:00:00+01:00"),
    (ts(2026, 10, 26, 7, 59), "2026-10-19T09:00:00+02:00"),
])
def test_weekly_berlin_across_both_changes(now, expected):
    assert jobs.last_fire(sub("weekly", "09:00", "Europe/Berlin", 0), now).isoformat() == expected


def test_a_time_that_does_not_exist_or_happens_twice():
    berlin = sub("daily", "02:30", "Europe/Berlin")
    assert jobs.last_fire(berlin, ts(2026, 3, 29, 1, 29)).isoformat() == "2026-03-28T02:30:00+01:00"
    assert jobs.last_fire(berlin, ts(2026, 3, 29, 1, 30)).isoformat() == "2026-03-29T03:30:00+02:00"
    ny = sub("daily", "01:30", "America/New_York")
    assert jobs.last_fire(ny, ts(2026, 11, 1, 5, 31)).isoformat() == "2026-11-01T01:30:00-04:00"
    # an hour later 01:30 comes round again: still the same (first) one
    assert jobs.last_fire(ny, ts(2026, 11, 1, 6, 31)).isoformat() == "2026-11-01T01:30:00-04:00"
    assert jobs.last_fire(ny, ts(2026, 11, 2, 12)).isoformat() == "2026-11-02T01:30:00-05:00"
    spring = sub("weekly", "09:00", "America/New_York", 0)     # DST began Sunday 8 March
    assert jobs.last_fire(spring, ts(2026, 3, 9, 13)).isoformat() == "2026-03-09T09:00:00-04:00"


def _campaigns(store, write, n, day):
    rows = ["campaign,message_id,sent_at,recipient,status"]
    for c in range(n):
        for i in range(3):
            rows.append(f"campaign-{c:03d}-with-a-longish-name,m{c}-{i},{day}T10:0{i}:00Z,"
                        f"+1415{3_000_000 + c * 10 + i:07d},delivered")
    import_file(store, write("many.csv", "\n".join(rows)))


def test_late_within_grace_once_and_not_after_it(store, write):
    _campaigns(store, write, 3, "2026-03-03")
    d = digests.add(store, "daily", "09:00", "UTC", channel="C1")
    store.conn.execute("UPDATE digests SET created_at = '2026-03-01T00:00:00+00:00'")
    store.conn.commit()
    with FakeSlack() as fake:
        c = client(fake)
        assert jobs.run_digests(store, c, ts(2026, 3, 4, 11)) == 1          # 2 h late
        assert jobs.run_digests(store, c, ts(2026, 3, 4, 11, 30)) == 0      # once
        (post,) = fake.of("chat.postMessage")
        assert post.params["text"].startswith(
            "Daily digest · 2026-03-03 (late: due 2026-03-04 09:00 UTC, sent 11:00)")
        assert "campaign-000-with-a-longish-name (SMS): 3 sent" in post.params["text"]
        (chart,) = fake.of("files.completeUploadExternal")
        # the chart goes in the digest's thread: the ts Slack gave the post
        assert chart.params["thread_ts"] == post.params["_ts"]
        # the next day's run is missed by more than the grace period: not sent at all
        assert jobs.run_digests(store, c, ts(2026, 3, 5, 9) + jobs.DIGEST_GRACE_S + 60) == 0
        assert len(fake.of("chat.postMessage")) == 1
    assert d.describe() == "every day at 09:00 UTC"


def test_a_digest_added_after_its_time_waits_for_the_next(store, write):
    _campaigns(store, write, 1, "2026-03-03")
    now = int(time.time())
    a_minute_ago = dt.datetime.fromtimestamp(now - 60, U)
    digests.add(store, "daily", f"{a_minute_ago:%H:%M}", "UTC", channel="C1")   # created now
    assert jobs.claim_digests(store, now) == []


def test_a_digest_for_the_next_minute_arrives_once_from_two_running_bots(tmp_path, write):
    db = tmp_path / "d.db"
    s = Store(db)
    now = dt.datetime.now(U)
    _campaigns(s, write, 2, (now - dt.timedelta(days=1)).date().isoformat())
    due = (now + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
    digests.add(s, "daily", f"{due:%H:%M}", "UTC", channel="CDIGEST")    # created now
    s.close()
    with FakeSlack() as fake:
        bots = [scheduler.build(lambda: Store(db), client(fake), alert_interval_s=3600,
                                digest_interval_s=1) for _ in range(2)]
        for b in bots:
            b.start()
        try:
            fake.wait_for("chat.postMessage", timeout=90)
            arrived = time.time()
            time.sleep(3)                    # both keep checking
        finally:
            for b in bots:
                b.shutdown()
        (post,) = fake.of("chat.postMessage")
        assert post.params["channel"] == "CDIGEST" and "Daily digest" in post.params["text"]
        assert "late" not in post.params["text"]
        assert due.timestamp() <= arrived < due.timestamp() + 10


def test_a_digest_slack_refused_is_retried_and_arrives_once(store, write):
    _campaigns(store, write, 2, "2026-03-03")
    digests.add(store, "weekly", "09:00", "UTC", weekday=2, channel="C1")
    store.conn.execute("UPDATE digests SET created_at = '2026-03-01T00:00:00+00:00'")
    store.conn.commit()
    with FakeSlack() as fake:
        fake.script("chat.postMessage", (200, {}, {"ok": False, "error": "internal_error"}))
        c = client(fake)
        due = ts(2026, 3, 4, 9)                                  # Wednesday 09:00
        assert jobs.run_digests(store, c, due + 5) == 0          # refused: kept
        assert jobs.run_digests(store, c, due + 40) == 1         # retried after 30 s
        assert jobs.run_digests(store, c, due + 600) == 0
        ok = [p for p in fake.of("chat.postMessage")]
        assert len(ok) == 2 and ok[1].params["text"].startswith("Weekly digest · 2026-02-25")


def test_two_hundred_campaigns_fit_in_one_message(store, write):
    _campaigns(store, write, 200, "2026-03-03")
    d = digests.build(store, ts(2026, 3, 3), ts(2026, 3, 4), ts(2026, 3, 2), ts(2026, 3, 3))
    assert len(d.lines) == 200
    msg = digest_message(d)
    assert len(msg["blocks"]) <= 50
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in msg["blocks"])
    shown = sum(b["text"]["text"].count("longish-name") for b in msg["blocks"]
                if b["type"] == "section")
    assert shown == 200 and "more campaigns" not in str(msg["blocks"])


def test_digest_subcommands(store, write):
    _campaigns(store, write, 2, "2026-03-03")
    ctx = Context(store, now=ts(2026, 3, 4, 12), channel="CHERE")
    r = run("/kpi digest add weekly mon 09:00 Europe/Berlin", ctx)
    assert r.text == "Digest #1 added: every Monday at 09:00 Europe/Berlin in <#CHERE>."
    assert run("/kpi digest add daily 7:30 in <#C5|x>", ctx).text.startswith(
        "Digest #2 added: every day at 07:30 UTC in <#C5>")
    assert [d["id"] for d in run("/kpi digest list", ctx).data["digests"]] == [1, 2]
    for bad, why in [("/kpi digest add hourly 09:00", "daily or weekly"),
                     ("/kpi digest add weekly funday 09:00", "not a day of the week"),
                     ("/kpi digest add daily 25:00", "not a time of day"),
                     ("/kpi digest add daily 09:00 Mars/Olympus", "Unknown time zone"),
                     ("/kpi digest remove 9", "no digest #9")]:
        reply = run(bad, ctx)
        assert not reply.ok and why in reply.text, (bad, reply.text)
    assert run("/kpi digest remove 2", ctx).ok
    preview = run("/kpi digest preview daily", ctx)
    assert preview.text.startswith("Daily digest · 2026-03-03") and len(preview.data["campaigns"]) == 2
    ctx.is_admin = False
    assert "only admins" in run("/kpi digest add daily 09:00", ctx).text
