"""`/kpi top <metric> [since]`: campaigns ranked on one KPI."""
import json

import pytest

from bot.command import Context, run
from metrics import leaderboard
from metrics.importers import import_file

from .test_ab import NOW, events
from .test_kpis import CALLS


def ask(store, command):
    reply = run(command, Context(store, now=NOW))
    return reply, json.loads(json.dumps(reply.data))


@pytest.fixture
def three(store, write):
    """big 50/1000 converted (10 opted out), mid 40/500 (2), tiny 10/50, all in October;
    autumn 30/300 in September; and the call campaigns of the KPI tests."""
    for name, arms, day in (("big", (1000, 50, 10), "2026-10-05"), ("mid", (500, 40, 2), "2026-10-06"),
                            ("tiny", (50, 10, 0), "2026-10-07"), ("autumn", (300, 30, 0), "2026-09-10")):
        import_file(store, write(f"{name}.csv", events({"A": arms}, campaign=name, day=day)))
    import_file(store, write("calls.csv", CALLS))
    return store


def test_ranked_best_first_with_small_campaigns_listed_apart(three):
    reply, data = ask(three, "/kpi top conversion_rate")
    assert reply.ok and data["metric"] == "conversion_rate" and data["period"] is None
    sms = data["channels"]["sms"]
    assert [(e["rank"], e["campaign"], e["numerator"], e["denominator"]) for e in sms["ranked"]] == [
        (1, "autumn", 30, 300), (2, "mid", 40, 500), (3, "big", 50, 1000)]
    assert [(e["campaign"], e["numerator"], e["denominator"]) for e in sms["not_ranked"]] == [
        ("tiny", 10, 50)]
    assert sms["better"] == "higher" and "call" in data["channels"]   # calls ranked apart
    lines = reply.text.splitlines()
    assert lines[0].startswith("Top SMS campaigns by conversion rate (conversions / delivered)")
    assert lines[2].split()[:3] == ["1", "autumn", "10.0%"]
    assert "Not ranked (fewer than 100 delivered): tiny (20.0%, 10 / 50)" in reply.text
    assert any(ln.startswith("Top call campaigns by conversion rate") for ln in lines)
    (name, png), = reply.charts()
    assert name == "top" and png.startswith(b"\x89PNG")


def test_lower_is_better_and_a_period(three):
    _, data = ask(three, "/kpi top opt_out_rate 2026-10-01 2026-10-31")
    sms = data["channels"]["sms"]
    assert [e["campaign"] for e in sms["ranked"]] == ["mid", "big"]      # 0.4% before 1.0%
    assert sms["better"] == "lower" and data["period"]["label"]
    assert "autumn" not in json.dumps(data)                             # September only


def test_counts_and_money_rank_without_a_floor(three):
    _, data = ask(three, "/kpi top sent")
    assert [e["campaign"] for e in data["channels"]["sms"]["ranked"]] == [
        "big", "mid", "autumn", "tiny"]
    assert leaderboard.floor(leaderboard.kpis.REGISTRY["sms"]["roi"]) == 0
    assert leaderboard.floor(leaderboard.kpis.REGISTRY["sms"]["cost_per_conversion"]) == 10


@pytest.mark.parametrize("command, says", [
    ("/kpi top", "which metric?"),
    ("/kpi top ctrr", "no metric called 'ctrr'"),
    ("/kpi top ctr 7x", "'7x' is not a period"),
    ("/kpi top ctr 2020-01", "no campaign has data for ctr (January 2020)"),
])
def test_clear_errors(three, command, says):
    reply, _ = ask(three, command)
    assert not reply.ok and says in reply.text


def test_roi_and_cost(store, write):
    import_file(store, write("a.csv", events({"A": (300, 10, 0)}, campaign="paid")))
    import_file(store, write("f.csv", events({"A": (300, 10, 0)}, campaign="free")
                             .replace(",0.01,USD,", ",0,USD,")))
    reply, data = ask(store, "/kpi top roi")
    assert [e["campaign"] for e in data["channels"]["sms"]["not_ranked"]] == ["free"]
    assert "Not ranked (no cost recorded): free" in reply.text
    _, data = ask(store, "/kpi top cost")
    assert data["channels"]["sms"]["better"] is None
