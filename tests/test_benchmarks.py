"""Benchmarks beside KPIs: the shipped table, a team's own file over it, and the card."""
import json

import pytest

from bot import blocks
from bot.command import Context, run
from metrics import benchmarks
from metrics.errors import KpiBotError
from metrics.importers import import_file

from .test_ab import NOW, events


def test_shipped_table_has_a_source_and_year_for_every_figure():
    table = benchmarks.load()
    assert {("sms", "delivery_rate"), ("sms", "opt_out_rate"), ("call", "abandonment_rate")} <= set(table)
    for b in table.values():
        assert b.source and 1990 < b.year <= 2026 and b.url.startswith("https://")
    tsr = table[("call", "abandonment_rate")]
    assert (tsr.high, tsr.year) == (0.03, 2003) and "310.4" in tsr.source


@pytest.mark.parametrize("metric, good, value, status", [
    ("opt_out_rate", "down", 0.004, "better"),    # under the band: fewer opt-outs
    ("opt_out_rate", "down", 0.010, "good"),
    ("opt_out_rate", "down", 0.016, "worse"),
    ("opt_out_rate", "down", 0.020, "critical"),  # "2.0% and above"
    ("ctr", "up", 0.058, "critical"),             # "less than 5.9%"
    ("ctr", "up", 0.059, "worse"),
    ("ctr", "up", 0.12, "good"),
    ("ctr", "up", 0.20, "better"),
    ("ctr", "up", None, None),
])
def test_where_a_value_stands(metric, good, value, status):
    assert benchmarks.load()[("sms", metric)].status(value, good) == status


def test_the_abandonment_limit_allows_three_percent():
    tsr = benchmarks.load()[("call", "abandonment_rate")]
    assert tsr.status(0.03, "down") == "good" and tsr.status(0.031, "down") == "worse"


def test_a_kpi_with_no_better_side_has_no_critical_side():
    b = benchmarks.Benchmark("avg_call_duration", "call", 60, 300, 10, "ours", 2026)
    assert [b.status(v, None) for v in (5, 30, 120, 400)] == ["below", "below", "good", "above"]


def test_a_team_file_beside_the_database_replaces_and_hides_rows(tmp_path):
    (tmp_path / "benchmarks.toml").write_text('''
[[benchmark]]
metric = "delivery_rate"
channel = "sms"
low = 0.97
source = "our carrier contract"
year = 2026

[[benchmark]]
metric = "ctr"
channel = "sms"
off = true
''')
    table = benchmarks.load(tmp_path / "kpibot.db")
    assert table[("sms", "delivery_rate")].low == 0.97
    assert ("sms", "ctr") not in table and ("sms", "opt_out_rate") in table


@pytest.mark.parametrize("body, says", [
    ('[[benchmark]]\nmetric = "ctrr"\nchannel = "sms"\nlow = 0.1\nsource = "x"\nyear = 2026',
     "no 'sms' metric called 'ctrr'"),
    ('[[benchmark]]\nmetric = "ctr"\nchannel = "sms"\nlow = 0.1', "needs its source and year"),
    ('[[benchmark]]\nmetric = "ctr"\nchannel = "sms"\nlow = "10%"\nsource = "x"\nyear = 2026',
     "low must be a number"),
    ('[[benchmark]]\nmetric = "ctr"\nchannel = "sms"\nlow = 0.2\nhigh = 0.1\nsource = "x"\n'
     'year = 2026', "low is above high"),
    ('[[benchmark]\nmetric = "ctr"', "not valid TOML"),
    ('[[benchmarks]]\nmetric = "ctr"', "unknown table(s) benchmarks"),
    ('[[benchmark]]\nmetric = "ctr"\nchannel = ["sms"]\nlow = 0.1\nsource = "x"\nyear = 2026',
     "no ['sms'] metric called 'ctr'"),
    ('[[benchmark]]\nmetric = "ctr"\nchannel = "sms"\nlow = 10\nsource = "x"\nyear = 2026',
     "write 95% as 0.95"),
    ('[[benchmark]]\nmetric = "ctr"\nchannel = "sms"\nlow = nan\nsource = "x"\nyear = 2026',
     "low must be a number"),
    ('[[benchmark]]\nmetric = "ctr"\nchannel = "sms"\nlow = 0.1\nsource = "x"\nyear = true',
     "needs its source and year"),
])
def test_a_bad_team_file_says_what_is_wrong(tmp_path, monkeypatch, body, says):
    path = tmp_path / "mine.toml"
    path.write_text(body)
    monkeypatch.setenv("KPIBOT_BENCHMARKS", str(path))
    with pytest.raises(KpiBotError, match="mine.toml") as exc:
        benchmarks.load()
    assert says in str(exc.value)


def test_a_team_file_may_start_with_a_byte_order_mark(tmp_path, monkeypatch):
    path = tmp_path / "mine.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'[[benchmark]]\nmetric = "ctr"\nchannel = "sms"\n'
                     b'low = 0.2\nsource = "ours"\nyear = 2026\n')
    monkeypatch.setenv("KPIBOT_BENCHMARKS", str(path))
    assert benchmarks.load()[("sms", "ctr")].low == 0.2


def test_kpibot_benchmarks_naming_a_missing_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KPIBOT_BENCHMARKS", str(tmp_path / "nope.toml"))
    with pytest.raises(KpiBotError, match="nope.toml, which is not a file"):
        benchmarks.load()


def test_only_the_card_reads_the_team_file(store, write, tmp_path):
    """A broken benchmarks file breaks the card, with its reason, not A/B tests or the
    leaderboard, which show no benchmarks."""
    import_file(store, write("e.csv", events({"A": (200, 15, 2), "B": (200, 30, 3)})))
    (tmp_path / "benchmarks.toml").write_text('[[benchmark]]\nmetric = "ctr"\nchannel = "sms"\n'
                                              'low = "9%"\nsource = "x"\nyear = 2026\n')
    card = run("/kpi spring-sale", Context(store, now=NOW))
    assert not card.ok and "benchmarks.toml, benchmark 1: low must be a number" in card.text
    assert run("/kpi ab spring-sale", Context(store, now=NOW)).ok
    assert run("/kpi top ctr", Context(store, now=NOW)).ok


def test_the_card_shows_benchmarks_in_text_json_and_slack(store, write):
    import_file(store, write("e.csv", events({"A": (1000, 15, 25)}, undelivered=30)))
    reply = run("/kpi spring-sale", Context(store, now=NOW))
    data = json.loads(json.dumps(reply.data))
    dr = data["metrics"]["delivery_rate"]
    assert (dr["numerator"], dr["denominator"]) == (1000, 1030)
    assert dr["benchmark"]["low"] == 0.95 and dr["benchmark"]["status"] == "good"
    assert dr["benchmark"]["source"].startswith("Infobip") and dr["benchmark"]["year"] == 2025
    oo = data["metrics"]["opt_out_rate"]["benchmark"]
    assert oo["status"] == "critical" and (oo["low"], oo["high"]) == (0.006, 0.014)  # 2.5%
    assert "benchmark" not in data["metrics"]["sent"]
    assert "benchmark 0.6%–1.4%: critical" in reply.text
    assert "Benchmarks: delivery rate: Infobip" in reply.text
    msg = json.dumps(blocks.message(reply, "spring-sale")["blocks"], ensure_ascii=False)
    assert "benchmark ≥ 95%: good" in msg and "Klaviyo Help Center" in msg
