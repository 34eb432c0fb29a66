"""Known answers for every KPI of the contract, from small fixtures counted by hand."""
from __future__ import annotations

import datetime as dt

import pytest

from metrics import engine, kpis, reach, rollup, rollup_counter
from metrics.importers import import_file
from metrics.periods import resolve
from metrics.times import zone

SMS = """
campaign,message_id,sent_at,recipient,status,direction,body,cost,currency,clicked,converted,revenue,opted_out,replied,spam_complaint,segment,variant
kat,m1,2026-03-02T10:00:00Z,+14155550101,delivered,outbound,hi,0.01,USD,1,1,20,0,0,0,A,x
kat,m2,2026-03-02T10:05:00Z,+14155550102,delivered,outbound,hi,0.01,USD,1,0,,0,1,0,A,y
kat,m3,2026-03-02T10:10:00Z,+14155550103,delivered,outbound,hi,0.01,USD,0,0,,1,0,0,B,x
kat,m4,2026-03-02T10:20:00Z,+14155550101,delivered,outbound,hi,0.01,USD,0,0,,0,0,1,B,y
kat,m5,2026-03-02T11:00:00Z,+14155550104,undelivered,outbound,hi,0.01,USD,0,0,,0,0,0,B,x
kat,m6,2026-03-02T11:30:00Z,+14155550105,failed,outbound,hi,0,USD,0,0,,0,0,0,B,x
kat,m7,2026-03-02T12:00:00Z,+14155550106,sent,outbound,hi,0.01,USD,0,0,,0,0,0,B,x
kat,m8,2026-03-02T12:00:00Z,+14155550107,queued,outbound,hi,0,USD,0,0,,0,0,0,B,x
kat,m9,2026-03-02T12:00:00Z,+14155550108,unknown,outbound,hi,0.01,USD,0,0,,0,0,0,B,x
kat,m10,2026-03-02T12:30:00Z,+14155550109,received,inbound,hello,,,0,0,,0,0,0,,
kat,m11,2026-03-02T12:40:00Z,+14155550110,received,inbound,STOP,,,0,0,,0,0,0,,
"""

CALLS = """
campaign,call_id,started_at,recipient,direction,status,answered_by,duration_s,disposition,abandoned,converted,revenue,cost,currency,agent
kc,c1,2026-03-02T09:00:00Z,+14155550201,outbound,completed,human,120,sale,0,1,50,0.10,USD,ann
kc,c2,2026-03-02T09:10:00Z,+14155550202,outbound,completed,,60,callback,0,0,,0.10,USD,ann
kc,c3,2026-03-02T09:20:00Z,+14155550203,outbound,completed,machine_start,30,voicemail,0,0,,0.05,USD,bob
kc,c4,2026-03-02T09:30:00Z,+14155550204,outbound,completed,human,5,,1,0,,0,USD,bob
kc,c5,2026-03-02T09:40:00Z,+14155550205,outbound,busy,,0,,0,0,,0,USD,bob
kc,c6,2026-03-02T09:50:00Z,+14155550206,outbound,no-answer,,0,,0,0,,0,USD,bob
kc,c7,2026-03-02T10:00:00Z,+14155550207,outbound,queued,,0,,0,0,,0,USD,bob
kc,c8,2026-03-02T10:10:00Z,+14155550208,outbound,canceled,,0,,0,0,,0,USD,bob
kc,c9,2026-03-02T10:20:00Z,+14155550209,outbound,failed,,0,,0,0,,0,USD,bob
kc,c10,2026-03-02T10:30:00Z,+14155550210,outbound,completed,unknown,40,,0,0,,0,USD,bob
"""

DAILY = """
date,campaign,channel,sent,delivered,failed,clicks,conversions,opt_outs,replies,complaints,cost,revenue,new_subscribers,list_size
2026-03-03,kd,sms,100,90,10,9,3,5,2,1,10,60,30,1000
2026-03-04,kd,sms,50,40,10,4,1,5,0,0,5,0,10,1025
"""

NOW = int(dt.datetime(2026, 3, 10, tzinfo=dt.timezone.utc).timestamp())


def _metrics(store, name, period=None, by=None):
    return engine.report(store, name, period, by, now=NOW)


@pytest.fixture
def sms(store, write):
    import_file(store, write("sms.csv", SMS))
    return store


@pytest.fixture
def calls(store, write):
    import_file(store, write("calls.csv", CALLS))
    return store


def _check(values: dict, expected: dict) -> None:
    for name, (value, num, den) in expected.items():
        v = values[name]
        assert (v.numerator, v.denominator) == (num, den), name
        if value is None:
            assert v.value is None, name
        else:
            assert v.value == pytest.approx(value), name


def test_every_sms_kpi_by_hand(sms):
    m = _metrics(sms, "kat").current["sms"].metrics
    _check(m, {
        # 8 counted: 4 delivered, undelivered, failed, sent, unknown (queued is not)
        "sent": (8, 8, None),
        "delivery_rate": (4 / 8, 4, 8),
        "ctr": (2 / 4, 2, 4),
        "conversion_rate": (1 / 4, 1, 4),
        # m3's flag, plus a STOP that answers no message we know of
        "opt_out_rate": (2 / 4, 2, 4),
        "response_rate": (1 / 4, 1, 4),
        "spam_complaint_rate": (1 / 4, 1, 4),
        "cost_per_click": (0.07 / 2, 0.07, 2),
        "cost_per_conversion": (0.07, 0.07, 1),
        "roi": ((20 - 0.07) / 0.07, 19.93, 0.07),
        "cost": (0.07, 0.07, None),
        "revenue": (20, 20, None),
        "reach": (3, 3, None),                   # 0101 twice, 0102, 0103
        "list_growth_rate": (None, -2, 0),       # no list data: n/a, never 0
        "cost_per_subscriber": (None, 0.07, 0),
    })
    assert set(m) == {k.name for k in kpis.SMS}


def test_every_call_kpi_by_hand(calls):
    rep = _metrics(calls, "kc")
    m = rep.current["call"].metrics
    _check(m, {
        "dialed": (8, 8, None),                  # all but queued and canceled
        "answered": (2, 2, None),                # human or empty, completed, not abandoned
        "answer_rate": (2 / 8, 2, 8),
        "avg_call_duration": (90, 180, 2),
        "abandonment_rate": (1 / 3, 1, 3),
        "conversion_rate": (1 / 2, 1, 2),
        "cost_per_call": (0.25 / 8, 0.25, 8),
        "cost_per_conversion": (0.25, 0.25, 1),
        "roi": ((50 - 0.25) / 0.25, 49.75, 0.25),
        "cost": (0.25, 0.25, None),
        "revenue": (50, 50, None),
    })
    assert set(m) == {k.name for k in kpis.CALLS}
    disp = {name: (n, share) for name, n, share in rep.current["call"].dispositions}
    assert disp == {"(no disposition)": (7, 0.7), "sale": (1, 0.1), "callback": (1, 0.1),
                    "voicemail": (1, 0.1)}


def test_daily_aggregates_give_list_growth_and_cost_per_subscriber(store, write):
    import_file(store, write("daily.csv", DAILY))
    m = _metrics(store, "kd").current["sms"].metrics
    _check(m, {
        "sent": (150, 150, None),
        "delivery_rate": (130 / 150, 130, 150),
        # (new subscribers - opt-outs) / list size at the period's start
        "list_growth_rate": ((40 - 10) / 1000, 30, 1000),
        "cost_per_subscriber": (15 / 40, 15, 40),
        "roi": ((60 - 15) / 15, 45, 15),
    })
    second_day = resolve("2026-03-04", "2026-03-04", NOW, zone("UTC"))
    m = _metrics(store, "kd", second_day).current["sms"].metrics
    assert (m["list_growth_rate"].numerator, m["list_growth_rate"].denominator) == (5, 1025)


def test_a_rate_with_no_denominator_is_na_not_zero(store, write):
    import_file(store, write("q.csv", SMS.replace(",delivered,", ",queued,")))
    m = _metrics(store, "kat").current["sms"].metrics
    # nothing delivered: a delivery rate of 0 out of 4 is a real 0; per-delivered rates are n/a
    assert (m["delivery_rate"].value, m["delivery_rate"].denominator) == (0, 4)
    assert m["ctr"].value is None and m["opt_out_rate"].value is None
    from bot.text import fmt_value
    assert fmt_value(m["ctr"]) == "n/a"


def test_periods_that_cut_through_a_slot_are_exact(sms):
    # 24h ending 2026-03-03 10:07 UTC: from 03-02 10:07, so m1 (10:00) and m2 (10:05) are out
    now = int(dt.datetime(2026, 3, 3, 10, 7, tzinfo=dt.timezone.utc).timestamp())
    rep = engine.report(sms, "kat", resolve("24h", None, now, zone("UTC")), now=now)
    m = rep.current["sms"].metrics
    assert (m["sent"].value, m["delivery_rate"].numerator, m["ctr"].numerator) == (6, 2, 0)
    assert m["reach"].value == 2                           # 0103 and 0101 (m4)
    # the 24 hours before: m1 and m2 only
    prev = rep.previous["sms"].metrics
    assert (prev["sent"].value, prev["ctr"].numerator, prev["reach"].value) == (2, 2, 2)
    earlier = engine.report(sms, "kat", resolve("24h", None, now - 2 * 86400, zone("UTC")),
                            now=now).previous["sms"].metrics
    assert earlier["sent"].value == 0 and earlier["delivery_rate"].value is None


def test_breakdowns(sms, calls):
    by = dict(_metrics(sms, "kat", by="segment").breakdown)
    assert by["A"]["sms"].metrics["sent"].value == 2
    assert by["B"]["sms"].metrics["delivery_rate"].numerator == 2      # m3, m4
    assert by["(none)"]["sms"].metrics["sent"].value == 0              # the inbound rows
    by = dict(_metrics(sms, "kat", by="variant").breakdown)
    assert (by["x"]["sms"].metrics["sent"].value, by["y"]["sms"].metrics["sent"].value) == (6, 2)
    by = dict(_metrics(sms, "kat", by="status").breakdown)
    assert {k: s["sms"].counters["messages"] for k, s in by.items()} == {
        "delivered": 4, "undelivered": 1, "failed": 1, "sent": 1, "pending": 1, "unknown": 1,
        "received": 2}
    by = dict(_metrics(sms, "kat", by="country").breakdown)
    assert list(by) == ["US"]
    by = dict(_metrics(sms, "kat", by="hour").breakdown)
    assert {k: s["sms"].counters["sent"] for k, s in by.items()} == {
        "10:00": 4, "11:00": 2, "12:00": 2}
    by = dict(_metrics(calls, "kc", by="agent").breakdown)
    assert by["ann"]["call"].metrics["answer_rate"].value == 1.0
    assert by["bob"]["call"].metrics["answered"].value == 0
    by = dict(_metrics(calls, "kc", by="disposition").breakdown)
    assert by["sale"]["call"].metrics["conversion_rate"].value == 1.0


def test_time_breakdowns_follow_the_team_time_zone(sms, monkeypatch):
    # 10:00-12:40 UTC on Monday 2 March is 05:00-07:40 in New York (UTC-5)
    monkeypatch.setenv("KPIBOT_TZ", "America/New_York")
    by = dict(_metrics(sms, "kat", by="hour").breakdown)
    assert {k: s["sms"].counters["sent"] for k, s in by.items()} == {
        "05:00": 4, "06:00": 2, "07:00": 2}
    monkeypatch.setenv("KPIBOT_TZ", "Asia/Kathmandu")      # UTC+5:45
    by = dict(_metrics(sms, "kat", by="hour").breakdown)
    # 15:45 15:50 15:55 | 16:05 16:45 | 17:15 17:45 17:45 | the replies at 18:15, 18:25
    assert {k: s["sms"].counters["sent"] for k, s in by.items()} == {
        "15:00": 3, "16:00": 2, "17:00": 3, "18:00": 0}


def test_days_across_a_daylight_saving_change(store, write):
    # Berlin switched to summer time on 2026-03-29 at 01:00 UTC
    csv = "campaign,message_id,sent_at,recipient,status\n" + "\n".join(
        f"dst,d{i},{t},+4915112345{i:03d},delivered" for i, t in enumerate([
            "2026-03-28T22:59:00Z",   # 23:59 CET, the 28th
            "2026-03-28T23:00:00Z",   # 00:00 CET, the 29th
            "2026-03-29T21:59:00Z",   # 23:59 CEST, the 29th
            "2026-03-29T22:00:00Z",   # 00:00 CEST, the 30th
        ]))
    import_file(store, write("dst.csv", csv))
    store.set_setting("timezone", "Europe/Berlin")
    by = dict(_metrics(store, "dst", by="day").breakdown)
    assert {k: s["sms"].counters["sent"] for k, s in by.items()} == {
        "2026-03-28": 1, "2026-03-29": 2, "2026-03-30": 1}


def test_goal_orders_the_card(sms):
    assert [k.name for k in kpis.headline("sms", "sales")] == ["revenue", "roi"]
    assert [k.name for k in kpis.headline("call", "support")] == ["avg_call_duration"]
    assert [k.name for k in kpis.ordered("sms", "info")][:2] == ["delivery_rate", "opt_out_rate"]


def test_rollups_match_a_recount_after_reimport_attribution_and_delete(store, write):
    import_file(store, write("a.csv", SMS))
    # a later export: m7 got delivered, m5 moved to another hour, and a reply to m9
    later = SMS.replace("m7,2026-03-02T12:00:00Z,+14155550106,sent",
                        "m7,2026-03-02T12:00:00Z,+14155550106,delivered").replace(
        "m5,2026-03-02T11:00:00Z", "m5,2026-03-02T13:00:00Z")
    import_file(store, write("b.csv", later))
    import_file(store, write("c.csv", "campaign,message_id,sent_at,recipient,status,direction,body\n"
                             "kat,r1,2026-03-02T14:00:00Z,+14155550108,received,inbound,STOP\n"))
    with store.transaction() as conn:
        conn.execute("DELETE FROM messages WHERE message_key = 'm6'")
        rollup.Rollup(conn, "message").finish()

    def snapshot():
        return (store.conn.execute("SELECT * FROM message_rollup ORDER BY 1, 2, 3, 4").fetchall(),
                store.conn.execute("SELECT * FROM campaign_recipients ORDER BY 1, 2").fetchall())
    kept = snapshot()
    with store.transaction() as conn:
        rollup.rebuild(conn)
    assert kept == snapshot()
    m = _metrics(store, "kat").current["sms"].metrics
    assert (m["sent"].value, m["delivery_rate"].numerator, m["opt_out_rate"].numerator) == (7, 5, 3)
    assert m["reach"].value == 4     # m7's recipient is reached now
    assert store.conn.execute("SELECT COUNT(*) FROM rollup_dirty").fetchone()[0] == 0


def _varied_sms(n: int, seed: int) -> str:
    """Messages with every kind of value the rollups count: statuses, flags, empty and
    missing dimension values, costs, revenue, replies and STOPs, times in 1990 (the earliest accepted), a
    row that comes again later in the file with another status."""
    import random
    rng = random.Random(seed)
    head = ("campaign,message_id,sent_at,recipient,status,error_code,direction,body,cost,"
            "currency,clicked,converted,revenue,opted_out,replied,spam_complaint,segment,variant")
    lines = [head]
    t0 = int(dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc).timestamp())
    for i in range(n):
        t = (631152000 + rng.randrange(0, 3 * 86400) if i % 97 == 0 else t0 + rng.randrange(5 * 86400))
        when = dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        who = f"+1415555{rng.randrange(300):04d}"
        camp = rng.choice(["kat", "Kät 2", "kit"])
        if rng.random() < 0.06:
            body = rng.choice(["STOP", "stop please", "HELP", "yes!", "START"])
            lines.append(f"{camp},in{i},{when},{who},received,,inbound,{body},,,0,0,,0,0,0,,")
            continue
        status = rng.choice(["delivered"] * 6 + ["undelivered", "failed", "sent", "queued",
                                                 "unknown"])
        err = rng.choice(["", "", "30003", "30005"]) if status != "delivered" else ""
        cost = rng.choice(["", "0", "0.0075", "0.04", "1.25"])
        rev = rng.choice(["", "", "", "20", "0.5", "1999.99"])
        f = [int(rng.random() < p) for p in (0.2, 0.05, 0.03, 0.1, 0.01)]
        seg = rng.choice(["", "new", "active", "lapsed", "VIP ✨"])
        var = rng.choice(["", "A", "B"])
        cur = rng.choice(["USD", "USD", "EUR", ""])
        lines.append(f"{camp},m{i},{when},{who},{status},{err},outbound,hi,{cost},{cur},"
                     f"{f[0]},{f[1]},{rev},{f[2]},{f[3]},{f[4]},{seg},{var}")
    lines.append(lines[5].replace(",delivered,", ",failed,").replace(",undelivered,", ",delivered,"))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("mode", ["counted", "written early", "int32 bound", "gives up"])
def test_rollups_counted_while_importing_equal_a_recount(store, write, monkeypatch, parallel,
                                                         mode):
    """The importer counts new rows for the rollups in numpy, batch by batch (folding them
    together every few thousand entries here, a batch or two at a time; writing them out
    after every batch, as it does when they outgrow their memory, in "written early", or
    before its int32 totals could overflow, in "int32 bound"), and hands over to SQL when
    a batch meets stored rows or cannot be counted: whichever way, the rollup and the
    reach tables equal a recount from the events, after a first import, an overlapping
    second one and a re-import."""
    # folded every few thousand entries: after one batch (4000 rows), or two (1000 + 2000)
    monkeypatch.setattr(rollup_counter.NewRowCounter, "REDUCE_AT", 2500)
    writes = []
    if mode == "int32 bound":   # as if 5,000 were int32's limit
        monkeypatch.setattr(rollup_counter.NewRowCounter, "_EXACT", 5000)
    if mode in ("written early", "int32 bound"):
        if mode == "written early":
            monkeypatch.setattr(rollup_counter.NewRowCounter, "WRITE_AT", 1)
        write_counts = rollup_counter.NewRowCounter.write

        def counting_writes(self, *a, **k):
            writes.append(self.rows_counted)
            write_counts(self, *a, **k)
        monkeypatch.setattr(rollup_counter.NewRowCounter, "write", counting_writes)
    give_up_after = 2 if mode == "gives up" else None
    counted = []
    if give_up_after is not None:    # as if a later batch held a value it cannot count
        add = rollup_counter.NewRowCounter.add

        def flaky(self, columns):
            counted.append(len(columns[0]))
            return len(counted) <= give_up_after and add(self, columns)
        monkeypatch.setattr(rollup_counter.NewRowCounter, "add", flaky)

    def snapshot():
        return [store.conn.execute(f"SELECT * FROM {t} ORDER BY {o}").fetchall()
                for t, o in (("message_rollup", "1, 2, 3, 4"), ("deliveries", "1, 2, 3"),
                             ("campaign_recipients", "1, 2"))]

    def check():
        kept = snapshot()
        with store.transaction() as conn:
            rollup.rebuild(conn)
        assert kept == snapshot()
        assert kept[0] and kept[1]

    first = _varied_sms(9000, seed=1)
    import_file(store, write("a.csv", first), parallel=parallel)
    if give_up_after is not None:
        assert len(counted) == give_up_after + 1   # and no more
    if mode == "written early":   # after each batch counted (1000, 3000, 7000 rows: the
        # last batch holds a repeated row, so SQL counts it), then at the end (nothing)
        assert writes == [1000, 3000, 7000, 7000]
    if mode == "int32 bound":     # before the third batch (3000 + 4000 rows), at the end
        assert writes == [3000, 7000]
    check()
    second = _varied_sms(3000, seed=2).replace(",m", ",n")  # new ids, same recipients
    import_file(store, write("b.csv", second + "\n".join(first.splitlines()[1:2000]) + "\n"),
                parallel=parallel)
    check()
    assert import_file(store, write("a.csv", first), parallel=parallel).rows_new == 0
    check()


def test_the_counter_leaves_values_it_cannot_count_exactly_to_sql(store):
    from metrics.importers.formats import MESSAGE_COLUMNS
    row = dict.fromkeys(MESSAGE_COLUMNS, "")
    row.update(message_key="m1", campaign_id=1, sent_at=1_772_000_000, direction="outbound",
               status="delivered", clicked=0, converted=0, opted_out=0, replied=0,
               spam_complaint=0, cost_micros=10_000, import_id=1)
    c = rollup_counter.NewRowCounter(store.conn, "message", MESSAGE_COLUMNS)
    assert c.add([[v] for v in row.values()])
    for odd in ({"cost_micros": 0.5}, {"cost_micros": "10"}, {"sent_at": 1.5e9},
                {"cost_micros": 1 << 50}, {"segment": 7.0}, {"converted": 1.0},
                {"clicked": True}):
        assert not c.add([[v] for v in {**row, **odd}.values()]), odd
    assert c.rows_counted == 1


def test_unknown_dimension_names_the_ones_that_exist(sms):
    with pytest.raises(engine.BadDimension, match="Did you mean: segment"):
        _metrics(sms, "kat", by="segmnet")


def test_reach_is_exact_for_any_period_and_after_later_imports(store, write):
    """Reach for random periods equals counting by hand, after the first import, after a
    second file that adds earlier and later deliveries to the same recipients, and after a
    re-import that changes statuses."""
    import random
    rng = random.Random(5)
    rows = ["campaign,message_id,sent_at,recipient,status"]
    t0 = int(dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc).timestamp())
    events = []
    for i in range(600):
        t = t0 + rng.randrange(0, 10 * 86400)
        r = f"+1415555{rng.randrange(0, 150):04d}"
        st = rng.choice(["delivered", "delivered", "failed", "sent"])
        events.append((t, r, st))
        rows.append(f"rc,m{i},{dt.datetime.fromtimestamp(t, dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ},"
                    f"{r},{st}")
    half = len(rows) // 2
    import_file(store, write("reach1.csv", "\n".join(rows[:half])))
    import_file(store, write("reach2.csv", "\n".join(rows[:1] + rows[half:])))
    camp = engine.find_campaign(store, "rc")

    def check():
        for _ in range(25):
            a = t0 + rng.randrange(-86400, 11 * 86400)
            b = a + rng.randrange(1, 6 * 86400)
            truth = len({r for t, r, st in events if a <= t < b and st == "delivered"})
            assert engine.Reader(store, camp, zone("UTC")).reach(a, b) == truth
        whole = engine.Reader(store, camp, zone("UTC")).reach(t0 - 86400, t0 + 12 * 86400)
        assert whole == len({r for _, r, st in events if st == "delivered"})
        snapshot = store.conn.execute("SELECT * FROM deliveries ORDER BY 1, 2, 3").fetchall()
        with store.transaction() as conn:
            reach.refresh_reach(conn, everything=True)
        assert snapshot == store.conn.execute("SELECT * FROM deliveries ORDER BY 1, 2, 3").fetchall()
    check()
    # a later export: some deliveries failed after all, some sent ones got delivered
    changed = [rows[0]]
    for i, line in enumerate(rows[1:]):
        t, r, st = events[i]
        if i % 7 == 0:
            st = {"delivered": "failed", "failed": "delivered", "sent": "delivered"}[st]
            events[i] = (t, r, st)
        changed.append(line.rsplit(",", 1)[0] + "," + st)
    import_file(store, write("reach3.csv", "\n".join(changed)))
    check()


def test_hours_across_a_dst_change_with_a_period_not_on_a_slot(store, write, monkeypatch):
    """New York fell back on 2026-11-01 at 06:00 UTC; a 24h window ending 09:02:17 UTC
    puts every event in the local hour a wall clock showed, and `today` asked a minute
    after the change answers (it used to loop)."""
    import threading
    start = int(dt.datetime(2026, 10, 31, 20, tzinfo=dt.timezone.utc).timestamp())
    times = [start + i * 60 for i in range(14 * 60)]
    csv = "campaign,message_id,sent_at,recipient,status\n" + "\n".join(
        f"ny,n{i},{dt.datetime.fromtimestamp(t, dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ},"
        f"+1415555{i % 9000:04d},delivered" for i, t in enumerate(times))
    import_file(store, write("ny.csv", csv))
    monkeypatch.setenv("KPIBOT_TZ", "America/New_York")
    tz = zone("America/New_York")
    now = int(dt.datetime(2026, 11, 1, 9, 2, 17, tzinfo=dt.timezone.utc).timestamp())
    rep = engine.report(store, "ny", resolve("24h", None, now, tz), "hour", now=now)
    got = {k: s["sms"].counters["sent"] for k, s in rep.breakdown}
    want: dict = {}
    for t in times:
        if now - 86400 <= t < now:
            key = f"{dt.datetime.fromtimestamp(t, tz).hour:02d}:00"
            want[key] = want.get(key, 0) + 1
    assert got == want and got["01:00"] == 120          # the hour that happened twice
    done = []
    t = threading.Thread(target=lambda: done.append(engine.report(
        store, "ny", resolve("today", None, now - 3 * 3600 + 37, tz), now=now - 3 * 3600 + 37)))
    t.start()
    t.join(timeout=20)
    assert done, "today, just after the change, did not answer"


def test_periods_and_their_comparisons():
    tz = zone("Europe/Berlin")

    def at(*a):
        return int(dt.datetime(*a, tzinfo=tz).timestamp())
    now = at(2026, 3, 31, 12, 0)                                   # a Tuesday
    p = resolve("this-month", None, now, tz)
    assert (p.start, p.end) == (at(2026, 3, 1), now)
    prev = p.previous()
    assert prev.start == at(2026, 2, 1) and prev.end <= p.start   # never overlaps
    p = resolve("this-week", None, now, tz)
    assert p.start == at(2026, 3, 30) and p.previous().start == at(2026, 3, 23)
    p = resolve("last-week", None, now, tz)                        # across the DST change
    assert (p.start, p.end) == (at(2026, 3, 23), at(2026, 3, 30))
    assert p.previous().start == at(2026, 3, 16) and p.seconds == 7 * 86400 - 3600
    p = resolve("2026-02", None, now, tz)
    assert (p.start, p.end, p.label) == (at(2026, 2, 1), at(2026, 3, 1), "February 2026")
    assert p.previous().start == at(2026, 1, 1)
    p = resolve("2026-03-01", "2026-03-03", now, tz)
    assert (p.start, p.end) == (at(2026, 3, 1), at(2026, 3, 4))
    assert (p.previous().start, p.previous().end) == (at(2026, 2, 26), at(2026, 3, 1))
    p = resolve("24h", None, now, tz)
    assert (p.start, p.end) == (now - 86400, now) and p.previous().end == now - 86400
    for bad in ["2026-13", "0d", "7x"]:
        with pytest.raises(Exception):
            resolve(bad, None, now, tz)
