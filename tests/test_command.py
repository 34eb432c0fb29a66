"""The /kpi command core: tokenizer, dispatch, helpful errors; charts; the CLI front door."""
from __future__ import annotations

import datetime as dt
import json
import struct
import warnings

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cli import main
from bot.command import Context, run, tokenize
from metrics.importers import import_file

from .test_kpis import CALLS, SMS

NOW = int(dt.datetime(2026, 3, 3, 12, tzinfo=dt.timezone.utc).timestamp())


def test_tokenizer_handles_quotes_and_slack_escapes():
    toks = tokenize('/kpi "spring sale" 7d by country')
    assert [t.text for t in toks] == ["spring sale", "7d", "by", "country"]
    assert toks[0].quoted
    toks = tokenize("alert add \u201cspring sale\u201d opt_out_rate > 2% in <#C123|alerts> <@U42> "
                    "<!subteam^S9|@ops> a&amp;b")
    assert [(t.text, t.kind) for t in toks[-4:]] == [
        ("C123", "channel"), ("U42", "user"), ("S9", "group"), ("a&b", "word")]
    assert tokenize("")== []


@pytest.fixture
def demo(store, write):
    import_file(store, write("sms.csv", SMS.replace("kat,", "Весенняя акция,")))
    import_file(store, write("calls.csv", CALLS))
    return Context(store, now=NOW)


def test_card_for_a_unicode_name_typed_in_another_case(demo):
    r = run('/kpi "ВЕСЕННЯЯ АКЦИЯ"', demo)
    assert r.ok, r.text
    assert r.text.splitlines()[0] == "Весенняя акция · SMS"
    assert "Delivery rate" in r.text and "4 / 8" in r.text
    # unquoted names with spaces work too, followed by a period and a dimension
    r2 = run("/kpi весенняя акция 2026-03-02 2026-03-02 by variant", demo)
    assert r2.ok and r2.data["breakdown"][0]["variant"] == "x"
    assert r2.data["previous"]["metrics"]["sent"]["value"] == 0


def test_json_shape_follows_the_contract(demo):
    data = run("/kpi kc 7d by agent", demo).data
    assert {"campaign", "channel", "goal", "period", "metrics", "previous", "breakdown"} <= set(data)
    assert set(data["period"]) >= {"start", "end"}
    assert data["metrics"]["answer_rate"] == {"value": 0.25, "numerator": 2, "denominator": 8,
                                              "unit": "percent"}
    assert set(data["previous"]["metrics"]) == set(data["metrics"])
    assert [b["agent"] for b in data["breakdown"]] == ["bob", "ann"]
    json.dumps(data)


def test_helpful_errors(demo):
    r = run("/kpi kcc", demo)
    assert not r.ok and "No campaign called 'kcc'. Did you mean: kc?" in r.text
    r = run("/kpi весеняя акция", demo)
    assert "Did you mean: Весенняя акция?" in r.text and r.data["suggestions"] == ["Весенняя акция"]
    r = run("/kpi kc by colour", demo)
    assert not r.ok and "cannot be broken down by 'colour'" in r.text and "disposition" in r.text
    r = run("/kpi kc 7x", demo)
    assert not r.ok and "Usage: /kpi <campaign>" in r.text
    r = run("/kpi goal kc fame", demo)
    assert not r.ok and "not a goal" in r.text
    r = run("/kpi top ctr 7x", demo)
    assert not r.ok and "Usage: /kpi top <metric>" in r.text
    r = run("/kpi compare a b", demo)
    assert not r.ok and "No campaign called 'a'" in r.text
    r = run('/kpi "unclosed', demo)
    assert not r.ok and "unclosed quote" in r.text
    assert run("", demo).text.startswith("/kpi: campaign KPIs")


def test_goal_is_admin_only_and_reorders_the_card(demo):
    demo.is_admin = False
    assert "only admins" in run("/kpi goal kc support", demo).text
    demo.is_admin = True
    assert run("/kpi goal kc support", demo).ok
    lines = run("/kpi kc", demo).text.splitlines()
    assert lines[3].startswith("★ Average call duration")


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
       | st.lists(st.sampled_from(["/kpi", "kc", "kat", '"', "'", "by", "7d", "2026-03-02",
                                   "<#C1|x>", "<@U1>", "goal", "list", "help", "day", "\u201c",
                                   "2026-13", "0d", "sales", "&amp;", "this-week", "0001-01-01",
                                   "9999-12", "nan%", "alert", "add", "*", "opt_out_rate", ">",
                                   "2%", "snooze", "99999999999999999999", "by", "job",
                                   "a" * 3100, "весенняя", "акция", "weekday_hour"]),
                  max_size=8).map(" ".join))
def test_no_text_crashes_the_parser(demo, text_in):
    # (the same database for every example: nothing a non-admin types can change it)
    from bot.blocks import message
    demo.is_admin = False
    reply = run(text_in, demo)
    assert isinstance(reply.text, str) and reply.text
    json.dumps(reply.data)
    assert "blocks" in message(reply, text_in)          # always valid Block Kit


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


@pytest.mark.parametrize("name", ["Весенняя акция", "ქართული კამპანია", "春の新商品", "봄 세일",
                                  "春季促销"])
def test_charts_render_every_script_without_missing_glyphs(store, write, name):
    import_file(store, write("sms.csv", SMS.replace("kat,", f"{name},")))
    reply = run(f'/kpi "{name}" by weekday_hour', Context(store, now=NOW))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        charts = dict(reply.charts(every=True))
    assert set(charts) == {"heatmap", "trend"}
    assert [name for name, _ in reply.charts()] == ["heatmap"]
    w, h = _png_size(charts["trend"])
    assert 600 <= w <= 900 and 300 <= h <= 500


def test_call_charts_include_dispositions(demo):
    charts = dict(run("/kpi kc by disposition", demo).charts(every=True))
    assert set(charts) == {"by-disposition", "trend", "dispositions"}


def test_cli_ask_kpi_and_list(tmp_path, write):
    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    assert runner.invoke(main, ["import", "--db", db, str(write("c.csv", CALLS))]).exit_code == 0
    res = runner.invoke(main, ["ask", "--db", db, "/kpi kc", "--chart", str(tmp_path / "c.png")])
    assert res.exit_code == 0, res.output
    assert "Answer rate" in res.output and (tmp_path / "c.png").stat().st_size > 5000
    res = runner.invoke(main, ["kpi", "kc", "--db", db, "--by", "agent", "--json"])
    assert json.loads(res.output)["breakdown"][0]["agent"] == "bob"
    res = runner.invoke(main, ["list", "--db", db])
    assert "kc" in res.output and "call" in res.output
    res = runner.invoke(main, ["ask", "--db", db, "/kpi nope"])
    assert res.exit_code == 2 and "No campaign called 'nope'" in res.output


def test_alert_subcommands(demo):
    r = run('/kpi alert add "весенняя АКЦИЯ" opt_out_rate > 2% min 5 window 24h recover 1.5% '
            'in <#C9|alerts>', demo)
    assert r.ok, r.text
    assert r.text == ("Alert #1 added: Весенняя акция opt_out_rate > 2%, recovers at 1.5% over "
                      "1d, min 5 in <#C9>.")
    demo.channel = "CHERE"
    assert run("/kpi alert add * delivery_rate < 90%", demo).text.startswith(
        "Alert #2 added: every campaign: delivery_rate < 90% over 1d, min 100 in <#CHERE>")
    listed = run("/kpi alert list", demo)
    assert [a["id"] for a in listed.data["alerts"]] == [1, 2]
    assert "#1 Весенняя акция opt_out_rate > 2%" in listed.text
    snoozed = run("/kpi alert snooze 1 1d", demo)
    assert snoozed.ok and snoozed.data["until"].startswith("2026-03-04T12:00")
    assert run("/kpi alert remove 2", demo).ok
    assert [a["id"] for a in run("/kpi alert list", demo).data["alerts"]] == [1]
    for bad, why in [("/kpi alert add kc answer_rate < 40", "write the threshold as a percentage"),
                     ("/kpi alert add kc dialed > 2%", "dialed is not a rate"),
                     ("/kpi alert add kc answer_rate => 2%", "not a comparison"),
                     ("/kpi alert add kc answer_rate < 40% every 5m", "not an alert option"),
                     ("/kpi alert add kc answer_rate < 40% window 0d", "not a duration"),
                     ("/kpi alert add kc answer_rate < 40% recover 30%", "good side"),
                     ("/kpi alert add kc opt_out_rate > 2%", "does not apply to kc (call only)"),
                     ("/kpi alert add nope opt_out_rate > 2%", "No campaign called 'nope'"),
                     ("/kpi alert remove 99", "there is no alert #99"),
                     ("/kpi alert snooze 1", "snooze for how long")]:
        r = run(bad, demo)
        assert not r.ok and why in r.text, (bad, r.text)
    demo.is_admin = False
    assert "only admins" in run("/kpi alert add kc answer_rate < 40%", demo).text
    assert run("/kpi alert list", demo).ok            # anyone may look


def test_inputs_that_used_to_crash_get_helpful_errors(demo):
    from bot.blocks import message
    for text_in in ["/kpi kc 0001-01-01", "/kpi kc 0001-01", "/kpi kc 9999-12",
                    "/kpi kc 9999-12-31 9999-12-31", "/kpi kc 99999d",
                    "/kpi alert add * opt_out_rate > nan%", "/kpi alert add kc dialed > inf",
                    "/kpi alert snooze 99999999999999999999 1d",
                    "/kpi alert remove 99999999999999999999",
                    '/kpi kc "' + "a  " * 1200 + '"']:
        reply = run(text_in, demo)
        assert not reply.ok, text_in
        msg = message(reply, text_in)
        assert "blocks" in msg, text_in               # validated, not the text-only fallback
        assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in msg["blocks"])


def test_breakdown_rows_show_reach_as_not_counted(demo):
    data = run('/kpi "Весенняя акция" by variant', demo).data
    assert data["metrics"]["reach"]["value"] == 3
    assert all(b["metrics"]["reach"]["value"] is None for b in data["breakdown"])


def test_attribute_names_are_data_not_sql(store, write):
    csv = ("campaign,message_id,sent_at,recipient,status,customer's tier\n"
           "q,m1,2026-03-02T10:00:00Z,+14155550101,delivered,gold\n"
           "q,m2,2026-03-02T10:01:00Z,+14155550102,failed,silver\n")
    import_file(store, write("q.csv", csv))
    reply = run("/kpi q by \"customer's tier\"", Context(store, now=NOW))
    assert reply.ok, reply.text
    assert {b["customer's tier"]: b["metrics"]["sent"]["value"]
            for b in reply.data["breakdown"]} == {"gold": 1, "silver": 1}


def test_a_campaign_with_sms_and_calls_breaks_down_the_right_channel(store, write):
    import_file(store, write("s.csv", SMS.replace("kat,", "both,")))
    import_file(store, write("c.csv", CALLS.replace("kc,", "both,")))
    ctx = Context(store, now=NOW)
    card = run("/kpi both", ctx)
    assert card.ok and card.text.splitlines()[0] == "both · SMS + Calls"
    assert card.data["metrics"]["sms.delivery_rate"]["numerator"] == 4
    assert card.data["metrics"]["call.answer_rate"]["numerator"] == 2
    by = run("/kpi both by disposition", ctx)
    assert [b["disposition"] for b in by.data["breakdown"]][:1] == ["(none)"]
    assert {b["disposition"] for b in by.data["breakdown"]} == {"(none)", "sale", "callback",
                                                                 "voicemail"}
    assert "dialed" in by.text.split("By disposition:")[1]
    by = run("/kpi both by error", ctx)
    assert by.ok and all("sms.sent" in b["metrics"] for b in by.data["breakdown"])
