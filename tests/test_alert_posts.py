"""Alert posts reaching Slack (a local stand-in): once, threaded on recovery, retried
when Slack fails, never twice from two bots or two schedulers on one database."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time

from slack_sdk import WebClient

from bot import jobs, scheduler
from bot.deps import retry_handlers
from metrics import alerts, outbox
from metrics.importers import import_file
from metrics.store import Store

from .fake_slack import FakeSlack
from .test_alerts import H, T0, hourly


def client(fake) -> WebClient:
    return WebClient(token="xoxb-test", base_url=fake.api_url, timeout=5,
                     retry_handlers=retry_handlers())


def _flapping(store, write):
    import_file(store, write("f.csv", hourly("spring", [10, 25, 19, 21, 19, 14, 19, 21])))
    return alerts.add_rule(store, "spring", "opt_out_rate", ">", 0.02, recovery=0.015,
                           window_s=H, min_volume=500, channel="CALERTS")


def test_firing_then_recovery_threaded_under_it(store, write):
    _flapping(store, write)
    with FakeSlack() as fake:
        c = client(fake)
        sent = [jobs.check_alerts(store, c, T0 + (h + 1) * H) for h in range(6)]
        assert sent == [0, 1, 0, 0, 0, 1]
        fire, recover = fake.of("chat.postMessage")
        assert fire.params["channel"] == "CALERTS" and "thread_ts" not in fire.params
        # Slack's escaping: '>' is written &gt; and shown as '>'
        assert fire.params["text"] == ("🔴 Alert: spring opt_out_rate is 2.50% (25 / 1,000) over "
                                       "the last 1h (rule #1: &gt; 2.00%)")
        blocks = fire.params["blocks"]
        blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
        assert [e["text"]["text"] for e in blocks[1]["elements"]] == ["Snooze 1 day", "Mute rule"]
        assert recover.params["thread_ts"] == "1700000001.000100"      # the firing post's ts
        (chart,) = fake.of("files.completeUploadExternal")              # under the firing post
        assert chart.params["thread_ts"] == "1700000001.000100"
        assert chart.params["channel_id"] == "CALERTS"
        assert recover.params["text"].startswith("✅ Recovered: spring opt_out_rate is 1.40%")
        assert outbox.pending(store, T0 + 10 * H) == []


def test_slack_failing_then_recovering_posts_once(store, write):
    _flapping(store, write)
    with FakeSlack() as fake:
        fake.script("chat.postMessage", (200, {}, {"ok": False, "error": "fatal_error"}))
        c = client(fake)
        now = T0 + 2 * H
        assert jobs.check_alerts(store, c, now) == 0            # failed: kept, not lost
        assert jobs.send_pending(store, c, now + 10) == 0       # not due yet (backoff 30 s)
        assert jobs.send_pending(store, c, now + 30) == 1
        assert jobs.send_pending(store, c, now + 3600) == 0
        ok = [cl for cl in fake.of("chat.postMessage")]
        assert len(ok) == 2                                     # one failure, one success
        row = store.conn.execute("SELECT status, attempts, error FROM posts").fetchone()
        assert row == ("sent", 2, None)


def test_two_bots_sending_the_same_post_send_it_once(store, write):
    _flapping(store, write)
    alerts.evaluate(store, T0 + 2 * H)
    other = Store(store.path)
    with FakeSlack() as fake:
        barrier = threading.Barrier(2)
        counts = {}

        def bot(name, s):
            barrier.wait()
            counts[name] = jobs.send_pending(s, client(fake), T0 + 2 * H, sender=name)
        threads = [threading.Thread(target=bot, args=(n, s)) for n, s in (("a", store),
                                                                          ("b", other))]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert sorted(counts.values()) == [0, 1]
        assert len(fake.of("chat.postMessage")) == 1
    other.close()


def test_two_running_schedulers_post_an_opt_out_spike_once(tmp_path, write):
    """Two bots' schedulers on one database, checking every second with real time."""
    db = tmp_path / "k.db"
    s = Store(db)
    now = int(time.time())
    lines = ["campaign,message_id,sent_at,recipient,status,opted_out"]
    for i in range(600):
        t = dt.datetime.fromtimestamp(now - 3 * H + i * 5, dt.timezone.utc)
        lines.append(f"live,l{i},{t:%Y-%m-%dT%H:%M:%SZ},+1415{2_000_000 + i:07d},delivered,"
                     f"{int(i % 20 == 0)}")
    import_file(s, write("live.csv", "\n".join(lines)))
    alerts.add_rule(s, "live", "opt_out_rate", ">", 0.02, window_s=24 * H, min_volume=100,
                    channel="CALERTS")
    s.close()
    with FakeSlack() as fake:
        scheds = [scheduler.build(lambda: Store(db), client(fake), alert_interval_s=1)
                  for _ in range(2)]
        for sc in scheds:
            sc.start()
        try:
            fake.wait_for("chat.postMessage", timeout=15)
            time.sleep(3)                       # several more checks by both
        finally:
            for sc in scheds:
                sc.shutdown()
        (post,) = fake.of("chat.postMessage")
        assert post.params["text"].startswith("🔴 Alert: live opt_out_rate is 5.00% (30 / 600)")
