"""A/B comparisons: the statistics against independent references, the verdict's rules,
and `/kpi ab` / `/kpi compare` end to end on imported files."""
import datetime as dt
import json
import zlib

import pytest
from scipy.stats import chi2_contingency

from bot import blocks
from bot.command import Context, run
from metrics import ab, charts, kpis
from metrics.importers import import_file

HEADER = ("campaign,message_id,sent_at,recipient,status,error_code,direction,body,cost,currency,"
          "segments,clicked,converted,revenue,opted_out,replied,spam_complaint,segment,variant")
NOW = int(dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc).timestamp())


def events(arms: dict, campaign: str = "spring-sale", day: str = "2026-10-05",
           undelivered: int = 0, tag: str = "") -> str:
    """A message-events file: per variant, (delivered, converted, opted_out) rows. Message
    ids differ by campaign and ``tag`` (a second file of the same campaign needs one)."""
    lines, n = [HEADER], 0
    for variant, (delivered, converted, opted) in arms.items():
        for i in range(delivered + undelivered):
            n += 1
            status = "delivered" if i < delivered else "undelivered"
            lines.append(
                f"{campaign},SM{zlib.crc32(campaign.encode()):08x}{tag}{variant or 'x'}{n:06d},"
                f"{day}T10:{n % 60:02d}:00Z,"
                f"+1415555{n % 10000:04d},{status},,outbound,Hi,0.01,USD,1,0,"
                f"{int(i < converted)},,{int(converted <= i < converted + opted)},0,0,new,"
                f"{variant}")
    return "\n".join(lines) + "\n"


def ask(store, command):
    reply = run(command, Context(store, now=NOW))
    return reply, json.loads(json.dumps(reply.data))


# -- the statistics --------------------------------------------------------------------------

def test_wilson_interval_matches_the_published_figures():
    # Newcombe (1998), Statistics in Medicine 17: 81/263 -> 0.2553 to 0.3662 (Wilson)
    lo, hi = ab.wilson(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)


@pytest.mark.parametrize("k1, n1, k2, n2", [
    (50, 1000, 80, 1000), (412, 10000, 460, 10000), (3, 120, 9, 110), (0, 500, 7, 480)])
def test_z_test_equals_the_chi_square_test_of_the_two_by_two_table(k1, n1, k2, n2):
    table = [[k1, n1 - k1], [k2, n2 - k2]]
    p = chi2_contingency(table, correction=False).pvalue
    assert ab.z_test(k1, n1, k2, n2) == pytest.approx(p, rel=1e-9)


def test_sample_size_matches_the_textbook_figure():
    # 10% against 15%, two-sided 5%, power 80%: 686 per group (Fleiss, no correction)
    assert ab.sample_size(0.10, 0.15) == 686
    assert ab.sample_size(0.15, 0.10) == 686
    assert ab.sample_size(0.2, 0.2) is None


def _judge(metric, *arms):
    k = kpis.REGISTRY["sms"][metric]
    return ab.judge(ab.Comparison("variants", "c", k, None, [ab.Arm(*a) for a in arms]))


def test_winner_needs_significance():
    c = _judge("conversion_rate", ("A", 50, 1000), ("B", 80, 1000))
    assert c.p_value < 0.05 and c.winner == "B" and c.verdict.startswith("B wins: 8.00% against")
    c = _judge("conversion_rate", ("A", 50, 1000), ("B", 60, 1000))
    assert c.p_value > 0.05 and c.winner is None and c.leader == "B"
    assert "B leads, not yet significant" in c.verdict
    assert c.needed_per_arm == ab.sample_size(0.06, 0.05) - 1000
    assert f"about {c.needed_per_arm:,} more deliveries per arm needed" in c.verdict


def test_winner_needs_volume_in_every_arm():
    # significant, and enough of each outcome expected, but A has fewer than 100 deliveries
    c = _judge("conversion_rate", ("A", 10, 90), ("B", 300, 1000))
    assert c.p_value < 0.05 and c.winner is None
    assert "A has too little volume" in c.verdict and "10 of 90 deliveries" in c.verdict
    # significant, but at the overall rate (3.3%) each arm expects 4 conversions, not 5
    c = _judge("conversion_rate", ("A", 0, 120), ("B", 8, 120))
    assert c.p_value < 0.05 and c.winner is None and "too little volume" in c.verdict
    # the expected count is what matters: a leader with no opt-outs at all can win
    c = _judge("opt_out_rate", ("A", 0, 5000), ("B", 50, 5000))
    assert c.winner == "A" and c.verdict.startswith("A wins: 0.00% against 1.00% for B")


def test_an_arm_without_data_blocks_a_winner():
    c = _judge("conversion_rate", ("A", 50, 1000), ("B", 90, 1000), ("C", 0, 0))
    assert c.p_value < 0.05 and c.winner is None and c.leader == "B"
    assert "but C has no deliveries: a winner needs every arm compared" in c.verdict
    assert "in this period" not in c.verdict       # no period was asked for
    c = _judge("conversion_rate", ("A", 50, 1000), ("B", 55, 1000), ("C", 0, 0))
    assert c.winner is None and c.verdict.endswith("(C has no deliveries.)")


def test_more_arms_are_corrected_for():
    # B against A alone would be significant at 5% (p = 0.029), but with three arms the
    # leader is tested twice and the larger p-value doubled
    two = _judge("conversion_rate", ("A", 50, 1000), ("B", 73, 1000))
    three = _judge("conversion_rate", ("A", 50, 1000), ("B", 73, 1000), ("C", 52, 1000))
    assert two.winner == "B" and 0.01 < two.p_value < 0.05
    assert three.winner is None and three.p_value == pytest.approx(
        2 * max(ab.z_test(73, 1000, 50, 1000), ab.z_test(73, 1000, 52, 1000)))
    # and the volume still needed is for the stricter level (5% over two tests)
    assert three.needed_per_arm == ab.sample_size(0.073, 0.052, ab.ALPHA / 2) - 1000
    assert ab.sample_size(0.073, 0.052, ab.ALPHA / 2) > ab.sample_size(0.073, 0.052)


def test_lower_is_better_for_opt_outs():
    c = _judge("opt_out_rate", ("A", 40, 2000), ("B", 12, 2000))
    assert c.winner == "B" and "(p < 0.001; lower is better)" in c.verdict


def test_equal_rates_and_empty_arms():
    c = _judge("conversion_rate", ("A", 10, 1000), ("B", 10, 1000))
    assert c.winner is None and c.leader is None and c.verdict.startswith("No difference so far")
    c = _judge("conversion_rate", ("A", 10, 1000), ("B", 0, 0))
    assert c.p_value is None and "B has no deliveries" in c.verdict


# -- the commands ----------------------------------------------------------------------------

def test_ab_on_an_imported_campaign(store, write):
    import_file(store, write("e.csv", events({"A": (1000, 50, 10), "B": (1000, 80, 12),
                                              "": (200, 30, 0)}, undelivered=20)))
    reply, data = ask(store, "/kpi ab spring-sale")
    assert reply.ok
    assert data["metric"] == "conversion_rate" and data["campaign"] == "spring-sale"
    arms = {v["variant"]: v for v in data["variants"]}
    assert set(arms) == {"A", "B"} and data["left_out"] == ["(none)"]
    assert (arms["A"]["numerator"], arms["A"]["denominator"]) == (50, 1000)
    assert (arms["B"]["numerator"], arms["B"]["denominator"]) == (80, 1000)
    assert (arms["B"]["ci_low"], arms["B"]["ci_high"]) == pytest.approx(ab.wilson(80, 1000))
    assert data["p_value"] == pytest.approx(
        chi2_contingency([[50, 950], [80, 920]], correction=False).pvalue)
    assert data["winner"] == "B" and data["verdict"].startswith("B wins")
    lines = reply.text.splitlines()
    assert lines[0] == data["verdict"]
    assert "B ★" in reply.text and "80 / 1,000" in reply.text
    assert "Not compared: rows without a variant." in reply.text
    # a rate named, lower is better
    reply, data = ask(store, "/kpi ab spring-sale opt_out_rate")
    assert data["metric"] == "opt_out_rate" and data["better"] == "lower"
    assert data["winner"] is None and data["leader"] == "A"
    # the chart and the Slack message
    (name, png), = reply.charts()
    assert name == "ab" and png.startswith(b"\x89PNG")
    msg = blocks.message(reply, "/kpi ab spring-sale opt_out_rate")
    assert msg["blocks"] and data["verdict"][:40] in json.dumps(msg["blocks"], ensure_ascii=False)


def test_ab_with_a_period_and_the_goal(store, write):
    import_file(store, write("e1.csv", events({"A": (300, 30, 0), "B": (300, 10, 0)},
                                              day="2026-09-01")))
    import_file(store, write("e2.csv", events({"A": (400, 8, 0), "B": (400, 40, 0)},
                                              day="2026-10-20", tag="oct")))
    _, whole = ask(store, "/kpi ab spring-sale")
    assert {v["variant"]: v["numerator"] for v in whole["variants"]} == {"A": 38, "B": 50}
    _, late = ask(store, "/kpi ab spring-sale 2026-10-01")
    assert {v["variant"]: v["numerator"] for v in late["variants"]} == {"A": 8, "B": 40}
    assert late["period"]["label"] and late["winner"] == "B"
    ask(store, "/kpi goal spring-sale info")
    _, info = ask(store, "/kpi ab spring-sale")
    assert info["metric"] == "delivery_rate"     # the goal's headline rate


def test_compare_two_campaigns(store, write):
    import_file(store, write("a.csv", events({"A": (1500, 90, 0)}, campaign="spring sale")))
    import_file(store, write("b.csv", events({"A": (1500, 45, 0)}, campaign="autumn")))
    reply, data = ask(store, '/kpi compare "spring sale" autumn')
    assert reply.ok and data["campaigns"] == ["spring sale", "autumn"]
    assert [(v["variant"], v["numerator"], v["denominator"]) for v in data["variants"]] == [
        ("spring sale", 90, 1500), ("autumn", 45, 1500)]
    assert data["winner"] == "spring sale"
    # names of several words without quotes, when only one split names two campaigns
    _, same = ask(store, "/kpi compare spring sale autumn ctr")
    assert same["campaigns"] == ["spring sale", "autumn"] and same["metric"] == "ctr"


@pytest.mark.parametrize("command, says", [
    ("/kpi ab spring-sale cost", "'cost' is not one for SMS"),
    ("/kpi ab solo", "has only variant A"),
    ("/kpi compare spring-sale", "compare needs two campaigns"),
    ("/kpi compare spring-sale spring-sale", "name two different campaigns"),
    ("/kpi ab nosuch", "No campaign called 'nosuch'"),
])
def test_clear_errors(store, write, command, says):
    import_file(store, write("e.csv", events({"A": (100, 5, 0), "B": (100, 6, 0)})))
    import_file(store, write("s.csv", events({"A": (100, 5, 0)}, campaign="solo")))
    reply, data = ask(store, command)
    assert not reply.ok and says in reply.text


def test_comparison_chart_renders_every_state(store, write):
    k = kpis.REGISTRY["sms"]["conversion_rate"]
    for arms in ([("A", 50, 1000), ("B", 80, 1000)], [("A", 5, 100), ("B", 6, 100)],
                 [("春の新商品", 10, 1000), ("весна", 10, 1000)]):
        c = ab.judge(ab.Comparison("variants", "c", k, None, [ab.Arm(*a) for a in arms]))
        assert charts.comparison(c).startswith(b"\x89PNG")


def calls(arms: dict, campaign: str) -> str:
    """A call-events file: per variant, (answered, converted) of 2x as many dialed."""
    lines = ["campaign,call_id,started_at,recipient,direction,status,answered_by,duration_s,"
             "disposition,abandoned,converted,revenue,cost,currency,agent,segment,variant"]
    n = 0
    for variant, (answered, converted) in arms.items():
        for i in range(2 * answered):
            n += 1
            status = "completed" if i < answered else "no-answer"
            lines.append(f"{campaign},CA{variant}{n:06d},2026-10-05T10:{n % 60:02d}:00Z,"
                         f"+1415555{n % 10000:04d},outbound,{status},human,60,,0,"
                         f"{int(i < converted)},,0.01,USD,ann,new,{variant}")
    return "\n".join(lines) + "\n"


def test_a_campaign_with_sms_and_calls_is_tested_where_its_variants_are(store, write):
    import_file(store, write("s.csv", events({"": (500, 20, 0)}, campaign="mixed")))
    import_file(store, write("c.csv", calls({"A": (300, 30), "B": (300, 75)}, "mixed")))
    reply, data = ask(store, "/kpi ab mixed")
    assert reply.ok and data["definition"] == "conversions / answered"
    assert {v["variant"]: v["numerator"] for v in data["variants"]} == {"A": 30, "B": 75}
    assert data["winner"] == "B" and "answered calls" in reply.text


def test_metric_and_period_in_any_order_and_names_that_look_like_them(store, write):
    import_file(store, write("a.csv", events({"A": (300, 10, 0), "B": (300, 30, 0)},
                                             campaign="holiday revenue")))
    import_file(store, write("r.csv", events({"A": (300, 10, 0)}, campaign="reach")))
    import_file(store, write("v.csv", events({"A": (300, 20, 0)}, campaign="Весна 2026")))
    for command in ("/kpi ab holiday revenue", "/kpi ab holiday revenue ctr 2026-10-01",
                    "/kpi ab holiday revenue 2026-10-01 ctr"):
        reply, data = ask(store, command)
        assert reply.ok and data["campaign"] == "holiday revenue", (command, reply.text)
    _, data = ask(store, "/kpi ab holiday revenue 2026-10-01 ctr")
    assert data["metric"] == "ctr" and data["period"]["label"] == "since 2026-10-01"
    reply, data = ask(store, '/kpi compare reach "Весна 2026" 2026-10-01 conversion_rate')
    assert reply.ok and data["campaigns"] == ["reach", "Весна 2026"], reply.text
    assert [v["numerator"] for v in data["variants"]] == [10, 20]


def test_a_range_of_two_dates(store, write):
    import_file(store, write("a.csv", events({"A": (300, 10, 0), "B": (300, 30, 0)})))
    _, data = ask(store, "/kpi ab spring-sale 2026-10-01 2026-10-31 ctr")
    assert data["metric"] == "ctr" and "2026-10-31" in data["period"]["label"]
    assert data["period"]["end"] - data["period"]["start"] == 31 * 86400
