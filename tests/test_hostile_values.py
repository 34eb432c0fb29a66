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
    ("0.0000015", 2), ("0.0000025", 2), ("0.00000251", 3),
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
    ("report.xlsx", _xlsx(), "report.xlsx: could not be read as an Excel workbook"),
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
     "old.xls: could not be read as an Excel workbook"),
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


# -- 5. long lines and huge headers -----------------------------------------------------------

from metrics.importers import source as S  # noqa: E402

LINE_LIMIT = f"line is longer than {S.MAX_LINE:,} characters"


def _kpibot_measured(tmp_path, *args: str) -> dict:
    """``kpibot ARGS`` in a fresh process: its exit code, output and the peak resident memory
    (MB) of the largest process it ran (the parser process too), read with getrusage in a
    wrapper process whose only children they are."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    wrapper = ("import json, resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
               "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
               "print(json.dumps({'rc': r.returncode, 'peak_mb': peak,\n"
               "  'out': r.stdout[:4000].decode('utf-8', 'replace'), 'out_len': len(r.stdout),\n"
               "  'err': r.stderr[:4000].decode('utf-8', 'replace'), 'err_len': len(r.stderr)}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIBOT_")}
    env["PYTHONPATH"] = root
    out = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "bot.cli",
                          "import", *args, "--db", str(tmp_path / "k.db")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_60_mb_header_without_a_newline_is_refused_in_one_short_line(tmp_path):
    p = tmp_path / "nolf.csv"
    p.write_bytes(b"campaign;sent_at;" + b"x" * 60_000_000)
    r = _kpibot_measured(tmp_path, str(p))
    assert r["rc"] == 1
    assert r["err_len"] < 2_000, r["err"][:300]
    assert "nolf.csv" in r["err"] and f"longer than {S.MAX_LINE:,} characters" in r["err"]
    assert len(r["err"].strip().splitlines()) == 1
    assert r["peak_mb"] < 200, r["peak_mb"]


def test_a_60_mb_data_line_is_a_bad_row_read_in_bounded_memory(tmp_path):
    p = tmp_path / "long.csv"
    with open(p, "wb") as f:
        f.write(events(row(1)).encode())
        f.write(row(2, revenue="").encode() + b"9" * 60_000_000 + b"\n")
        f.write((row(3) + "\n").encode())
    r = _kpibot_measured(tmp_path, str(p), "--skip-bad-rows")
    assert r["rc"] == 0, r["err"][:300]
    assert "imported 2 new rows" in r["out"] and "1 rejected" in r["out"], r["out"][:500]
    assert f"line 3: {LINE_LIMIT}" in r["out"]
    assert r["out_len"] < 2_000 and r["err_len"] < 2_000
    assert r["peak_mb"] < 200, r["peak_mb"]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("quoted", [False, True])
def test_a_line_over_the_limit_is_a_bad_row_and_the_import_goes_on(store, write, newline,
                                                                   quoted):
    first = row(1, campaign='"spring, quoted"' if quoted else "spring")
    p = write("long.csv", events(first, row(2, revenue="1" + "0" * S.MAX_LINE), row(3),
                                 row(4), row(5, revenue="abc"), row(6)), newline=newline)
    msg = rejected(store, p)
    assert "2 bad rows out of 6" in msg
    assert f"line 3: {LINE_LIMIT}" in msg and "line 6, column 'revenue': " in msg
    assert len(msg) < 1_000
    r = import_file(store, p, skip_bad_rows=True)
    assert (r.rows_new, r.rows_rejected) == (4, 2)
    assert [(e.line, e.column) for e in r.errors] == [(3, None), (6, "revenue")]
    assert rows(store, "SELECT message_key FROM messages ORDER BY 1") == [
        ("SM1",), ("SM3",), ("SM4",), ("SM6",)]


def test_a_long_last_line_without_a_newline_is_a_bad_row(store, write):
    p = write("tail.csv", events(row(1)) + row(2, revenue="7" * (S.MAX_LINE + 10)))
    r = import_file(store, p, skip_bad_rows=True)
    assert (r.rows_new, r.rows_rejected) == (1, 1)
    assert str(r.errors[0]) == f"line 3: {LINE_LIMIT}"


def test_a_quoted_value_over_many_lines_past_the_limit_is_one_bad_row(store, write):
    # 1,100 lines of 1,000 characters inside one quoted value: a record of 1.1 million
    body = '"' + ("y" * 999 + "\n") * 1_100 + 'end"'
    p = write("multi.csv", "campaign,message_id,sent_at,recipient,status,body\n"
                           "s,M1,2026-03-01T09:00:00Z,+14155550100,delivered,hi\n"
                           f"s,M2,2026-03-01T09:00:00Z,+14155550101,delivered,{body}\n"
                           "s,M3,2026-03-01T09:00:00Z,+14155550102,delivered,\"a,\n\"\"b\"\"\"\n"
                           "s,M4,2026-03-01T09:00:00Z,+14155550103,bogus,x\n")
    msg = rejected(store, p)
    assert "2 bad rows out of 4" in msg
    assert f"line 3: {LINE_LIMIT}" in msg
    assert "line 1106, column 'status': " in msg   # M2 on lines 3-1103, M3 on 1104-1105
    r = import_file(store, p, skip_bad_rows=True)
    assert rows(store, "SELECT message_key FROM messages ORDER BY 1") == [("M1",), ("M3",)]
    assert [e.line for e in r.errors] == [3, 1106]


def test_an_unclosed_quote_past_the_limit_is_one_bad_row_to_the_end(store, write):
    p = write("open.csv", events(row(1), row(2, campaign='"never closed'),
                                 *(row(i, revenue="1" * 900) for i in range(3, 1_500))))
    r = import_file(store, p, skip_bad_rows=True)
    assert (r.rows_new, r.rows_rejected) == (1, 1)
    assert str(r.errors[0]) == f"line 3: {LINE_LIMIT}"


def _records_as_the_csv_module_reads_them(path, delimiter, width, limit):
    """(line, fields, "long" or "count") of each data record, by the csv module: what
    CsvSource.rows() must give with a line limit of ``limit``."""
    import csv
    with open(path, newline="", encoding="utf-8") as f:
        physical = f.readlines()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=False)
        next(reader)
        out, last = [], reader.line_num
        for fields in reader:
            text = "".join(physical[last:reader.line_num])
            start, last = last + 1, reader.line_num
            if len(text.rstrip("\r\n")) > limit:
                out.append((start, "long"))
            elif not fields or fields == [""]:
                continue
            elif len(fields) != width and (len(fields) < width or any(
                    x.strip() for x in fields[width:])):
                out.append((start, "count"))
            else:
                out.append((start, fields[:width]))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_reading_past_long_records_finds_the_next_record_as_the_csv_module_does(
        tmp_path, monkeypatch, seed):
    """With a line limit of 200 characters and blocks of 300: random files of quoted values,
    values over many lines, quotes in odd places, every line end, and lines cut by the
    reading limit (between a \r and its \n too). Each record over the limit is one bad
    row, and the records after it are exactly the csv module's, line numbers included."""
    monkeypatch.setattr(S, "MAX_LINE", 200)
    monkeypatch.setattr(S, "_PIECE", 202)
    monkeypatch.setattr(S, "_BLOCK", 300)
    rnd = random.Random(seed)
    delim = rnd.choice([",", ";"])
    nl = rnd.choice(["\n", "\r\n", "\r"])

    def value() -> str:
        k = rnd.random()
        if k < 0.4:
            return rnd.choice(["", "a", "delivered", "x" * rnd.randrange(1, 60)])
        if k < 0.55:
            return f'"a{delim}b ""q"""'
        if k < 0.7:     # over several lines, at times far past the limit
            return '"' + nl.join("y" * rnd.randrange(0, 90)
                                 for _ in range(rnd.randrange(1, 8))) + '"'
        if k < 0.8:     # long, unquoted or quoted with the delimiter and quotes inside
            return rnd.choice(["z" * rnd.randrange(150, 700),
                               '"' + (f'w{delim}""' * rnd.randrange(40, 200)) + '"'])
        if k < 0.9:     # quotes the csv module reads as plain characters
            return rnd.choice(['ab"c', '"a"b', '"a" ', 'x""y', '"' + delim + '"z'])
        return "v" * (199 - rnd.randrange(0, 3))   # lines near the limit

    lines = ["campaign" + delim + "message_id" + delim + "body" + delim + "status"]
    for i in range(400):
        if rnd.random() < 0.05:
            lines.append("")
        elif rnd.random() < 0.05:    # a line of exactly 201 characters: cut at its \r
            lines.append("c" + delim + "m" + delim + "b" * 195 + delim + "s")
        else:
            first = rnd.choice(["c", "c", "c", 'ab"c', '5" screen', '"a"b"'])
            lines.append(delim.join([first, f"m{i}", value(), "sent"]))
    text = nl.join(lines) + (nl if rnd.random() < 0.7 else "")
    if rnd.random() < 0.3:
        text += delim.join(["c", "open", '"never closed' + "q" * 300, "sent"])
    path = tmp_path / "f.csv"
    path.write_bytes(text.encode())
    src = S.CsvSource(path)
    got = []
    for line, fields in src.rows():
        if isinstance(fields, list):
            got.append((line, fields))
        else:
            assert fields.line == line
            got.append((line, "long" if "longer than 200 characters" in fields.reason
                        else "count" if "fields but the header" in fields.reason else fields))
    want = _records_as_the_csv_module_reads_them(path, delim, 4, 200)
    assert any(k == "long" for _, k in want)
    assert got == want


def test_a_line_of_exactly_the_limit_is_read(store, write):
    names = [f"a{i}" for i in range(17)]
    head = HEADER.rstrip("\n") + "," + ",".join(names) + "\n"
    base = row(1) + "," * 17
    each, extra = divmod(S.MAX_LINE - len(base), 17)
    values = ["v" * (each + (i < extra)) for i in range(17)]
    line = row(1) + "," + ",".join(values)
    assert len(line) == S.MAX_LINE
    p = write("edge.csv", head + line + "\n" + row(2) + ",v" + "," * 16 + "\n")
    assert import_file(store, p).rows_new == 2
    over = line + "v"
    p = write("over.csv", head + over + "\n" + row(2) + ",v" + "," * 16 + "\n")
    assert f"line 2: {LINE_LIMIT}" in rejected(store, p)


@pytest.mark.parametrize("newline", ["\n", "\r\n", ""])
def test_a_header_over_the_limit_is_refused_in_one_short_line(store, write, newline):
    p = write("wide.csv", "campaign," + "c" * (S.MAX_LINE + 5) + newline + (
        row(1) + newline if newline else ""))
    msg = rejected(store, p)
    assert msg == (f"wide.csv: the header (line 1) is longer than {S.MAX_LINE:,} characters: "
                   "is this a CSV file?")


def test_a_quoted_header_over_many_lines_past_the_limit_is_refused(store, write):
    p = write("q.csv", 'campaign,"' + ("h" * 999 + "\n") * 1_100 + '"\n' + row(1) + "\n")
    msg = rejected(store, p)
    assert "the header (line 1) is longer than" in msg and len(msg) < 200


@pytest.mark.parametrize("unit", ['"a,', "'b;", ',"a"'])
def test_a_header_of_a_megabyte_full_of_quotes_is_sniffed_quickly(tmp_path, unit):
    """csv.Sniffer's regular expressions take cubic time on quotes (2 s for 32,000
    characters): it sees at most _SAMPLE_CHARS."""
    import subprocess
    import sys
    from pathlib import Path
    p = tmp_path / "q.csv"
    p.write_text((unit * S.MAX_LINE)[:S.MAX_LINE - 10] + "\n1,2\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from metrics.errors import ImportRejected\n"
            "from metrics.importers.source import CsvSource\n"
            "try:\n    print(CsvSource(sys.argv[2]).delimiter)\n"
            "except ImportRejected as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parents[1]),
                          str(p)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr[-500:]


def test_huge_header_names_are_not_echoed(store, write, tmp_path):
    big = ["x" * 60_000 + str(i) for i in range(12)]
    unknown = write("u.csv", ",".join(big) + "\n" + ",".join("1" * 12) + "\n")
    msg = rejected(store, unknown)
    assert "could not tell the format" in msg and len(msg) < 600, msg[:700]
    twice = write("t.csv", "campaign,sent_at,status," + big[0] + "," + big[0] + "\n")
    msg = rejected(store, twice)
    assert "twice" in msg and len(msg) < 400, msg[:500]
    missing = write("m.csv", ",".join(["campaign", *big]) + "\n" + ",".join("1" * 13) + "\n")
    msg = rejected(store, missing, format="events")
    assert "missing required columns" in msg and len(msg) < 600, msg[:700]
    mp = tmp_path / "m.toml"
    mp.write_text('[constants]\ncampaign = "c"\n[columns]\nsent_at = "when"\n')
    msg = rejected(store, missing, mapping=mp)
    assert "no column 'when'" in msg and len(msg) < 600, msg[:700]
    # a column matched by its normalised name may be spelled at any length
    label = "campaign" + "_" * 100_000
    named = write("n.csv", f"{label},message_id,sent_at,recipient,status\n"
                           "\x00,M1,2026-03-01T09:00:00Z,+14155550100,delivered\n")
    msg = rejected(store, named)
    assert "line 2, column 'campaign___" in msg and "campaign is empty" in msg
    assert len(msg) < 600, msg[:700]
    daily = write("d.csv", f"date,campaign,sent,{big[0]}\n2026-03-01,d,5,1\n")
    r = import_file(store, daily)
    assert r.warnings and all(len(w) < 400 for w in r.warnings), [w[:500] for w in r.warnings]


def test_a_value_over_the_field_limit_names_a_huge_column_briefly(store, write):
    label = "x" * 70_000
    p = write("v.csv", HEADER.rstrip("\n") + f",{label}\n" + row(1) + ",ok\n"
                       + row(2) + "," + "v" * (S.MAX_FIELD + 1) + "\n")
    msg = rejected(store, p)
    assert "line 3, column 'xxx" in msg and "the limit is 65,536" in msg
    assert len(msg) < 600, msg[:700]


# -- 6. money, digits and currencies ----------------------------------------------------------

MONEY_HEADER = "campaign,message_id,sent_at,recipient,status,cost,currency,revenue\n"


def money_row(i: int, revenue: str, currency: str, cost: str = "") -> str:
    return (f"spring,SM{i},2026-03-01T09:00:00Z,+1415555{i:04d},delivered,{cost},{currency},"
            f"{revenue}")


def test_an_amount_in_another_currency_than_the_rows_is_a_bad_row(store, write):
    p = write("cur.csv", MONEY_HEADER + "\n".join([
        money_row(1, "¥1000", "USD"),          # bad: yen in a dollar row
        money_row(2, "$12", "USD"),
        money_row(3, "EUR 3", "EUR"),
        money_row(4, "12 USD", "usd"),
        money_row(5, "€5", "GBP"),             # bad
        money_row(6, "3 EUR", ""),             # no currency given: nothing to disagree with
        money_row(7, "5", "USD", cost="GBP 0.01"),   # bad: the cost
        money_row(8, "£2", "GBP", cost="$0.0079"),   # bad: the cost in dollars, row in pounds
        money_row(9, "¥7", "JPY"),
        money_row(10, "$1 EUR", ""),           # bad: two currencies in one amount
    ]) + "\n")
    msg = rejected(store, p)
    assert "5 bad rows out of 10" in msg
    lines = {e.line: e for e in import_file(store, p, skip_bad_rows=True).errors}
    assert sorted(lines) == [2, 6, 8, 9, 11]
    assert lines[2].column == "revenue" and "¥" in lines[2].reason and "USD" in lines[2].reason
    assert lines[6].column == "revenue" and "€" in lines[6].reason and "GBP" in lines[6].reason
    assert lines[8].column == "cost" and "GBP" in lines[8].reason and "USD" in lines[8].reason
    assert lines[9].column == "cost" and "$" in lines[9].reason and "GBP" in lines[9].reason
    assert lines[11].column == "revenue"
    assert dict(rows(store, "SELECT message_key, revenue_micros FROM messages")) == {
        "SM2": 12_000_000, "SM3": 3_000_000, "SM4": 12_000_000, "SM6": 3_000_000,
        "SM9": 7_000_000}


def test_amounts_with_a_currency_and_no_currency_column_still_read(store, write):
    p = write("nocur.csv", events(row(1, "EUR 3"), row(2, "¥1000"), row(3, "$12"),
                                  row(4, "12 USD")))
    import_file(store, p)
    assert dict(rows(store, "SELECT message_key, revenue_micros FROM messages")) == {
        "SM1": 3_000_000, "SM2": 1_000_000_000, "SM3": 12_000_000, "SM4": 12_000_000}


def test_call_amounts_are_checked_against_the_rows_currency(store, write):
    p = write("c.csv", "campaign,call_id,started_at,recipient,status,revenue,currency\n"
                       "c,C1,2026-03-01T09:00:00Z,+14155550100,completed,$5,USD\n"
                       "c,C2,2026-03-01T09:00:00Z,+14155550101,completed,¥5,USD\n")
    assert "line 3, column 'revenue': " in rejected(store, p)


@pytest.mark.parametrize("text", ["٣٤٥", "１２３", "١٢.٥ USD", "€٣", "$１２", "߁"])
def test_money_with_digits_other_than_ascii_is_a_bad_value(text):
    with pytest.raises(V.BadValue, match="0-9"):
        V.money_micros(text)


@pytest.mark.parametrize("fn, text", [
    (V.count, "٣٤٥"), (V.count, "１２３"), (V.count, "1٢"),
    (V.flag, "３"), (V.flag, "٣"), (V.flag, "１２"),
    (V.seconds, "٣٤٥"), (V.seconds, "１２３"), (V.seconds, "١:٠٥"), (V.seconds, "1:０5"),
])
def test_counts_flags_and_durations_want_ascii_digits(fn, text):
    with pytest.raises(V.BadValue, match="0-9"):
        fn(text)


def test_non_ascii_digits_in_a_file_are_bad_rows(store, write):
    p = write("d.csv", events(row(1), row(2, "٣٤٥"), row(3, "１２３")))
    msg = rejected(store, p)
    assert "line 3, column 'revenue': " in msg and "line 4, column 'revenue': " in msg
    assert "0-9" in msg


@pytest.mark.parametrize("text", ["0.000000000000000000001", "0.0000005", "1e-7", "1E-30",
                                  "$0.0000001", "0,0000004"])
def test_an_amount_that_would_round_to_zero_is_a_bad_value(text):
    with pytest.raises(V.BadValue, match=r"has more decimals than kpibot keeps \(6\)"):
        V.money_micros(text)


def test_an_amount_that_would_round_to_zero_is_a_bad_value_when_absolute():
    with pytest.raises(V.BadValue, match="more decimals"):
        V.money_micros("-0.0000001", absolute=True)


@pytest.mark.parametrize("text, micros", [
    ("0.0000015", 2), ("1.0000001", 1_000_000), ("0.0000006", 1), ("0.00000050001", 1),
    ("0.0000000", 0), ("0e-30", 0), ("-0.000000", 0), ("12.3456789", 12_345_679),
])
def test_ordinary_rounding_at_the_seventh_decimal_stays(text, micros):
    assert V.money_micros(text) == micros


def test_a_tiny_amount_in_a_file_is_a_bad_row(store, write):
    p = write("tiny.csv", events(row(1), row(2, "0.000000000000000000001"), row(3, "1.0000001")))
    msg = rejected(store, p)
    assert "1 bad row out of 3" in msg
    assert "line 3, column 'revenue': '0.000000000000000000001' has more decimals than " \
           "kpibot keeps (6)" in msg


def test_a_batch_of_long_rows_ends_at_a_character_budget(store, write, monkeypatch):
    """Rows may be a megabyte each: a batch holds at most about BATCH_CHARS characters of
    them, not 10,000 rows."""
    from metrics.importers import parse as P
    monkeypatch.setattr(P, "BATCH_CHARS", 20_000)
    monkeypatch.setattr(S, "_BLOCK", 4_000)
    sizes = []
    build = P.build_batch
    monkeypatch.setattr(P, "build_batch", lambda b, items: sizes.append(len(items))
                        or build(b, items))
    head = HEADER.rstrip("\n") + ",note\n"
    p = write("wide.csv", head + "".join(row(i) + "," + "n" * 2_000 + "\n" for i in range(100)))
    assert import_file(store, p, parallel=False).rows_new == 100
    assert sum(sizes) == 100 and max(sizes) <= 12, sizes


def test_memo_tables_do_not_keep_long_values():
    """20,000 distinct labels of 65,536 characters would be gigabytes per column."""
    from metrics.importers.binding import MEMO_CHARS, Memo
    m = Memo(str.upper)
    assert m["a" * MEMO_CHARS] == "A" * MEMO_CHARS and len(m) == 1
    assert m["b" * 65_536] == "B" * 65_536 and len(m) == 1


def test_the_first_and_last_days_are_allowed_in_every_zone(store, write, monkeypatch):
    """The range is about the day as written: 1990-01-01 without a time, read in Berlin,
    is 1989-12-31 in UTC and still allowed; 2099-12-31 in New York likewise."""
    from metrics.times import parse_time, zone
    assert parse_time("1990-01-01", zone("Europe/Berlin")) == 631148400
    assert parse_time("2099-12-31T23:30:00-05:00") == 4102461000
    for bad in ("1989-12-31T23:59:59+00:00", "2100-01-01", "1989-12-31"):
        with pytest.raises(ValueError, match="is not between 1990-01-01 and 2100-01-01"):
            parse_time(bad, zone("America/New_York"))
    monkeypatch.setenv("KPIBOT_TZ", "Europe/Berlin")
    f = write("edge.csv", "campaign,message_id,sent_at,recipient,status\n"
                          "edge,e1,1990-01-01,+14155550100,delivered\n")
    assert import_file(store, f).rows_new == 1
