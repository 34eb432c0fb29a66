"""The outbox across a crash: a sender that dies after Slack accepted a post but before
recording it does not make the next sender post it again (Slack's message metadata
carries the post's key, and the channel is read before a re-send); one that dies before
Slack saw the post leaves it to be sent once."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from slack_sdk import WebClient

from bot import jobs
from metrics import alerts, digests, outbox

from .fake_slack import FakeSlack
from .test_alerts import H, T0, hourly
from .test_digests import ts


class Died(BaseException):
    """A sender process that stopped dead (kill -9): nothing after this line runs."""


def client(fake, now: int = T0 + 2 * H) -> WebClient:
    fake.ts = now      # Slack's message ts are times: the fake's clock starts at the test's
    return WebClient(token="xoxb-test", base_url=fake.api_url)


def die_on_first(monkeypatch, module, name):
    real = getattr(module, name)
    calls = []

    def dying(*a, **k):
        calls.append(a)
        if len(calls) == 1:
            raise Died()
        return real(*a, **k)
    monkeypatch.setattr(module, name, dying)


def metadata(call) -> dict:
    m = call.params.get("metadata")
    return json.loads(m) if isinstance(m, str) else m


@pytest.fixture
def spike(store, write):
    from metrics.importers import import_file
    import_file(store, write("f.csv", hourly("spring", [10, 25, 25, 5, 5])))
    alerts.add_rule(store, "spring", "opt_out_rate", ">", 0.02, window_s=H, min_volume=100,
                    channel="CALERTS")
    return store


def test_every_post_carries_its_key_in_metadata(spike):
    with FakeSlack() as fake:
        assert jobs.check_alerts(spike, client(fake), T0 + 2 * H) == 1
        (post,) = fake.of("chat.postMessage")
    (key,) = [p for p in spike.conn.execute("SELECT key FROM posts").fetchall()]
    assert metadata(post) == {"event_type": "kpibot_post", "event_payload": {"key": key[0]}}


def test_a_sender_dying_after_slack_accepted_the_alert_posts_nothing_twice(spike, monkeypatch):
    with FakeSlack() as fake:
        c = client(fake)
        die_on_first(monkeypatch, outbox, "mark_sent")
        with pytest.raises(Died):
            jobs.check_alerts(spike, c, T0 + 2 * H)          # posted, then died
        (first,) = fake.of("chat.postMessage")
        # the lease holds the post for its sender meanwhile
        assert jobs.send_pending(spike, c, T0 + 2 * H + 60, sender="b") == 0
        # once it runs out, another sender takes it, finds it in the channel, records it
        later = T0 + 2 * H + outbox.SEND_LEASE_S
        assert jobs.send_pending(spike, c, later, sender="b") == 0
        assert len(fake.of("chat.postMessage")) == 1
        row = spike.conn.execute("SELECT status, ts FROM posts").fetchone()
        assert row == ("sent", first.params["_ts"])
        assert [h.params["channel"] for h in fake.of("conversations.history")] == ["CALERTS"]
        # the recovery is threaded under the post that went out
        assert jobs.check_alerts(spike, c, T0 + 4 * H) == 1
        recovery = fake.of("chat.postMessage")[-1]
        assert recovery.params["thread_ts"] == first.params["_ts"]


def test_a_sender_dying_before_slack_saw_the_alert_leaves_it_to_be_sent_once(spike,
                                                                           monkeypatch):
    with FakeSlack() as fake:
        c = client(fake)
        die_on_first(monkeypatch, WebClient, "chat_postMessage")
        with pytest.raises(Died):
            jobs.check_alerts(spike, c, T0 + 2 * H)
        assert fake.of("chat.postMessage") == []
        later = T0 + 2 * H + outbox.SEND_LEASE_S
        assert jobs.send_pending(spike, c, later, sender="b") == 1
        assert jobs.send_pending(spike, c, later + 3600, sender="c") == 0
        assert len(fake.of("chat.postMessage")) == 1


def test_a_sender_dying_after_a_thread_reply_was_accepted_looks_in_the_thread(spike,
                                                                            monkeypatch):
    with FakeSlack() as fake:
        c = client(fake)
        assert jobs.check_alerts(spike, c, T0 + 2 * H) == 1
        die_on_first(monkeypatch, outbox, "mark_sent")
        fake.ts = T0 + 4 * H
        with pytest.raises(Died):
            jobs.check_alerts(spike, c, T0 + 4 * H)          # the recovery, in the thread
        later = T0 + 4 * H + outbox.SEND_LEASE_S
        assert jobs.send_pending(spike, c, later, sender="b") == 0
        assert len(fake.of("chat.postMessage")) == 2
        (look,) = fake.of("conversations.replies")
        assert look.params["ts"] == fake.of("chat.postMessage")[0].params["_ts"]


def test_a_channel_that_cannot_be_read_gets_the_post_rather_than_lose_it(spike, monkeypatch):
    with FakeSlack() as fake:
        c = client(fake)
        die_on_first(monkeypatch, WebClient, "chat_postMessage")
        with pytest.raises(Died):
            jobs.check_alerts(spike, c, T0 + 2 * H)
        fake.script("conversations.history", (200, {}, {"ok": False, "error": "missing_scope"}))
        later = T0 + 2 * H + outbox.SEND_LEASE_S
        assert jobs.send_pending(spike, c, later, sender="b") == 1


def test_a_sender_dying_after_slack_accepted_the_digest_posts_nothing_twice(store, write,
                                                                          monkeypatch):
    from .test_kpis import SMS
    from metrics.importers import import_file
    import_file(store, write("sms.csv", SMS))
    sub = digests.add(store, "daily", "09:00", "UTC", channel="CDIGEST")
    store.conn.execute("UPDATE digests SET created_at = '2026-03-01T00:00:00+00:00'")
    store.conn.commit()
    now = ts(2026, 3, 3, 9, 0)
    with FakeSlack() as fake:
        c = client(fake, now)
        die_on_first(monkeypatch, outbox, "mark_sent")
        with pytest.raises(Died):
            jobs.run_digests(store, c, now)
        assert jobs.run_digests(store, c, now + 60) == 0               # leased
        assert jobs.run_digests(store, c, now + outbox.SEND_LEASE_S) == 0
        (post,) = fake.of("chat.postMessage")
        assert post.params["channel"] == "CDIGEST"
        key = f"digest:{sub.id}:2026-03-03"
        assert metadata(post)["event_payload"] == {"key": key}
        assert store.conn.execute("SELECT status, ts FROM posts WHERE key = ?",
                                  (key,)).fetchone() == ("sent", post.params["_ts"])
        # the next day's digest is a new post
        assert jobs.run_digests(store, c, now + 86400) == 1


def test_a_dry_run_transaction_makes_its_writes_and_keeps_none(store):
    with store.transaction(dry_run=True) as conn:
        conn.execute("INSERT INTO settings VALUES ('x', '1')")
        assert conn.execute("SELECT value FROM settings WHERE key = 'x'").fetchone() == ("1",)
    assert store.get_setting("x") is None
    assert not store.conn.in_transaction


def test_last_fire_comes_from_the_cron_trigger_in_the_zone():
    sub = digests.Subscription(1, "weekly", 0, "09:00", "Europe/Berlin", "C1", None)
    monday = jobs.last_fire(sub, ts(2026, 3, 30, 7, 0))
    assert monday.isoformat() == "2026-03-30T09:00:00+02:00"
    assert jobs.last_fire(sub, ts(2026, 3, 30, 6, 59)).isoformat() == "2026-03-23T09:00:00+01:00"
    assert jobs.last_fire(sub, ts(2026, 3, 30, 7, 0), not_before=ts(2026, 3, 30, 7, 1)) is None
    assert isinstance(monday, dt.datetime)
