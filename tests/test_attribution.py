"""Clicks and conversions credited to campaigns (issue 17): hand-computable cases at every
window edge, the precedence of the rules, orders imported twice or updated, codes,
conversions nothing claims, and imports in any order giving the same answer."""
from __future__ import annotations

import datetime as dt
import itertools
import json

import pytest

from bot.command import Context, run
from metrics import engine, rollup
from metrics.importers.run import import_file
from metrics.store import Store

from .conftest import assert_attribution_exact, rows

T0 = int(dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.timezone.utc).timestamp())
DAY, HOUR = 86_400, 3_600
ANN, BOB, CAT = "+14155550101", "+14155550102", "+14155550103"
DAN = "+14155550104"


def at(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def messages_csv(*msgs) -> str:
    """msgs: (campaign, sid, sent_at, recipient[, status[, cost[, variant]]])"""
    out = ["campaign,message_id,sent_at,recipient,status,cost,currency,variant"]
    for m in msgs:
        campaign, sid, ts, rcpt, *rest = m
        status = rest[0] if rest else "delivered"
        cost = rest[1] if len(rest) > 1 else "0.01"
        variant = rest[2] if len(rest) > 2 else ""
        out.append(f"{campaign},{sid},{at(ts)},{rcpt},{status},{cost},USD,{variant}")
    return "\n".join(out) + "\n"


def clicks_csv(*clicks) -> str:
    """clicks: (sid, to, clicked_at)"""
    return "message_sid,to,link,click_time\n" + "".join(
        f"{sid},{to},https://shop.example/p?x={sid},{at(ts)[:-1]}.250Z\n" for sid, to, ts in clicks)


def orders_csv(*orders, extra: str = "") -> str:
    """orders: (order_id, converted_at, revenue, recipient[, message_id[, code[, type]]])"""
    out = ["order_id,converted_at,revenue,currency,type,recipient,message_id,code"]
    for o in orders:
        oid, ts, revenue, rcpt, *rest = o
        msg = rest[0] if rest else ""
        code = rest[1] if len(rest) > 1 else ""
        typ = rest[2] if len(rest) > 2 else "sale"
        out.append(f"{oid},{at(ts)},{revenue},USD,{typ},{rcpt},{msg},{code}")
    return "\n".join(out) + "\n"


def credit_of(store: Store, order: str) -> tuple:
    """(how, message SID or call SID or None, campaign name or None)"""
    return store.conn.execute(
        "SELECT c.how, COALESCE(m.message_key, k.call_key), p.name FROM conversions c "
        "LEFT JOIN messages m ON m.id = c.message_id LEFT JOIN calls k ON k.id = c.call_id "
        "LEFT JOIN campaigns p ON p.id = c.campaign_id WHERE c.order_key = ?",
        (order,)).fetchone()


def load(store, write, **files) -> list:
    out = []
    for name, body in files.items():
        out.append(import_file(store, write(f"{name}.csv", body)))
    return out


def card(store: Store, campaign: str) -> dict:
    return engine.report(store, campaign, with_benchmarks=False, with_attribution=True).as_json()


# -- the windows, edge by edge ------------------------------------------------------------------

@pytest.mark.parametrize("gap,credited", [
    (0, True), (1, True), (5 * DAY - 1, True), (5 * DAY, True), (5 * DAY + 1, False),
    (-1, False)])
def test_click_window_edges(store, write, gap, credited):
    """A click exactly 5 days before the order is inside, one second more is not; a click
    after the order never claims it. The message was sent 30 days before (no delivery
    credit can apply)."""
    click_at = T0 - gap
    load(store, write,
         m=messages_csv(("spring", "SM1", click_at - 30 * DAY, ANN)),
         c=clicks_csv(("SM1", ANN, click_at)),
         o=orders_csv(("#1", T0, "10.00", ANN)))
    assert credit_of(store, "#1") == (("click", "SM1", "spring") if credited else
                                      (None, None, None))


@pytest.mark.parametrize("gap,credited", [
    (0, True), (DAY - 1, True), (DAY, True), (DAY + 1, False), (-1, False)])
def test_delivery_window_edges(store, write, gap, credited):
    load(store, write,
         m=messages_csv(("spring", "SM1", T0 - gap, ANN)),
         o=orders_csv(("#1", T0, "10.00", ANN)))
    assert credit_of(store, "#1") == (("delivery", "SM1", "spring") if credited else
                                      (None, None, None))


@pytest.mark.parametrize("status", ["sent", "undelivered", "failed", "unknown"])
def test_only_a_delivered_message_claims_by_delivery(store, write, status):
    load(store, write,
         m=messages_csv(("spring", "SM1", T0 - HOUR, ANN, status)),
         o=orders_csv(("#1", T0, "10.00", ANN)))
    assert credit_of(store, "#1") == (None, None, None)


def test_the_click_wins_over_a_later_delivery_to_the_same_customer(store, write):
    """A recipient messaged by two campaigns: the click on the older message (spring, 3
    days before) wins over fall's delivery an hour before the order."""
    load(store, write,
         m=messages_csv(("spring", "SM1", T0 - 4 * DAY, ANN), ("fall", "SM2", T0 - HOUR, ANN)),
         c=clicks_csv(("SM1", ANN, T0 - 3 * DAY)),
         o=orders_csv(("#1", T0, "80.00", ANN)))
    assert credit_of(store, "#1") == ("click", "SM1", "spring")
    assert card(store, "spring")["metrics"]["revenue"]["value"] == 80.0
    assert card(store, "fall")["metrics"]["revenue"]["value"] == 0


def test_the_latest_click_and_the_latest_delivery_win(store, write):
    load(store, write,
         m=messages_csv(("spring", "SM1", T0 - 3 * DAY, ANN), ("fall", "SM2", T0 - 2 * DAY, ANN),
                        ("spring", "SM3", T0 - 20 * HOUR, BOB), ("fall", "SM4", T0 - 2 * HOUR, BOB)),
         c=clicks_csv(("SM1", ANN, T0 - 2 * DAY), ("SM2", ANN, T0 - DAY),
                      ("SM1", ANN, T0 - DAY - 60)),
         o=orders_csv(("#1", T0, "10.00", ANN), ("#2", T0, "20.00", BOB)))
    assert credit_of(store, "#1") == ("click", "SM2", "fall")
    assert credit_of(store, "#2") == ("delivery", "SM4", "fall")


def test_two_clicks_in_the_same_second_go_to_the_greater_message_id(store, write):
    """Whichever was stored first (SMb here, so SMa has the greater row id)."""
    load(store, write,
         m1=messages_csv(("spring", "SMb", T0 - 2 * DAY, ANN)),
         m2=messages_csv(("fall", "SMa", T0 - 2 * DAY, ANN)),
         c=clicks_csv(("SMa", ANN, T0 - DAY), ("SMb", ANN, T0 - DAY)),
         o=orders_csv(("#1", T0, "10.00", ANN)))
    assert credit_of(store, "#1") == ("click", "SMb", "spring")


def test_a_named_message_wins_whatever_the_windows(store, write):
    load(store, write,
         m=messages_csv(("spring", "SM1", T0 - 60 * DAY, ANN), ("fall", "SM2", T0 - HOUR, ANN)),
         o=orders_csv(("#1", T0, "10.00", ANN, "SM1")))
    assert credit_of(store, "#1") == ("named", "SM1", "spring")


def test_an_order_naming_a_reply_goes_by_the_other_rules(store, write):
    """Only an outbound message earns a conversion: one that names an inbound message
    (a reply's SID) is credited as if it named nothing."""
    load(store, write, m="campaign,message_id,sent_at,recipient,status,direction,body\n"
         f"spring,SM1,{at(T0 - HOUR)},{ANN},delivered,outbound,hi\n"
         f"spring,IN1,{at(T0 - 60)},{ANN},received,inbound,yes please\n",
         o=orders_csv(("#1", T0, "10.00", ANN, "IN1")))
    assert credit_of(store, "#1") == ("delivery", "SM1", "spring")
    assert card(store, "spring")["metrics"]["revenue"]["value"] == 10.0


def test_a_named_message_not_stored_yet_is_credited_when_it_arrives(store, write):
    load(store, write, o=orders_csv(("#1", T0, "10.00", "", "SM9")))
    assert credit_of(store, "#1") == (None, None, None)
    note, = store.conn.execute("SELECT note FROM conversions").fetchone()
    assert "names is not stored" in note
    load(store, write, m=messages_csv(("spring", "SM9", T0 - 60 * DAY, ANN)))
    assert credit_of(store, "#1") == ("named", "SM9", "spring")


# -- orders: once, updated, cancelled --------------------------------------------------------

def test_an_order_counts_once_and_a_later_copy_updates_it(store, write):
    load(store, write, m=messages_csv(("spring", "SM1", T0 - HOUR, ANN)),
         o=orders_csv(("#1", T0, "10.00", ANN)))
    again = import_file(store, write("o2.csv", orders_csv(("#1", T0, "10.00", ANN))))
    assert again.rows_new == 0
    assert card(store, "spring")["metrics"]["revenue"]["value"] == 10.0
    import_file(store, write("o3.csv", orders_csv(("#1", T0, "12.50", ANN))))
    got = card(store, "spring")["metrics"]
    assert got["revenue"]["value"] == 12.5
    assert got["conversion_rate"]["numerator"] == 1
    assert rows(store, "SELECT COUNT(*) FROM conversions") == [(1,)]


def test_an_update_that_moves_an_order_moves_its_credit(store, write):
    load(store, write,
         m=messages_csv(("spring", "SM1", T0 - HOUR, ANN), ("fall", "SM2", T0 - HOUR, BOB)),
         o=orders_csv(("#1", T0, "10.00", ANN)))
    import_file(store, write("o2.csv", orders_csv(("#1", T0, "10.00", BOB))))
    assert credit_of(store, "#1") == ("delivery", "SM2", "fall")
    assert card(store, "spring")["metrics"]["revenue"]["value"] == 0
    assert card(store, "fall")["metrics"]["revenue"]["value"] == 10.0


def test_cancelled_orders_and_refunds(store, write):
    load(store, write, m=messages_csv(("spring", "SM1", T0 - HOUR, ANN),
                                      ("spring", "SM2", T0 - HOUR, BOB)))
    import_file(store, write("o.csv", "order_id,converted_at,revenue,recipient,cancelled,refunded\n"
                             f"#1,{at(T0)},100.00,{ANN},,15.00\n"
                             f"#2,{at(T0)},40.00,{BOB},{at(T0 + DAY)},\n"))
    got = card(store, "spring")["metrics"]
    assert got["revenue"]["value"] == 85.0
    assert got["conversion_rate"]["numerator"] == 1


# -- codes and what nothing claims -------------------------------------------------------------

def test_a_code_credits_what_no_message_claims(store, write, tmp_path, monkeypatch):
    src = tmp_path / "sources.toml"
    src.write_text('[campaign_by_code]\nSPRING10 = "spring"\nVIP = "vip-list"\n')
    monkeypatch.setenv("KPIBOT_SOURCES", str(src))
    load(store, write,
         m=messages_csv(("spring", "SM1", T0 - 10 * DAY, ANN), ("fall", "SM2", T0 - HOUR, BOB)),
         o=orders_csv(("#1", T0, "30.00", CAT, "", "spring10"),    # nothing else claims it
                      ("#2", T0, "20.00", BOB, "", "SPRING10"),    # fall's delivery claims it
                      ("#3", T0, "5.00", "", "", "NOPE"),
                      ("#4", T0 + 40 * DAY, "7.00", "", "", "VIP")))
    assert credit_of(store, "#1") == ("code", None, "spring")
    assert credit_of(store, "#2") == ("delivery", "SM2", "fall")
    assert credit_of(store, "#3") == (None, None, None)
    assert credit_of(store, "#4") == ("code", None, "vip-list")
    spring = card(store, "spring")
    assert spring["metrics"]["revenue"]["value"] == 30.0
    # counted in the period of its own time, beside the campaign's messages
    assert spring["period"]["end"] > at(T0)[:10]
    by = engine.report(store, "spring", by="variant", with_benchmarks=False).as_json()
    keys = [b["variant"] for b in by["breakdown"]]
    assert keys[-1] == engine.CODE_KEY
    vip = card(store, "vip-list")
    assert vip["metrics"]["revenue"]["value"] == 7.0
    assert_attribution_exact(store)
    # a period that takes part of a slot: the code's conversion counts to the second
    from metrics.periods import Period
    for a, b, revenue in ((T0, T0 + 1, 30.0), (T0 + 1, T0 + DAY, 0), (T0 - 450, T0 + 450, 30.0),
                          (T0 - 3 * DAY, T0, 0), (T0 - 3 * DAY, T0 + 3 * DAY, 30.0)):
        rep = engine.report(store, "spring", Period(a, b, "p"), with_benchmarks=False)
        assert rep.current["sms"].metrics["revenue"].value == revenue, (a - T0, b - T0)
    note = rows(store, "SELECT note FROM conversions WHERE order_key = '#3'")[0][0]
    assert "code is not in [campaign_by_code]" in note


def test_conversions_nothing_claims_are_kept_and_listed_per_type(store, write):
    load(store, write,
         m=messages_csv(("spring", "SM1", T0 - HOUR, ANN)),
         o=orders_csv(("#1", T0, "10.00", ANN), ("#2", T0, "10.00", BOB),
                      ("#3", T0, "", "", "", "", "lead"), ("#4", T0, "", CAT, "", "", "sign-up"),
                      ("#5", T0, "3.00", CAT)))
    r = run("list", Context(store))
    assert "Conversions not credited: 4" in r.text
    assert "1 lead: no customer number and no message named" in r.text
    assert "2 sales, 13.00 USD: no click or delivery" in r.text
    assert {u["type"]: u["conversions"] for u in r.data["uncredited"]} == {
        "lead": 1, "sale": 2, "sign-up": 1}
    text = run("spring", Context(store)).text
    assert "Not credited to any campaign: 1 lead, 2 sales, 1 sign-up" in text
    assert "last click within 5 days, else last delivery within 24 hours" in text


def test_the_import_says_what_it_credited(store, write):
    load(store, write, m=messages_csv(("spring", "SM1", T0 - HOUR, ANN)),
         c=clicks_csv(("SM1", ANN, T0 - 60)))
    r = import_file(store, write("o.csv", orders_csv(("#1", T0, "10.00", ANN),
                                                     ("#2", T0, "1.00", BOB))))
    assert "1 conversion credited (1 by click); not credited: 1 sale" in r.summary()


# -- any order of imports, the same answer ---------------------------------------------------

FILES = {
    "m": messages_csv(("spring", "SM1", T0 - 4 * DAY, ANN, "delivered", "0.02", "A"),
                      ("spring", "SM2", T0 - 4 * DAY, BOB, "delivered", "0.02", "B"),
                      ("fall", "SM3", T0 - 2 * HOUR, ANN, "delivered", "0.05", "A"),
                      ("fall", "SM4", T0 - 30 * HOUR, BOB, "delivered", "0.05", "B"),
                      ("fall", "SM5", T0 - HOUR, CAT, "undelivered", "0.05", "B")),
    "c": clicks_csv(("SM1", ANN, T0 - 3 * DAY), ("SM2", BOB, T0 - 6 * DAY),
                    ("SM9", CAT, T0 - DAY)),
    "o": orders_csv(("#1", T0, "50.00", ANN), ("#2", T0, "20.00", BOB),
                    ("#3", T0, "5.00", CAT), ("#4", T0 - 3 * DAY + 30, "7.00", ANN)),
}


def _state(store: Store) -> dict:
    return {
        "credits": {o: credit_of(store, o) for o in ("#1", "#2", "#3", "#4")},
        "cards": {c: card(store, c)["metrics"] for c in ("spring", "fall")},
        "by_variant": engine.report(store, "spring", by="variant",
                                    with_benchmarks=False).as_json()["breakdown"],
        "rollup": sorted(rows(store, "SELECT p.name, r.dim, r.slot, r.key, r.clicked, "
                                     "r.conversions, r.conversion_revenue_micros FROM "
                                     "message_rollup r JOIN campaigns p ON p.id = r.campaign_id")),
    }


def test_imports_in_any_order_give_the_same_answer(tmp_path, write):
    states = []
    for n, order in enumerate(itertools.permutations("mco")):
        store = Store(tmp_path / f"k{n}.db")
        for name in order:
            import_file(store, write(f"{name}{n}.csv", FILES[name]))
        states.append(_state(store))
        # rollups kept cell by cell equal a count from scratch
        before = rows(store, "SELECT * FROM message_rollup ORDER BY 1, 2, 3, 4")
        with store.transaction() as conn:
            rollup.rebuild(conn)
        assert rows(store, "SELECT * FROM message_rollup ORDER BY 1, 2, 3, 4") == before
        assert_attribution_exact(store)
        store.close()
    assert all(s == states[0] for s in states[1:])
    s = states[0]
    assert s["credits"] == {"#1": ("click", "SM1", "spring"),      # click 3 d before wins
                            "#2": (None, None, None),              # click 6 d, delivery 30 h
                            "#3": (None, None, None),              # SM5 undelivered, SM9 unknown
                            "#4": ("click", "SM1", "spring")}      # 30 s after the click
    spring = s["cards"]["spring"]
    assert spring["revenue"]["value"] == 57.0
    assert spring["ctr"]["numerator"] == 2
    assert spring["conversion_rate"]["numerator"] == 2
    assert spring["roi"]["value"] == pytest.approx((57.0 - 0.04) / 0.04)
    assert spring["cost_per_conversion"]["value"] == pytest.approx(0.02)
    variant_a = next(b for b in s["by_variant"] if b["variant"] == "A")
    assert variant_a["metrics"]["revenue"]["value"] == 57.0


def test_windows_per_team_and_per_campaign(store, write):
    load(store, write, **FILES)
    assert credit_of(store, "#2") == (None, None, None)
    # the team's click window to 7 days: BOB's click 6 days before claims #2
    r = run("attribution click 7d", Context(store))
    assert r.ok and "1 conversion moved" in r.text
    assert credit_of(store, "#2") == ("click", "SM2", "spring")
    # fall's delivery window to 2 days: no change for #2, a click wins
    run("attribution fall delivery 2d", Context(store))
    assert credit_of(store, "#2") == ("click", "SM2", "spring")
    # spring's click window to 1 day: #1 and #2 go to fall's deliveries (2 h and 30 h)
    run("attribution spring click 1d", Context(store))
    assert credit_of(store, "#1") == ("delivery", "SM3", "fall")
    assert credit_of(store, "#2") == ("delivery", "SM4", "fall")
    got = card(store, "spring")
    assert got["attribution"]["click_window_s"] == DAY
    assert got["attribution"]["set_by"] == "campaign"
    assert "last click within 24 hours" in run("spring", Context(store)).text
    shown = run("attribution", Context(store))
    assert "fall: last click within 7 days, else last delivery within 2 days" in shown.text
    run("attribution spring reset", Context(store))
    assert credit_of(store, "#1") == ("click", "SM1", "spring")
    r = run("attribution spring click 1d", Context(store, is_admin=False))
    assert not r.ok and "only admins" in r.text


def test_the_card_names_the_windows_in_text_and_json(store, write):
    load(store, write, **FILES)
    rep = run("spring", Context(store))
    assert ("Conversions credited by last click within 5 days, else last delivery within "
            "24 hours (the default): 2 by click.") in rep.text
    data = json.loads(json.dumps(rep.data))
    assert data["attribution"]["click_window_s"] == 5 * DAY
    assert data["attribution"]["delivery_window_s"] == DAY
    assert data["attribution"]["credited"] == {"click": 2}
    assert data["attribution"]["uncredited"] == {"sale": 2}


def test_a_store_without_conversions_shows_no_attribution(store, write):
    load(store, write, m=FILES["m"])
    assert "attribution" not in card(store, "spring")
    assert "Conversions credited" not in run("spring", Context(store)).text


def test_a_click_counts_its_message_as_clicked_whichever_comes_first(store, write):
    load(store, write, c=clicks_csv(("SM1", ANN, T0)))
    assert "Clicks on messages not stored (yet): 1" in run("list", Context(store)).text
    load(store, write, m=messages_csv(("spring", "SM1", T0 - HOUR, ANN)))
    assert card(store, "spring")["metrics"]["ctr"]["numerator"] == 1
    # a re-import of the message with clicked = 0 does not take the click away
    import_file(store, write("m2.csv", messages_csv(("spring", "SM1", T0 - HOUR, ANN,
                                                     "delivered", "0.02"))))
    assert card(store, "spring")["metrics"]["ctr"]["numerator"] == 1


def test_clicks_and_conversions_refuse_a_campaign_option(store, write):
    from metrics.errors import ImportRejected
    with pytest.raises(ImportRejected, match="--campaign does not apply"):
        import_file(store, write("o.csv", orders_csv(("#1", T0, "1", ANN))), campaign="x")


def test_bad_conversion_rows_are_reported_with_line_and_column(store, write):
    from metrics.errors import ImportRejected
    body = orders_csv(("#1", T0, "10.00", ANN)) + f"#2,{at(T0)},ten,USD,sale,,,\n" \
        + f"#3,{at(T0)},1,USD,refund,,,\n,{at(T0)},1,USD,sale,,,\n"
    with pytest.raises(ImportRejected) as e:
        import_file(store, write("o.csv", body))
    got = [(x.line, x.column) for x in e.value.errors]
    assert got == [(3, "revenue"), (4, "type"), (5, "order_id")]
    assert rows(store, "SELECT COUNT(*) FROM conversions") == [(0,)]


def test_a_store_made_before_attribution_is_upgraded_in_place(tmp_path, write):
    """A database at m005 (no clicks, conversions or conversion counters) opens, gains them,
    and answers as before."""
    path = tmp_path / "old.db"
    store = Store(path)
    import_file(store, write("m.csv", FILES["m"]))
    import_file(store, write("k.csv", "campaign,call_id,started_at,status,disposition\n"
                             f"dial,CA1,{at(T0)},completed,Hot lead\n"))
    before = card(store, "spring")["metrics"]
    with store.transaction() as conn:
        new = ("conversions", "conversion_revenue_micros", "conversions_named",
               "conversions_click")
        for t in ("message_rollup", "call_rollup"):
            for c in new:
                conn.execute(f"ALTER TABLE {t} DROP COLUMN {c}")
        for t in ("message_credits", "call_credits"):
            conn.execute(f"DROP TABLE {t}")
        conn.execute("DROP TRIGGER messages_credits_delete")
        conn.execute("DROP TRIGGER calls_credits_delete")
        conn.execute("ALTER TABLE message_rollup DROP COLUMN opted_in")
        conn.execute("ALTER TABLE call_rollup DROP COLUMN leads")
        conn.execute("ALTER TABLE call_rollup DROP COLUMN leads_sold")
        conn.execute("ALTER TABLE campaigns DROP COLUMN click_window_s")
        conn.execute("ALTER TABLE campaigns DROP COLUMN delivery_window_s")
        conn.execute("DROP TABLE clicks")
        conn.execute("DROP TABLE conversions")
        conn.execute("DROP TABLE uncredited_counts")
        conn.execute("DROP TABLE conversion_currencies")
        conn.execute("DROP TABLE code_rollup")
        conn.execute("DROP INDEX calls_recipient")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name IN ('m006_attribution', "
                     "'m007_credits')")
    store.close()
    store = Store(path)
    assert card(store, "spring")["metrics"] == before
    assert card(store, "dial")["metrics"]["leads"]["value"] == 1     # counted on the way
    load(store, write, c=FILES["c"], o=FILES["o"])
    assert card(store, "spring")["metrics"]["revenue"]["value"] == 57.0


def test_credits_kept_in_the_events_rows_move_beside_them(tmp_path, write):
    """A store that ran m006 as it first landed (the credited totals in the messages' and
    calls' own rows) opens with them moved to the credits tables, the columns gone, and
    every figure as it was."""
    path = tmp_path / "m006.db"
    store = Store(path)
    load(store, write, **FILES)
    import_file(store, write("k.csv", "campaign,call_id,started_at,status,recipient\n"
                             f"dial,CA1,{at(T0 - HOUR)},completed,{DAN}\n"))
    import_file(store, write("o2.csv", "order_id,converted_at,revenue,currency,type,recipient\n"
                             f"#9,{at(T0)},9.00,USD,lead,{DAN}\n"))
    before = {c: card(store, c)["metrics"] for c in ("spring", "fall", "dial")}
    rollups = rows(store, "SELECT * FROM message_rollup ORDER BY 1, 2, 3, 4")
    credits = rows(store, "SELECT * FROM message_credits ORDER BY 1")
    call_credits = rows(store, "SELECT * FROM call_credits ORDER BY 1")
    assert credits and call_credits[0][-1] == 8      # a lead
    with store.transaction() as conn:
        for table, kind in (("messages", rollup.MESSAGE), ("calls", rollup.CALL)):
            for c in kind.credit_columns:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {c} INTEGER NOT NULL DEFAULT 0")
                conn.execute(f"UPDATE {table} SET {c} = (SELECT x.{c} FROM {kind.credits} x "
                             f"WHERE x.{kind.credit_key} = {table}.id) WHERE id IN "
                             f"(SELECT {kind.credit_key} FROM {kind.credits})")
            conn.execute(f"DROP TABLE {kind.credits}")
            conn.execute(f"DROP TRIGGER {table}_credits_delete")
        conn.execute("DELETE FROM rollup_dirty")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm007_credits'")
    store.close()
    store = Store(path)
    assert "conversions" not in {r[1] for r in store.conn.execute("PRAGMA table_info(messages)")}
    assert "conversion_types" not in {r[1] for r in store.conn.execute("PRAGMA table_info(calls)")}
    assert rows(store, "SELECT * FROM message_credits ORDER BY 1") == credits
    assert rows(store, "SELECT * FROM call_credits ORDER BY 1") == call_credits
    assert rows(store, "SELECT * FROM message_rollup ORDER BY 1, 2, 3, 4") == rollups
    assert {c: card(store, c)["metrics"] for c in ("spring", "fall", "dial")} == before
    assert_attribution_exact(store)


# -- Shopify's orders export through the shipped mapping -------------------------------------

SHOPIFY_HEADER = (
    "Name,Email,Financial Status,Paid at,Fulfillment Status,Fulfilled at,Accepts Marketing,"
    "Currency,Subtotal,Shipping,Taxes,Total,Discount Code,Discount Amount,Shipping Method,"
    "Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem compare at price,"
    "Lineitem sku,Lineitem requires shipping,Lineitem taxable,Lineitem fulfillment status,"
    "Billing Name,Billing Street,Billing Address1,Billing Address2,Billing Company,"
    "Billing City,Billing Zip,Billing Province,Billing Country,Billing Phone,Shipping Name,"
    "Shipping Street,Shipping Address1,Shipping Address2,Shipping Company,Shipping City,"
    "Shipping Zip,Shipping Province,Shipping Country,Shipping Phone,Notes,Note Attributes,"
    "Cancelled at,Payment Method,Payment Reference,Refunded Amount,Vendor,Outstanding Balance,"
    "Employee,Location,Device ID,Id,Tags,Risk Level,Source,Lineitem discount,Tax 1 Name,"
    "Tax 1 Value,Tax 2 Name,Tax 2 Value,Tax 3 Name,Tax 3 Value,Tax 4 Name,Tax 4 Value,"
    "Tax 5 Name,Tax 5 Value,Phone,Receipt Number,Duties,Billing Province Name,"
    "Shipping Province Name,Payment ID,Payment Terms Name,Next Payment Due At,"
    "Payment References")
COLUMNS = SHOPIFY_HEADER.split(",")


def shopify_row(**values) -> str:
    import csv
    import io
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([values.get(c, "") for c in COLUMNS])
    return out.getvalue()


def test_shopifys_orders_export_through_the_example_mapping(store, write, tmp_path,
                                                            monkeypatch):
    from pathlib import Path
    mapping = Path(__file__).resolve().parents[1] / "examples" / "shopify-orders.toml"
    src = tmp_path / "sources.toml"
    src.write_text('[campaign_by_code]\nSPRING10 = "spring"\n')
    monkeypatch.setenv("KPIBOT_SOURCES", str(src))
    # the shop is in Sydney (+1100 in March): 23:00 local on the 2nd is 12:00 UTC
    local = "2026-03-02 23:00:00 +1100"
    assert int(dt.datetime.strptime(local, "%Y-%m-%d %H:%M:%S %z").timestamp()) == T0
    load(store, write, m=messages_csv(("spring", "SM1", T0 - 3 * HOUR, ANN),
                                      ("spring", "SM2", T0 - 3 * HOUR, BOB)))
    body = SHOPIFY_HEADER + "\n" + "".join([
        # #1001: two line items; the order's totals and phone on the first row only
        shopify_row(**{"Name": "#1001", "Email": "a@example.com", "Financial Status": "paid",
                       "Currency": "USD", "Subtotal": "70.00", "Total": "75.50",
                       "Created at": local, "Lineitem quantity": "1", "Lineitem name": "Mug",
                       "Lineitem price": "30.00", "Phone": "(415) 555-0101",
                       "Refunded Amount": "0.00", "Id": "5123456789012"}),
        shopify_row(**{"Name": "#1001", "Email": "a@example.com", "Created at": local,
                       "Lineitem quantity": "2", "Lineitem name": "Tee",
                       "Lineitem price": "20.00"}),
        # #1002: cancelled (kept, counts for nothing)
        shopify_row(**{"Name": "#1002", "Financial Status": "voided", "Currency": "USD",
                       "Total": "12.00", "Created at": local, "Phone": "+1 415 555 0102",
                       "Cancelled at": "2026-03-03 09:00:00 +1100",
                       "Refunded Amount": "0.00"}),
        # #1003: no phone, a discount code (case differs from the sources file's)
        shopify_row(**{"Name": "#1003", "Financial Status": "paid", "Currency": "USD",
                       "Total": "40.00", "Discount Code": "spring10", "Created at": local,
                       "Refunded Amount": "5.00"}),
        # #1004: partly refunded, nobody to credit
        shopify_row(**{"Name": "#1004", "Financial Status": "partially_refunded",
                       "Currency": "USD", "Total": "9.00", "Created at": local,
                       "Refunded Amount": "2.00"}),
    ])
    r = import_file(store, write("orders_export_1.csv", body), mapping=mapping)
    assert r.rows_in == 5 and r.rows_new == 4
    assert "2 conversions credited (1 by delivery, 1 by code)" in r.summary()
    assert "1 row of orders already counted" in r.summary()
    assert "1 cancelled order kept, counting for nothing" in r.summary()
    assert "not credited: 1 sale" in r.summary()
    assert credit_of(store, "#1001") == ("delivery", "SM1", "spring")
    assert credit_of(store, "#1002") == ("delivery", "SM2", "spring")
    assert credit_of(store, "#1003") == ("code", None, "spring")
    got = card(store, "spring")["metrics"]
    assert got["revenue"]["value"] == 75.5 + 35.0        # once, less the refund
    assert got["conversion_rate"]["numerator"] == 2      # #1001, and #1003 by its code
    assert got["cost_per_conversion"]["denominator"] == 2
    # the same export again: nothing changes
    again = import_file(store, write("orders_export_2.csv", body), mapping=mapping)
    assert again.rows_new == 0 and card(store, "spring")["metrics"] == got


# -- call campaigns: leads and the sales that follow them ------------------------------------

def test_leads_and_the_lead_to_sale_rate_of_a_call_campaign(store, write):
    calls = "campaign,call_id,started_at,recipient,status,answered_by,duration_s,disposition\n" + "".join(
        f"dial,{cid},{at(ts)},{rcpt},completed,human,60,{disp}\n" for cid, ts, rcpt, disp in [
            ("CA1", T0 - 2 * HOUR, ANN, "Hot lead"),         # a lead, sold (a sale follows)
            ("CA2", T0 - 2 * HOUR, BOB, "Lead"),             # a lead, no sale
            ("CA3", T0 - 2 * HOUR, CAT, "Callback"),         # a lead by its conversion
            ("CA4", T0 - 2 * HOUR, "+14155550104", "Not interested"),
            ("CA5", T0 - 2 * HOUR, "+14155550105", "Misleading number")])
    load(store, write, k=calls, o=orders_csv(
        ("#1", T0, "500.00", ANN),                                   # by delivery: CA1
        ("#2", T0 - HOUR, "", CAT, "", "", "lead"),                  # by delivery: CA3
        ("#3", T0 - HOUR, "", BOB, "CA2", "", "appointment")))       # named: CA2
    assert credit_of(store, "#1") == ("delivery", "CA1", "dial")
    assert credit_of(store, "#2") == ("delivery", "CA3", "dial")
    assert credit_of(store, "#3") == ("named", "CA2", "dial")
    got = card(store, "dial")["metrics"]
    assert got["leads"]["value"] == 3
    assert (got["lead_to_sale_rate"]["numerator"], got["lead_to_sale_rate"]["denominator"]) == (1, 3)
    assert got["conversion_rate"]["numerator"] == 3 and got["answer_rate"]["numerator"] == 5
    assert got["revenue"]["value"] == 500.0
    # the sale cancelled: the lead is no longer sold
    import_file(store, write("o2.csv", "order_id,converted_at,cancelled\n"
                            f"#1,{at(T0)},yes\n"))
    got = card(store, "dial")["metrics"]
    assert got["lead_to_sale_rate"]["numerator"] == 0 and got["revenue"]["value"] == 0
    by = engine.report(store, "dial", by="disposition", with_benchmarks=False).as_json()
    leads = {b["disposition"]: b["metrics"]["leads"]["value"] for b in by["breakdown"]}
    assert leads == {"Hot lead": 1, "Lead": 1, "Callback": 1, "Not interested": 0,
                     "Misleading number": 0}


def test_hostile_conversion_and_click_values_are_bad_rows(store, write):
    from metrics.errors import ImportRejected
    long_id = "#" + "9" * 300
    body = ("order_id,converted_at,revenue,currency,recipient,code\n"
            f"{long_id},{at(T0)},1,USD,,\n"
            f"#2,{at(T0)},1,<!channel>,,\n"
            f"#3,{at(T0)},$5.00,EUR,,\n"
            f"#4,{at(T0)},1e308,USD,,\n"
            f"#5,{at(T0)},1,USD,call me maybe,\n"
            f"#6,{at(T0)},1,usd,,\"SPRING\x0710\"\n")
    with pytest.raises(ImportRejected) as e:
        import_file(store, write("o.csv", body))
    got = [(x.line, x.column) for x in e.value.errors]
    assert got == [(2, "order_id"), (3, "currency"), (4, "revenue"), (5, "revenue"),
                   (6, "recipient")]
    assert "call me maybe" not in str(e.value)
    r = import_file(store, write("o2.csv", body), skip_bad_rows=True)
    assert r.rows_new == 1
    assert rows(store, "SELECT currency, code FROM conversions") == [("USD", "SPRING10")]
    clicks = ("message_sid,to,link,click_time\n"
              f"SM1,{ANN},https://x/{'a' * 5000},{at(T0)}\n"
              f",{ANN},https://x,{at(T0)}\n"
              f"SM1,{ANN},https://x,not a time\n")
    with pytest.raises(ImportRejected) as e:
        import_file(store, write("c.csv", clicks))
    assert [(x.line, x.column) for x in e.value.errors] == [
        (2, "link"), (3, "message_sid"), (4, "click_time")]


def test_list_growth_counts_opt_ins_and_opt_outs_by_text(store, write):
    """START, YES, UNSTOP are new subscribers, STOP an opt-out; the list size at the start
    comes from daily totals."""
    load(store, write, m="campaign,message_id,sent_at,recipient,status,direction,body\n"
         f"spring,SM1,{at(T0)},{ANN},delivered,outbound,hi\n"
         f"spring,IN1,{at(T0 + HOUR)},{ANN},received,inbound,START\n"
         f"spring,IN2,{at(T0 + HOUR)},{BOB},received,inbound,stop\n"
         f"spring,IN3,{at(T0 + 2 * HOUR)},{CAT},received,inbound,Yes\n"
         f"spring,IN4,{at(T0 + 2 * HOUR)},{CAT},received,inbound,thanks\n",
         d="date,campaign,sent,list_size\n2026-03-02,spring,0,200\n")
    got = card(store, "spring")["metrics"]
    g = got["list_growth_rate"]
    assert (g["numerator"], g["denominator"], g["value"]) == (1, 200, 0.005)
    assert got["cost_per_subscriber"]["denominator"] == 2


def test_a_large_load_of_orders_sets_its_indexes_aside_and_back(store, write, monkeypatch,
                                                               tmp_path):
    """Above the bulk size, the conversions' secondary indexes are dropped for the load and
    its credit, and made again: the same answer, the same schema."""
    from metrics.importers import run as run_mod
    src = tmp_path / "sources.toml"
    src.write_text('[campaign_by_code]\nSPRING10 = "spring"\n')
    monkeypatch.setenv("KPIBOT_SOURCES", str(src))
    schema = rows(store, "SELECT name, sql FROM sqlite_schema WHERE tbl_name = 'conversions' "
                         "ORDER BY name")
    monkeypatch.setattr(run_mod, "SUSPEND_INDEX_ROWS", 1)
    load(store, write, **FILES)
    load(store, write, o2=orders_csv(("#9", T0, "4.00", "", "", "spring10"),
                                     ("#10", T0, "5.00", "", "SM2")))
    assert credit_of(store, "#9") == ("code", None, "spring")
    assert credit_of(store, "#10") == ("named", "SM2", "spring")
    assert rows(store, "SELECT name, sql FROM sqlite_schema WHERE tbl_name = 'conversions' "
                       "ORDER BY name") == schema
    assert credit_of(store, "#1") == ("click", "SM1", "spring")
    assert_attribution_exact(store)
    assert rows(store, "PRAGMA integrity_check") == [("ok",)]


def test_a_sales_campaigns_chart_draws_its_revenue(store, write, monkeypatch):
    from metrics import charts
    load(store, write, **FILES)
    store.set_goal(engine.find_campaign(store, "spring").id, "sales")
    figures = []
    monkeypatch.setattr(charts, "_png", lambda fig: figures.append(fig) or b"")
    charts.trend(engine.report(store, "spring"))
    labels = [ax.get_ylabel() for ax in figures[0].axes]
    import matplotlib.pyplot as plt
    plt.close(figures[0])
    assert "Revenue, USD (line)" in labels


def test_a_new_code_in_the_sources_file_is_picked_up_by_the_applier(store, write, tmp_path):
    """kpibot serve's applier reads the sources file again when it changes: orders with a
    code that nothing claimed go to the code's campaign, without an import."""
    from metrics.live.apply import Applier
    from metrics.sources import SourcesFile
    src = tmp_path / "sources.toml"
    src.write_text("")
    applier = Applier(store, SourcesFile(src))
    load(store, write, o=orders_csv(("#1", T0, "30.00", "", "", "SPRING10")))
    assert credit_of(store, "#1") == (None, None, None)
    assert applier.retry_held().campaigns == set()
    src.write_text('[campaign_by_code]\nspring10 = "spring"\n')
    import os
    os.utime(src, (T0, T0))        # a new stamp even within the file system's clock tick
    done = applier.retry_held()
    assert credit_of(store, "#1") == ("code", None, "spring")
    assert done.campaigns == {engine.find_campaign(store, "spring").id}
    assert applier.retry_held().campaigns == set()      # once
