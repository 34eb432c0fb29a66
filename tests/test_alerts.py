"""Alert rules as state machines, at fixed times: one post when a rule starts firing, one
when it recovers, none in between, none twice."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from metrics import alerts, outbox
from metrics.importers import import_file
from metrics.store import Store

T0 = int(dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc).timestamp())
H = 3600


def hourly(campaign: str, opt_outs: list[int], per_hour: int = 1000, start_id: int = 0) -> str:
    """``per_hour`` delivered messages in each hour, the given number opted out."""
    lines = ["campaign,message_id,sent_at,recipient,status,opted_out"]
    n = start_id
    for hour, k in enumerate(opt_outs):
        for i in range(per_hour):
            t = dt.datetime.fromtimestamp(T0 + hour * H + i * 3, dt.timezone.utc)
            lines.append(f"{campaign},{campaign}-{n},{t:%Y-%m-%dT%H:%M:%SZ},"
                         f"+1415{(n % 9_000_000) + 1_000_000:07d},delivered,{int(i < k)}")
            n += 1
    return "\n".join(lines)


def run_hours(store, hours: int, **kw) -> list[list[alerts.Notice]]:
    """Evaluate at the end of each hour."""
    return [alerts.evaluate(store, T0 + (h + 1) * H, **kw) for h in range(hours)]


@pytest.fixture
def flapping(store, write):
    #           1.0  2.5  1.9  2.1  1.9  1.4  1.9  2.1   (% opted out, hour by hour)
    import_file(store, write("f.csv", hourly("spring", [10, 25, 19, 21, 19, 14, 19, 21])))
    return store


def kinds(per_hour):
    return [[n.kind for n in ns] for ns in per_hour]


def test_fires_once_recovers_once_with_a_recovery_threshold(flapping):
    rule = alerts.add_rule(flapping, "spring", "opt_out_rate", ">", 0.02, recovery=0.015,
                           window_s=H, min_volume=500, channel="CALERTS")
    got = run_hours(flapping, 8)
    assert kinds(got) == [[], ["firing"], [], [], [], ["recovered"], [], ["firing"]]
    fire, recover, again = got[1][0], got[5][0], got[7][0]
    assert fire.key == f"alert:{rule.id}:1:1:fire" and fire.thread_key is None
    assert (fire.value.numerator, fire.value.denominator) == (25, 1000)
    assert recover.key == f"alert:{rule.id}:1:1:recover" and recover.thread_key == fire.key
    assert again.key == f"alert:{rule.id}:1:2:fire"
    (state,) = alerts.states(flapping, rule.id)
    assert state["state"] == "firing" and state["last_numerator"] == 21
    posts = outbox.pending(flapping, T0 + 9 * H)
    assert [p.key for p in posts] == [fire.key, recover.key, again.key]
    assert posts[0].payload["threshold"] == 0.02 and posts[0].channel == "CALERTS"


def test_without_a_recovery_threshold_it_would_flap(flapping):
    alerts.add_rule(flapping, "spring", "opt_out_rate", ">", 0.02, window_s=H, min_volume=500)
    assert kinds(run_hours(flapping, 8)) == [
        [], ["firing"], ["recovered"], ["firing"], ["recovered"], [], [], ["firing"]]


def test_below_minimum_volume_nothing_changes(store, write):
    import_file(store, write("s.csv", hourly("small", [5, 5], per_hour=40)))   # 12.5%
    rule = alerts.add_rule(store, "small", "opt_out_rate", ">", 0.02, window_s=H,
                           min_volume=100)
    assert kinds(run_hours(store, 2)) == [[], []]
    (state,) = alerts.states(store, rule.id)
    assert state["state"] == "ok" and state["last_note"] == "below minimum volume (40 < 100)"


def test_a_second_evaluator_at_the_same_time_claims_nothing(flapping, tmp_path):
    alerts.add_rule(flapping, "spring", "opt_out_rate", ">", 0.02, recovery=0.015,
                    window_s=H, min_volume=500)
    other = Store(flapping.path)
    results = {}
    barrier = threading.Barrier(2)

    def bot(name, store):
        barrier.wait()
        results[name] = alerts.evaluate(store, T0 + 2 * H, evaluator=name)
    threads = [threading.Thread(target=bot, args=("a", flapping)),
               threading.Thread(target=bot, args=("b", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(v) for v in results.values()) == [0, 1]
    assert len(outbox.pending(flapping, T0 + 3 * H)) == 1
    # and again later, from either: still one post for this episode
    assert alerts.evaluate(other, T0 + 2 * H) == [] and alerts.evaluate(flapping, T0 + 2 * H) == []
    other.close()


def test_dry_run_changes_nothing(flapping):
    alerts.add_rule(flapping, "spring", "opt_out_rate", ">", 0.02, window_s=H, min_volume=500)
    assert [n.kind for n in alerts.evaluate(flapping, T0 + 2 * H, dry_run=True)] == ["firing"]
    assert outbox.pending(flapping, T0 + 3 * H) == []
    assert flapping.conn.execute("SELECT COUNT(*) FROM alert_states").fetchone()[0] == 0
    assert [n.kind for n in alerts.evaluate(flapping, T0 + 2 * H)] == ["firing"]


def test_snoozed_pairs_post_nothing_but_keep_their_state(flapping):
    rule = alerts.add_rule(flapping, "spring", "opt_out_rate", ">", 0.02, recovery=0.015,
                           window_s=H, min_volume=500)
    alerts.snooze(flapping, rule.id, until=T0 + 4 * H)
    got = run_hours(flapping, 8)
    assert kinds(got) == [[], [], [], [], [], ["recovered"], [], ["firing"]]
    assert alerts.states(flapping, rule.id)[0]["state"] == "firing"


def test_renotify_while_still_firing(store, write):
    import_file(store, write("r.csv", hourly("loud", [30] * 6)))
    alerts.add_rule(store, "loud", "opt_out_rate", ">", 0.02, window_s=H, min_volume=500,
                    renotify_s=2 * H)
    assert kinds(run_hours(store, 6)) == [["firing"], [], ["still firing"], [], ["still firing"], []]


def test_star_rules_watch_every_campaign_with_the_metric(store, write):
    import_file(store, write("a.csv", hourly("a", [30])))
    import_file(store, write("b.csv", hourly("b", [1], start_id=5000)))
    rule = alerts.add_rule(store, "*", "opt_out_rate", ">", 0.02, window_s=H, min_volume=500)
    (notice,) = alerts.evaluate(store, T0 + H)
    assert notice.campaign == "a"
    assert {s["campaign"]: s["state"] for s in alerts.states(store, rule.id)} == {"a": "firing",
                                                                                "b": "ok"}


def test_a_failed_post_is_retried_with_backoff_not_lost(flapping):
    alerts.add_rule(flapping, "spring", "opt_out_rate", ">", 0.02, window_s=H, min_volume=500)
    (notice,) = alerts.evaluate(flapping, T0 + 2 * H)
    now = T0 + 2 * H
    assert outbox.mark_failed(flapping, notice.key, now, "ratelimited") == 30
    assert outbox.pending(flapping, now + 10) == []
    assert [p.key for p in outbox.pending(flapping, now + 30)] == [notice.key]
    assert outbox.mark_failed(flapping, notice.key, now + 30, "timeout") == 60
    outbox.mark_sent(flapping, notice.key, now + 100, ts="1700000000.000100")
    assert outbox.pending(flapping, now + 10_000) == []
    assert outbox.thread_ts(flapping, notice.key) == "1700000000.000100"


def test_rules_are_checked_when_added(store, write):
    import_file(store, write("x.csv", hourly("x", [1])))
    with pytest.raises(alerts.AlertError, match="no metric"):
        alerts.add_rule(store, "x", "optout", ">", 0.02)
    with pytest.raises(alerts.AlertError, match="good side"):
        alerts.add_rule(store, "x", "opt_out_rate", ">", 0.02, recovery=0.03)
    with pytest.raises(Exception, match="No campaign called 'y'"):
        alerts.add_rule(store, "y", "opt_out_rate", ">", 0.02)
    rule = alerts.add_rule(store, "X", "delivery_rate", "<", 0.95, recovery=0.97)
    assert rule.describe() == "delivery_rate < 95%, recovers at 97% over 1d, min 100"
    assert alerts.remove_rule(store, rule.id).id == rule.id and alerts.rules(store) == []


def test_a_post_key_is_claimed_once_even_if_the_state_is_lost(flapping):
    """The post's key (rule, campaign, episode, transition) is the last line of defence:
    with the state rows gone (a restore from backup, a bug), the same firing is not
    claimed again."""
    alerts.add_rule(flapping, "spring", "opt_out_rate", ">", 0.02, window_s=H, min_volume=500)
    (first,) = alerts.evaluate(flapping, T0 + 2 * H)
    with flapping.transaction() as conn:
        conn.execute("DELETE FROM alert_states")
    assert alerts.evaluate(flapping, T0 + 2 * H) == []
    assert [p.key for p in outbox.pending(flapping, T0 + 3 * H)] == [first.key]


def test_cli_alerts_check_dry_run(tmp_path, write):
    import time as _time

    from click.testing import CliRunner

    from bot.cli import main
    db = tmp_path / "a.db"
    s = Store(db)
    now = int(_time.time())
    hours_ago = now - now % H - 2 * H
    lines = ["campaign,message_id,sent_at,recipient,status,opted_out"]
    for i in range(600):
        t = dt.datetime.fromtimestamp(hours_ago + i * 5, dt.timezone.utc)
        lines.append(f"live,l{i},{t:%Y-%m-%dT%H:%M:%SZ},+1415{2_000_000 + i:07d},delivered,"
                     f"{int(i % 20 == 0)}")                        # 5% opted out
    import_file(s, write("live.csv", "\n".join(lines)))
    alerts.add_rule(s, "live", "opt_out_rate", ">", 0.02, window_s=24 * H, min_volume=100,
                    channel="CALERTS")
    s.close()
    res = CliRunner().invoke(main, ["alerts", "check", "--dry-run", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == ("would post in CALERTS: 🔴 Alert: live opt_out_rate is 5.00% "
                                  "(30 / 600) over the last 1d (rule #1: > 2.00%)")
    refused = CliRunner().invoke(main, ["alerts", "check", "--db", str(db)],
                                 env={"SLACK_BOT_TOKEN": ""})
    assert refused.exit_code != 0 and "SLACK_BOT_TOKEN" in refused.output
    s = Store(db)
    assert s.conn.execute("SELECT COUNT(*) FROM posts").fetchone()[0] == 0
    s.close()
