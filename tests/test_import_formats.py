"""Every import format on realistic files."""
import datetime as dt
import json

import pytest

from metrics.importers import import_file
from metrics.importers.formats import detect

from .conftest import one, rows

UTC = dt.timezone.utc


@pytest.fixture(autouse=True)
def _no_placeholder_is_stored(request):
    """Built rows say "no value" with "" and the insert turns it into NULL: after every
    import here, no column that may be NULL holds an empty string or text where a blob
    or number belongs."""
    if "store" not in request.fixturenames:
        yield
        return
    conn = request.getfixturevalue("store").conn   # set up before, so torn down after this
    yield
    for table in ("messages", "calls", "daily"):
        for _, col, decl, notnull, _, pk in conn.execute(f"PRAGMA table_info({table})"):
            if pk:
                continue
            empty = conn.execute(f'SELECT COUNT(*) FROM {table} WHERE "{col}" = \'\'').fetchone()[0]
            assert empty == 0, f"{table}.{col} holds ''"
            if decl in ("INTEGER", "BLOB"):
                bad = conn.execute(f'SELECT COUNT(*) FROM {table} WHERE typeof("{col}") NOT IN '
                                   f"('null', '{decl.lower()}')").fetchone()[0]
                assert bad == 0, f"{table}.{col} holds a value that is not {decl}"


def ts(*args) -> int:
    return int(dt.datetime(*args, tzinfo=UTC).timestamp())


EVENTS = """
campaign,message_id,sent_at,recipient,status,error_code,direction,body,cost,currency,segments,clicked,converted,revenue,opted_out,replied,spam_complaint,segment,variant,store
Spring-Sale,SM001,2026-03-01T09:30:00Z,+14155550132,delivered,,outbound,Hi!,0.0079,USD,1,1,1,49.90,0,0,0,new,A,berlin
spring-sale,SM002,2026-03-01T09:31:00Z,+447700900123,undelivered,30003,outbound,Hi!,0.04,USD,2,0,0,,0,0,0,active,B,paris
весенняя-акция,SM003,2026-03-02 10:00:00,+79161234567,delivered,,outbound,Привет!,0.055,USD,1,0,0,,1,0,0,lapsed,A,
春の新商品,SM004,"Mon, 02 Mar 2026 12:00:00 +0900",+81901234567,sent,,outbound,こんにちは,0.075,USD,1,0,0,,0,0,0,,A,tokyo
ახალი-კამპანია,SM005,2026-03-03T08:00:00+04:00,+995555123456,queued,,outbound,გამარჯობა,,,1,0,0,,0,0,0,,,
"""


def test_message_events_with_unicode_campaigns(store, write):
    r = import_file(store, write("events.csv", EVENTS))
    assert (r.format, r.rows_in, r.rows_new, r.rows_rejected) == ("events", 5, 5, 0)
    assert r.campaigns == ["Spring-Sale", "весенняя-акция", "ახალი-კამპანია", "春の新商品"]
    names = {n for (n,) in rows(store, "SELECT name FROM campaigns")}
    assert names == {"Spring-Sale", "весенняя-акция", "春の新商品", "ახალი-კამპანია"}
    m = {k: v for k, *v in rows(store, """
        SELECT message_key, c.name, sent_at, status, error_code, country, segments, cost_micros,
               clicked, converted, revenue_micros, opted_out, segment, variant, attrs
        FROM messages JOIN campaigns c ON c.id = campaign_id""")}
    assert m["SM001"] == ["Spring-Sale", ts(2026, 3, 1, 9, 30), "delivered", None, "US", 1, 7900,
                          1, 1, 49_900_000, 0, "new", "A", '{"store":"berlin"}']
    assert m["SM002"][2:6] == ["undelivered", "30003", "GB", 2]
    assert m["SM003"][1] == ts(2026, 3, 2, 10, 0) and m["SM003"][10] == 1   # naive time: UTC
    assert m["SM004"][1] == ts(2026, 3, 2, 3, 0) and m["SM004"][2] == "sent"
    assert m["SM005"][2:4] == ["pending", None] and m["SM005"][6] is None   # no cost
    assert rows(store, """SELECT c.name, a.name FROM attribute_names a
                          JOIN campaigns c ON c.id = a.campaign_id ORDER BY c.name_key""") == [
        ("Spring-Sale", "store"), ("春の新商品", "store")]   # only where a row had a value


def test_naive_times_use_the_team_time_zone(store, write, monkeypatch):
    monkeypatch.setenv("KPIBOT_TZ", "America/New_York")
    import_file(store, write("events.csv", EVENTS))
    assert one(store, "SELECT sent_at FROM messages WHERE message_key='SM003'")[0] == \
        ts(2026, 3, 2, 15, 0)
    assert one(store, "SELECT sent_at FROM messages WHERE message_key='SM001'")[0] == \
        ts(2026, 3, 1, 9, 30)   # had a zone: unchanged


CALLS = """
campaign,call_id,started_at,recipient,direction,status,answered_by,duration_s,disposition,abandoned,converted,revenue,cost,currency,agent,segment,variant
renewals-q4,CA1,2026-10-01T14:00:00Z,+14155550132,outbound,completed,human,312,sale,0,1,420.00,0.028,USD,chloé,active,A
renewals-q4,CA2,2026-10-01T14:05:00Z,+4915123456789,outbound,completed,machine_end_beep,22,,0,0,,0.014,USD,,new,B
renewals-q4,CA3,2026-10-01T14:07:00Z,+33612345678,outbound,no-answer,,0,,0,0,,,,,new,A
Ремонт-звонки,CA4,2026-10-02T09:00:00Z,+77011234567,inbound,completed,,1:05,callback,1,0,,0.014,USD,дмитрий,,
"""


def test_call_events(store, write):
    r = import_file(store, write("calls.csv", CALLS))
    assert (r.format, r.rows_new) == ("calls", 4)
    got = rows(store, """SELECT call_key, status, answered_by, duration_s, disposition, abandoned,
                                converted, revenue_micros, country, agent FROM calls ORDER BY call_key""")
    assert got == [
        ("CA1", "completed", "human", 312.0, "sale", 0, 1, 420_000_000, "US", "chloé"),
        ("CA2", "completed", "machine_end_beep", 22.0, None, 0, 0, None, "DE", None),
        ("CA3", "no-answer", None, 0.0, None, 0, 0, None, "FR", None),
        ("CA4", "completed", None, 65.0, "callback", 1, 0, None, "KZ", "дмитрий"),
    ]
    assert one(store, "SELECT channel FROM campaigns WHERE name='Ремонт-звонки'")[0] == "call"


DAILY = """
date,campaign,channel,sent,delivered,failed,clicks,conversions,opt_outs,replies,complaints,cost,revenue,new_subscribers,list_size,calls_dialed,calls_answered,calls_abandoned,talk_seconds
2026-03-01,newsletter,sms,"10,000",9400,600,512,40,31,12,1,79.00,"1,990.50",55,120000,,,,
2026-03-02,newsletter,sms,9000,8500,500,433,35,20,9,0,71.10,1200,40,120035,,,,
2026-03-01,dialer-q1,call,,,,,12,,,,42.00,3000,,,800,350,14,52000
"""


def test_daily_aggregates_and_their_reimport(store, write):
    p = write("daily.csv", DAILY)
    r = import_file(store, p)
    assert (r.format, r.rows_new) == ("daily", 3)
    assert rows(store, """SELECT c.name, date, d.channel, sent, delivered, clicks, cost_micros,
                                 revenue_micros, calls_dialed, talk_seconds
                          FROM daily d JOIN campaigns c ON c.id = campaign_id ORDER BY date, c.name""") == [
        ("dialer-q1", "2026-03-01", "call", None, None, None, 42_000_000, 3_000_000_000, 800, 52000.0),
        ("newsletter", "2026-03-01", "sms", 10000, 9400, 512, 79_000_000, 1_990_500_000, None, None),
        ("newsletter", "2026-03-02", "sms", 9000, 8500, 433, 71_100_000, 1_200_000_000, None, None),
    ]
    # A corrected export of the same days replaces the totals, it does not add to them.
    again = import_file(store, write("daily2.csv", DAILY.replace("9400", "9401")))
    assert (again.rows_new, again.rows_existing) == (0, 3)
    assert one(store, "SELECT SUM(delivered) FROM daily")[0] == 9401 + 8500


TWILIO = """
From,To,Body,Status,SentDate,ApiVersion,NumSegments,ErrorCode,AccountSid,Sid,Direction,Price,PriceUnit
+15005550006,+14155550132,Spring sale: 20% off. Reply STOP to opt out,delivered,2026-03-01T09:30:00Z,2010-04-01,1,0,ACxxxx,SM01,outbound-api,-0.00790,USD
+15005550006,+14155550133,Spring sale: 20% off. Reply STOP to opt out,delivered,2026-03-01T09:30:01Z,2010-04-01,1,0,ACxxxx,SM02,outbound-api,-0.00790,USD
+15005550006,+14155550134,Spring sale: 20% off. Reply STOP to opt out,delivered,2026-03-01T09:30:02Z,2010-04-01,1,0,ACxxxx,SM03,outbound-api,-0.00790,USD
+15005550006,+14155550135,Spring sale: 20% off. Reply STOP to opt out,undelivered,2026-03-01T09:30:03Z,2010-04-01,1,30005,ACxxxx,SM04,outbound-api,-0.00790,USD
+15005550006,+14155550132,Second wave: ends Sunday,delivered,"Wed, 04 Mar 2026 09:30:00 +0000",2010-04-01,2,0,ACxxxx,SM05,outbound-api,-0.01580,USD
+14155550132,+15005550006, Stop ,received,"Wed, 04 Mar 2026 10:02:00 +0000",2010-04-01,1,0,ACxxxx,SM06,inbound,-0.00790,USD
+14155550133,+15005550006,HELP,received,2026-03-01T11:00:00Z,2010-04-01,1,0,ACxxxx,SM07,inbound,-0.00790,USD
+14155550133,+15005550006,Is it on Sunday too?,received,2026-03-02T11:00:00Z,2010-04-01,1,0,ACxxxx,SM08,inbound,-0.00790,USD
+14155550134,+15005550006,STOP,received,2026-03-10T09:30:03Z,2010-04-01,1,0,ACxxxx,SM09,inbound,-0.00790,USD
+14155550199,+15005550006,START,received,2026-03-02T11:00:00Z,2010-04-01,1,0,ACxxxx,SM10,inbound,-0.00790,USD
"""


def test_twilio_messaging_log_with_replies(store, write):
    r = import_file(store, write("twilio.csv", TWILIO), campaign="spring-sale")
    assert (r.format, r.rows_new) == ("twilio-messages", 10)
    out = dict(rows(store, "SELECT message_key, opted_out || replied FROM messages "
                           "WHERE direction = 'outbound'"))
    # STOP on 4 Mar answers SM05 (the latest to that number), not SM01; the question answers
    # SM02; HELP is neither; STOP 9 days after SM03 is outside the 7-day window.
    assert out == {"SM01": "00", "SM02": "01", "SM03": "00", "SM04": "00", "SM05": "10"}
    inbound = dict(rows(store, """SELECT i.message_key, o.message_key || ':' || COALESCE(i.keyword, '-')
                                  FROM messages i LEFT JOIN messages o ON o.id = i.reply_to
                                  WHERE i.direction = 'inbound'"""))
    assert inbound == {"SM06": "SM05:opt_out", "SM07": "SM02:help", "SM08": "SM02:-",
                       "SM09": None, "SM10": None}
    assert one(store, "SELECT cost_micros, segments, status FROM messages WHERE message_key='SM05'") \
        == (15800, 2, "delivered")
    assert one(store, "SELECT keyword FROM messages WHERE message_key='SM10'")[0] == "opt_in"


def test_replies_in_a_later_file_are_attributed(store, write):
    lines = TWILIO.strip().splitlines()
    import_file(store, write("out.csv", "\n".join(lines[:6])), campaign="spring-sale")
    import_file(store, write("in.csv", "\n".join([lines[0]] + lines[6:])), campaign="other")
    assert one(store, "SELECT opted_out FROM messages WHERE message_key='SM05'")[0] == 1
    # the reply moved to the campaign of the message it answers
    assert one(store, """SELECT c.name FROM messages m JOIN campaigns c ON c.id = m.campaign_id
                         WHERE message_key = 'SM06'""")[0] == "spring-sale"


def test_twilio_campaign_by_sender_mapping(store, write, tmp_path):
    mp = tmp_path / "senders.toml"
    mp.write_text('[campaign_by_sender]\n"+1 500-555-0006" = "spring-sale"\n')
    r = import_file(store, write("twilio.csv", TWILIO), mapping=mp)
    assert r.rows_new == 10 and r.campaigns == ["spring-sale"]


def test_twilio_without_a_campaign_is_an_error_that_says_what_to_do(store, write):
    from metrics.errors import ImportRejected
    with pytest.raises(ImportRejected, match="--campaign"):
        import_file(store, write("twilio.csv", TWILIO))


TWILIO_CALLS_REST = """
sid,from,to,status,start_time,duration,price,price_unit,direction,answered_by
CA01,+15005550006,+14155550132,completed,"Tue, 06 Oct 2026 14:00:00 +0000",125,-0.0140,USD,outbound-api,human
CA02,+15005550006,+14155550133,completed,"Tue, 06 Oct 2026 14:01:00 +0000",31,-0.0140,USD,outbound-api,machine_start
CA03,+15005550006,+14155550134,busy,"Tue, 06 Oct 2026 14:02:00 +0000",0,,USD,outbound-api,
CA04,+14155550135,+15005550006,no-answer,"Tue, 06 Oct 2026 14:03:00 +0000",0,,USD,inbound,
"""
TWILIO_CALLS_CONSOLE = """
Call Sid,Date Created,From,To,Direction,Status,Duration (seconds),Price,Price Unit,Answered By
CA01,2026-10-06 14:00:00 UTC,+15005550006,+14155550132,Outgoing API,completed,125,-0.0140,USD,human
CA05,2026-10-06 14:05:00 UTC,+15005550006,+14155550136,Outgoing API,failed,0,,USD,
"""


def test_twilio_calls_rest_and_console_spellings(store, write):
    r = import_file(store, write("calls.csv", TWILIO_CALLS_REST), campaign="renewals")
    assert (r.format, r.rows_new) == ("twilio-calls", 4)
    r2 = import_file(store, write("console.csv", TWILIO_CALLS_CONSOLE), format="twilio-calls",
                     campaign="renewals")
    assert (r2.rows_new, r2.rows_existing) == (1, 1)
    assert rows(store, "SELECT call_key, direction, status, answered_by, duration_s, cost_micros "
                       "FROM calls ORDER BY call_key") == [
        ("CA01", "outbound", "completed", "human", 125.0, 14000),
        ("CA02", "outbound", "completed", "machine_start", 31.0, 14000),
        ("CA03", "outbound", "busy", None, 0.0, None),
        ("CA04", "inbound", "no-answer", None, 0.0, None),
        ("CA05", "outbound", "failed", None, 0.0, None),
    ]


MAPPED = """
Kampagne;Zeit;Nummer;Zustand;Klick;Filiale
Frühling;01.03.2026;+4915123456789;zugestellt;ja;Köln
Frühling;01.03.2026;+4915123456788;fehlgeschlagen;nein;Bonn
"""
MAPPING = """
[source]
delimiter = ";"
[constants]
channel = "sms"
sent_at = "2026-03-01"
[columns]
campaign = "Kampagne"
recipient = "Nummer"
status = "Zustand"
clicked = "Klick"
[values.status]
zugestellt = "delivered"
fehlgeschlagen = "failed"
[values.clicked]
ja = true
nein = false
[attributes]
branch = "Filiale"
"""


def test_any_csv_through_a_mapping(store, write, tmp_path):
    mp = tmp_path / "de.toml"
    mp.write_text(MAPPING)
    r = import_file(store, write("de.csv", MAPPED), mapping=mp)
    assert (r.format, r.rows_new) == ("events via de.toml", 2)
    assert r.warnings == []
    got = rows(store, "SELECT status, clicked, country, attrs, sent_at FROM messages ORDER BY status")
    # the file's Zeit column is not mapped: it is kept as an attribute, the date is the constant
    assert got == [
        ("delivered", 1, "DE", json.dumps({"Zeit": "01.03.2026", "branch": "Köln"},
                                          ensure_ascii=False, separators=(",", ":")), ts(2026, 3, 1)),
        ("failed", 0, "DE", json.dumps({"Zeit": "01.03.2026", "branch": "Bonn"},
                                       ensure_ascii=False, separators=(",", ":")), ts(2026, 3, 1)),
    ]
    assert sorted(n for (n,) in rows(store, "SELECT name FROM attribute_names")) == ["Zeit", "branch"]


@pytest.mark.parametrize("header,fmt", [
    ("From,To,Body,Status,SentDate,ApiVersion,NumSegments,ErrorCode,AccountSid,Sid,Direction,Price,PriceUnit",
     "twilio-messages"),
    ("sid,from,to,status,start_time,duration,price,price_unit,direction,answered_by", "twilio-calls"),
    ("campaign,message_id,sent_at,recipient,status", "events"),
    ("Campaign, Sent At, Status", "events"),
    ("campaign,call_id,started_at,status", "calls"),
    ("date,campaign,sent,delivered", "daily"),
    ("age;job;y", None),
])
def test_detection_from_the_header(header, fmt):
    assert detect([h.strip() for h in header.replace(";", ",").split(",")]) == fmt


def test_parallel_parser_gives_the_same_rows(tmp_path, write):
    """Large files are parsed in a second process; the result must be identical."""
    from metrics.store import Store
    from metrics.demo import write_message_events
    path = write_message_events(tmp_path / "ev.csv", 3000, seed=2,
                                end=dt.datetime(2026, 11, 1, tzinfo=UTC), recipients_per_country=200)
    results = []
    for parallel in (False, True):
        s = Store(tmp_path / f"p{parallel}.db")
        r = import_file(s, path, parallel=parallel)
        results.append((r.rows_new, r.campaigns, s.conn.execute(
            "SELECT message_key, c.name, sent_at, status, recipient, country, cost_micros, clicked "
            "FROM messages JOIN campaigns c ON c.id = campaign_id ORDER BY message_key").fetchall()))
        s.close()
    assert results[0][0] == 3000
    assert results[0] == results[1]
