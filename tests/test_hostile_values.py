"""Hostile and careless values: huge numbers, control characters, absurd dates, binary files.
Each becomes a bad row (line, column, reason) or a one-line refusal, never a crash."""
from __future__ import annotations

import bz2
import datetime as dt
import gzip
import io
import lzma
import random
import zipfile
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from metrics import engine
from metrics.errors import ImportRejected, KpiBotError
from metrics.importers import import_file
from metrics.importers import values as V
from metrics.names import name_key

from .conftest import one, rows, table_counts

HEADER = "campaign,message_id,sent_at,recipient,status,direction,revenue\n"


def events(*lines: str) -> str:
    return HEADER + "\n".join(lines) + "\n"


def row(i: int, revenue: str = "1", campaign: str = "spring",
        sent_at: str = "2026-03-01T09:00:00Z") -> str:
    return f"{campaign},SM{i},{sent_at},+1415555{i % 10000:04d},delivered,outbound,{revenue}"


def rejected(store, path, **kw) -> str:
    before = table_counts(store)
    with pytest.raises(ImportRejected) as exc:
        import_file(store, path, **kw)
    assert table_counts(store) == before, "a rejected file must change nothing"
    return str(exc.value)


# -- 1. big money, counts and durations ------------------------------------------------------

@pytest.mark.parametrize("revenue", ["1e308", "9300000000000", "10000000000.000001", "1e999",
                                     "inf", "-inf", "nan", "1e20 USD"])
def test_big_money_is_a_bad_row_not_a_crash(store, write, revenue):
    p = write("big.csv", events(row(1), row(2, revenue), row(3)))
    msg = rejected(store, p)
    assert "1 bad row out of 3" in msg
    assert "line 3, column 'revenue': " in msg
    r = import_file(store, p, skip_bad_rows=True)
    assert (r.rows_new, r.rows_rejected) == (2, 1)
    assert rows(store, "SELECT message_key FROM messages ORDER BY 1") == [("SM1",), ("SM3",)]


def test_amounts_up_to_the_limit_keep_every_digit(store, write):
    p = write("exact.csv", events(row(1, "9999999999.999999"), row(2, "10000000000"),
                                  row(3, "1234567.1234565"), row(4, "0.0000025"),
                                  row(5, "2251799813.685249")))
    import_file(store, p)
    assert dict(rows(store, "SELECT message_key, revenue_micros FROM messages")) == {
        "SM1": 9_999_999_999_999_999, "SM2": 10_000_000_000_000_000,
        "SM3": 1_234_567_123_456,          # half-even: ...456.5 -> ...456
        "SM4": 2, "SM5": 2_251_799_813_685_249}


@pytest.mark.parametrize("text, micros", [
    ("0.0075", 7500), ("12.50", 12_500_000), ("1,234.56", 1_234_560_000), ("0,0075", 7500),
    ("1.234,56", 1_234_560_000), ("$12", 12_000_000), ("EUR 3", 3_000_000), ("12 USD", 12_000_000),
    ("-0", 0), ("-0.0", 0), ("-0.0 USD", 0), ("1e3", 1_000_000_000), ("", None),
    ("0.0000005", 0), ("0.0000015", 2), ("0.0000025", 2), ("0.00000251", 3),
    ("0.12345649999999999999999999999999", 123456), ("9999999999.9999995", 10**16),
    ("10000000000", 10**16), ("1_000.5", 1_000_500_000), (" 7.25 ", 7_250_000),
])
def test_money_micros(text, micros):
    assert V.money_micros(text) == micros


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "NaN", "sNaN", "1e999", "1e308",
                                  "9300000000000", "10000000000.000001", "-1", "abc", "1.2.3"])
def test_money_that_is_not_an_amount(text):
    with pytest.raises(V.BadValue):
        V.money_micros(text)


def test_twilio_negative_prices_and_their_limit():
    assert V.money_micros("-0.00790", absolute=True) == 7900
    assert V.money_micros("-1e10", absolute=True) == 10**16
    with pytest.raises(V.BadValue):
        V.money_micros("-1e11", absolute=True)


def test_money_is_exact_for_any_decimal_text():
    """Against decimal arithmetic (half-even at the micro-unit), on random values of every
    size and number of decimals the fast float path and the exact path meet."""
    rnd = random.Random(7)
    for _ in range(20_000):
        whole = str(rnd.randrange(10 ** rnd.randint(1, 10)))
        decimals = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(0, 9)))
        text = whole + ("." + decimals if decimals else "")
        exact = int(Decimal(text).quantize(Decimal("1e-6"), rounding=ROUND_HALF_EVEN) * 10**6)
        if exact > 10**16:
            with pytest.raises(V.BadValue):
                V.money_micros(text)
        else:
            assert V.money_micros(text) == exact, text


@pytest.mark.parametrize("text", ["1e30", "inf", "nan", "-1", "1.5", "1000000000001", "1e13"])
def test_counts_that_cannot_be_stored_are_bad_values(text):
    with pytest.raises(V.BadValue):
        V.count(text)


def test_counts_up_to_a_trillion():
    assert V.count("1000000000000") == 10**12
    assert V.count("1,234") == 1234 and V.count("12.0") == 12 and V.count("") is None


@pytest.mark.parametrize("text", ["1e300", "1e999", "inf", "nan", "-1", "604801",
                                  "99999999999999999999:00", "1000000:00:00"])
def test_durations_that_cannot_be_right_are_bad_values(text):
    with pytest.raises(V.BadValue):
        V.seconds(text)


def test_durations_up_to_a_week():
    assert V.seconds("604800") == 604800
    assert V.seconds("1:05") == 65 and V.seconds("0:01:05") == 65
    assert V.seconds("168:00:00") == 604800
    assert V.seconds("5000000", limit=V.MAX_COUNT) == 5_000_000


@pytest.mark.parametrize("text", ["99999999999999999999", "1000001", "²", "1e30"])
def test_flags_that_cannot_be_stored_are_bad_values(text):
    with pytest.raises(V.BadValue):
        V.flag(text)


def test_flags_still_read():
    assert [V.flag(s) for s in ("", "0", "1", "yes", "No", "x", "3", "1000000")] == \
        [0, 0, 1, 1, 0, 1, 3, 1_000_000]


def test_huge_counts_and_durations_in_files_are_bad_rows(store, write):
    daily = write("daily.csv", "date,campaign,channel,sent,delivered,talk_seconds\n"
                               "2026-03-01,d,sms,100,90,\n"
                               "2026-03-02,d,sms,1e30,90,\n"
                               "2026-03-03,d,call,,,1e300\n")
    msg = rejected(store, daily)
    assert "line 3, column 'sent': " in msg and "line 4, column 'talk_seconds': " in msg
    # a day's talk time adds up many calls: more than a week is fine there
    ok = write("ok.csv", "date,campaign,channel,sent,calls_dialed,talk_seconds\n"
                         "2026-03-03,d,call,,5000,2880000\n")
    import_file(store, ok)
    assert one(store, "SELECT talk_seconds FROM daily")[0] == 2_880_000
    calls = write("calls.csv", "campaign,call_id,started_at,recipient,status,duration_s\n"
                               "c,C1,2026-03-01T09:00:00Z,+14155550100,completed,60\n"
                               "c,C2,2026-03-01T09:00:00Z,+14155550101,completed,1e300\n")
    assert "line 3, column 'duration_s': " in rejected(store, calls)
    sms = write("seg.csv", "campaign,message_id,sent_at,recipient,status,segments,clicked\n"
                           "s,M1,2026-03-01T09:00:00Z,+14155550100,delivered,1e30,0\n"
                           "s,M2,2026-03-01T09:00:00Z,+14155550101,delivered,1,"
                           "99999999999999999999\n")
    msg = rejected(store, sms)
    assert "line 2, column 'segments': " in msg and "line 3, column 'clicked': " in msg


def test_a_file_whose_campaign_total_would_overflow_is_refused(store, write):
    # 1,000 rows at the per-amount limit: 10**19 micro-units, past SQLite's 64-bit SUM()
    p = write("many.csv", events(*(row(i, "10000000000") for i in range(1000))))
    for kw in ({}, {"skip_bad_rows": True}, {"parallel": True}):
        msg = rejected(store, p, **kw)
        assert "spring" in msg and "revenue" in msg and "total" in msg, msg


def test_a_total_that_overflows_with_what_is_stored_is_refused(store, write):
    first = write("a.csv", events(*(row(i, "10000000000") for i in range(400))))
    import_file(store, first)
    second = write("b.csv", events(*(row(i, "10000000000") for i in range(400, 900))))
    msg = rejected(store, second)
    assert "spring" in msg and "total" in msg
    card = engine.report(store, "spring", None, None)
    assert card.current["sms"].counters["revenue_micros"] == 400 * 10**16


def test_the_in_memory_counter_gives_way_before_it_could_wrap(store, write, monkeypatch):
    """Amounts small enough for the numpy counter: its running total is bounded too."""
    from metrics import rollup, rollup_counter
    monkeypatch.setattr(rollup, "MAX_TOTAL_MICROS", 10**13)
    answers = []
    add = rollup_counter.NewRowCounter.add
    monkeypatch.setattr(rollup_counter.NewRowCounter, "add",
                        lambda self, cols: answers.append(add(self, cols)) or answers[-1])
    p = write("mid.csv", events(*(row(i, "100000") for i in range(200))))   # 2e13 micros
    msg = rejected(store, p)
    assert "spring" in msg and "total" in msg
    assert answers == [False]     # counted in SQL instead
    monkeypatch.setattr(rollup, "MAX_TOTAL_MICROS", 10**14)
    answers.clear()
    import_file(store, p)
    assert answers == [True]


def test_the_engine_reports_an_overflowing_sum_clearly(store, write):
    """A database filled before the limits existed: the card says what is wrong."""
    import_file(store, write("two.csv", events(row(1, "1", sent_at="2026-03-01T09:00:00Z"),
                                               row(2, "1", sent_at="2026-03-02T09:00:00Z"))))
    store.conn.execute("UPDATE message_rollup SET revenue_micros = 6000000000000000000")
    store.conn.commit()
    with pytest.raises(KpiBotError, match="too large"):
        engine.report(store, "spring", None, None)


# -- 2. control characters in labels ---------------------------------------------------------

def test_control_characters_are_removed_from_campaign_names(store, write):
    p = write("ctl.csv", events(row(1, campaign="a\x00b"), row(2, campaign="spring\x7f\x9b sale"),
                                row(3, campaign="x\ufffe\ufdd0y\uffff"),
                                row(4, campaign='"multi\nline\tname"'),
                                row(5, campaign="nel\x85here")))
    import_file(store, p)
    assert sorted(n for (n,) in rows(store, "SELECT name FROM campaigns")) == [
        "ab", "multi line name", "nel here", "spring sale", "xy"]


@pytest.mark.parametrize("name, reason", [
    ("\x00\x01", "campaign is empty"), (" \t\x1f ", "campaign is empty"),
    ("n" * 201, "campaign name is longer than 200 characters"),
])
def test_bad_campaign_names_are_bad_rows(store, write, name, reason):
    msg = rejected(store, write("n.csv", events(row(1), row(2, campaign=name))))
    assert f"line 3, column 'campaign': {reason}" in msg


def test_a_name_of_200_characters_is_fine(store, write):
    import_file(store, write("n.csv", events(row(1, campaign="n" * 200 + "\x00"))))
    assert one(store, "SELECT length(name) FROM campaigns")[0] == 200


def test_ordinary_names_are_kept_as_they_are(store, write):
    names = ["Spring  Sale", "Весна-2026", "საგაზაფხულო", "春のセール", "café 😀"]
    import_file(store, write("ok.csv", events(*(row(i, campaign=n) for i, n in enumerate(names)))))
    stored = dict(rows(store, "SELECT name, name_key FROM campaigns"))
    assert stored == {n: name_key(n) for n in names}
    assert name_key("Spring  Sale") == "spring  sale"


def test_labels_lose_control_characters(store, write):
    sms = write("l.csv", "campaign,message_id,sent_at,recipient,status,error_code,currency,"
                         "segment,variant\n"
                         's,M1,2026-03-01T09:00:00Z,+14155550100,failed,300\x0005,US\x00D,'
                         'VIP\x01,"A\r\nB"\n'
                         's,M2,2026-03-01T09:00:00Z,+14155550101,failed,\x01,\x02,\x03,\ufffe\n')
    import_file(store, sms)
    assert rows(store, "SELECT error_code, currency, segment, variant FROM messages "
                       "ORDER BY message_key") == [("30005", "USD", "VIP", "A B"),
                                                   (None, None, None, None)]
    calls = write("c.csv", "campaign,call_id,started_at,recipient,status,disposition,agent\n"
                           "c,C1,2026-03-01T09:00:00Z,+14155550100,completed,sa\x00le,"
                           "ann\x1b[31m\n")
    import_file(store, calls)
    assert one(store, "SELECT disposition, agent FROM calls") == ("sale", "ann[31m")


def test_mapping_constants_and_senders_are_cleaned(store, write, tmp_path):
    csv = write("m.csv", "Zeit,Nummer,Zustand\n2026-03-01,+4915112345678,delivered\n")
    mp = tmp_path / "m.toml"
    mp.write_text('[constants]\ncampaign = "bank\\u0000-2008"\nsent_at = "2026-03-01"\n'
                  '[columns]\nrecipient = "Nummer"\nstatus = "Zustand"\n')
    import_file(store, csv, mapping=mp)
    assert rows(store, "SELECT name FROM campaigns") == [("bank-2008",)]
    mp.write_text('[constants]\ncampaign = "\\u0001\\u0002"\n'
                  '[columns]\nrecipient = "Nummer"\nstatus = "Zustand"\nsent_at = "Zeit"\n')
    msg = rejected(store, csv, mapping=mp)
    assert "[constants] campaign" in msg and "empty" in msg and "\n" not in msg


def test_campaign_option_is_cleaned_and_checked(store, write):
    twilio = write("tw.csv", "From,To,Body,Status,SentDate,Sid,Direction,Price,PriceUnit\n"
                             "+15005550006,+14155550132,hi,delivered,2026-03-01T09:30:00Z,SM01,"
                             "outbound-api,-0.0079,USD\n")
    import_file(store, twilio, campaign="tw\x00ilio\x1f")
    assert rows(store, "SELECT name FROM campaigns") == [("twilio",)]
    msg = rejected(store, twilio, campaign="t" * 201)
    assert "--campaign" in msg and "longer than 200 characters" in msg and "\n" not in msg
    plain = write("p.csv", "message_id,sent_at,recipient,status\nM1,2026-03-01T09:00:00Z,"
                           "+14155550100,delivered\n")
    msg = rejected(store, plain, campaign="\x00")
    assert "--campaign" in msg and "empty" in msg and "\n" not in msg


# -- 3. absurd dates --------------------------------------------------------------------------

@pytest.mark.parametrize("when", ["0001-01-01T10:00:00Z", "1989-12-31T23:59:59Z",
                                  "2100-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                                  "1969-12-31", "Mon, 01 Jan 1900 00:00:00 +0000"])
def test_timestamps_outside_1990_to_2100_are_bad_rows(store, write, when):
    p = write("t.csv", events(row(1), row(2, sent_at=f'"{when}"')))
    msg = rejected(store, p)
    assert "line 3, column 'sent_at': " in msg and "1990" in msg and "2100" in msg


def test_timestamps_at_the_edges_of_the_range(store, write):
    p = write("t.csv", events(row(1, sent_at="1990-01-01T00:00:00Z"),
                              row(2, sent_at="2099-12-31T23:59:59Z")))
    assert import_file(store, p).rows_new == 2


def test_call_and_daily_dates_outside_the_range_are_bad_rows(store, write):
    calls = write("c.csv", "campaign,call_id,started_at,recipient,status\n"
                           "c,C1,0001-01-01T10:00:00Z,+14155550100,completed\n")
    assert "line 2, column 'started_at': " in rejected(store, calls)
    daily = write("d.csv", "date,campaign,sent\n0001-01-01,d,5\n2026-01-01,d,5\n"
                           "2100-01-01,d,5\n2026-01-02 10:00,d,5\n3000-01-01 10:00,d,5\n")
    msg = rejected(store, daily)
    assert "3 bad rows out of 5" in msg
    for line in (2, 4, 6):
        assert f"line {line}, column 'date': " in msg


def test_dates_print_with_four_digit_years():
    from metrics.times import format_date
    assert format_date(dt.date(1, 1, 1)) == "0001-01-01"
    assert format_date(dt.datetime(999, 3, 4, 5, 6), "%Y-%m-%d %H:%M") == "0999-03-04 05:06"
    assert format_date(dt.date(2026, 1, 1)) == "2026-01-01"
    assert format_date(dt.date(7, 1, 1), "%d %B %Y") == "01 January 0007"
    assert format_date(dt.date(7, 1, 1), "100%% in %Y") == "100% in 0007"


# -- 4. binary files --------------------------------------------------------------------------

def _xlsx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
    return buf.getvalue()


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("export.csv", events(row(1)))
    return buf.getvalue()


CSV_BYTES = events(row(1)).encode()


@pytest.mark.parametrize("name, data, expected", [
    ("export.csv.gz", gzip.compress(CSV_BYTES),
     "export.csv.gz: is gzip-compressed: decompress it first (gunzip export.csv.gz) and "
     "import export.csv"),
    ("report.xlsx", _xlsx(), "report.xlsx: is an Excel workbook: save it as CSV first"),
    ("export.zip", _zip(), "export.zip: is a zip archive: unzip it first"),
    ("report.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "report.pdf: is a PDF document"),
    ("export.csv.bz2", bz2.compress(CSV_BYTES),
     "export.csv.bz2: is bzip2-compressed: decompress it first (bunzip2 export.csv.bz2)"),
    ("export.csv.xz", lzma.compress(CSV_BYTES),
     "export.csv.xz: is xz-compressed: decompress it first (unxz export.csv.xz)"),
    ("export.csv.zst", b"\x28\xb5\x2f\xfd" + b"\x00" * 20,
     "export.csv.zst: is zstd-compressed: decompress it first (unzstd export.csv.zst)"),
    ("export.7z", b"7z\xbc\xaf\x27\x1c" + b"\x00" * 20, "export.7z: is a 7-Zip archive"),
    ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504,
     "old.xls: is an old-format Excel workbook (.xls): save it as CSV first"),
    ("data.csv", gzip.compress(CSV_BYTES),
     "data.csv: is gzip-compressed: decompress it first (gunzip -c data.csv > data-unzipped.csv)"),
])
def test_binary_files_are_refused_in_one_line(store, tmp_path, name, data, expected):
    p = tmp_path / name
    p.write_bytes(data)
    msg = rejected(store, p)
    assert msg.startswith(expected), msg
    assert "\n" not in msg


def test_cli_refuses_a_gzip_file_in_one_line(tmp_path):
    from click.testing import CliRunner

    from bot.cli import main
    p = tmp_path / "export.csv.gz"
    p.write_bytes(gzip.compress(CSV_BYTES))
    r = CliRunner().invoke(main, ["import", str(p), "--db", str(tmp_path / "k.db")])
    assert r.exit_code == 1
    out = r.output.strip()
    assert "\x1f" not in out and "\x8b" not in out
    assert out.count("gzip-compressed") == 1 and len(out.splitlines()) == 1, out
