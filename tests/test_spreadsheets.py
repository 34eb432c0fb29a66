"""Spreadsheets (XLSX) imported as the CSV saved from them would be, rows numbered as the
sheet shows them; named mappings kept beside the database."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from bot.command import Context, run
from metrics import engine
from metrics.errors import ImportRejected, MappingError
from metrics.importers import named
from metrics.importers.run import import_file
from metrics.store import Store

from .conftest import rows

openpyxl = pytest.importorskip("openpyxl")

HEADER = ["campaign", "message_id", "sent_at", "recipient", "status", "cost", "currency",
          "body"]
GOOD = [
    ["spring", "SM1", dt.datetime(2026, 3, 1, 9, 30), 14155550101, "delivered", 0.05, "USD",
     "Hi"],
    ["spring", "SM2", "2026-03-01T10:00:00Z", "+14155550102", "delivered", 1, "USD",
     "two\nlines"],
    ["fall", "SM3", dt.datetime(2026, 3, 2), "+14155550103", "failed", 0.0075, "USD", ""],
]


def workbook(path, sheets: dict[str, list[list]], blank_top: int = 0):
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for title, table in sheets.items():
        ws = wb.create_sheet(title)
        for _ in range(blank_top):
            ws.append([])
        for r in table:
            ws.append(r)
    wb.save(path)
    return path


def as_csv(table: list[list]) -> str:
    import csv
    import io
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    for r in table:
        w.writerow(["2026-03-01 09:30:00" if v == GOOD[0][2] else
                    "2026-03-02" if v == GOOD[2][2] else v for v in r])
    return out.getvalue()


def stored(store: Store) -> list[tuple]:
    return rows(store, "SELECT p.name, m.message_key, m.sent_at, m.recipient, m.status, "
                       "m.cost_micros, m.currency, m.country FROM messages m JOIN campaigns p "
                       "ON p.id = m.campaign_id ORDER BY m.message_key")


def test_a_sheet_imports_as_its_csv_would(tmp_path, write):
    """The same rows, values and figures as the CSV saved from the sheet; a phone number
    typed as a number, a whole number, a date and a date-time cell read as a person sees
    them."""
    xlsx = workbook(tmp_path / "log.xlsx", {"Log": [HEADER] + GOOD})
    a, b = Store(tmp_path / "a.db"), Store(tmp_path / "b.db")
    r = import_file(a, xlsx)
    assert (r.rows_new, r.rows_rejected, r.file) == (3, 0, "log.xlsx")
    assert "sheet 'Log'" in r.summary()
    import_file(b, write("log.csv", as_csv([HEADER] + GOOD)))
    assert stored(a) == stored(b) and len(stored(a)) == 3
    assert rows(a, "SELECT cost_micros FROM messages WHERE message_key = 'SM2'") == [(1_000_000,)]
    for s in (a, b):
        assert engine.report(s, "spring", with_benchmarks=False).as_json()["metrics"][
            "delivery_rate"]["value"] == 1.0
    # the file's own name is what the imports table keeps
    assert rows(a, "SELECT file FROM imports") == [(str(xlsx),)]


def test_bad_rows_are_named_by_the_row_the_sheet_shows(tmp_path):
    """Blank rows above the header and between rows, and a cell over two lines, do not
    move the numbers: they are the spreadsheet's rows."""
    table = [HEADER, GOOD[1], [], ["spring", "SM4", "not a time", "+14155550104",
                                   "delivered", 1, "USD", "a\nb\nc"],
             ["spring", "SM5", "2026-03-01T10:00:00Z", "+14155550105", "lost", 1, "USD", ""]]
    xlsx = workbook(tmp_path / "bad.xlsx", {"Sheet1": table}, blank_top=2)
    store = Store(tmp_path / "k.db")
    with pytest.raises(ImportRejected) as e:
        import_file(store, xlsx)
    # header on row 3, SM2 on 4 (its body over two lines), blank 5, SM4 on 6, SM5 on 7
    assert [(x.line, x.column) for x in e.value.errors] == [(6, "sent_at"), (7, "status")]
    assert rows(store, "SELECT COUNT(*) FROM messages") == [(0,)]
    r = import_file(store, xlsx, skip_bad_rows=True)
    assert r.rows_new == 1 and [x.line for x in r.errors] == [6, 7]


def test_the_sheet_is_chosen_by_name_or_number(tmp_path, write):
    xlsx = workbook(tmp_path / "two.xlsx", {"Notes": [["just", "notes"]],
                                             "Sends": [HEADER] + GOOD})
    store = Store(tmp_path / "k.db")
    with pytest.raises(ImportRejected):         # the first sheet holds no events
        import_file(store, xlsx)
    with pytest.raises(ImportRejected) as e:
        import_file(store, xlsx, sheet="Missing")
    assert "has no sheet 'Missing' (its sheets: 'Notes', 'Sends')" in str(e.value)
    assert import_file(store, xlsx, sheet="sends", dry_run=True).rows_new == 3
    assert import_file(store, xlsx, sheet="2").rows_new == 3
    with pytest.raises(ImportRejected) as e:
        import_file(store, write("x.csv", as_csv([HEADER] + GOOD)), sheet="Sends")
    assert "not a spreadsheet" in str(e.value)


def test_an_empty_or_damaged_workbook_is_refused_in_one_line(tmp_path):
    store = Store(tmp_path / "k.db")
    empty = workbook(tmp_path / "empty.xlsx", {"Sheet1": []})
    with pytest.raises(ImportRejected) as e:
        import_file(store, empty)
    assert "is empty" in str(e.value)
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(empty.read_bytes()[:200])     # a zip cut short
    with pytest.raises(ImportRejected) as e:
        import_file(store, broken)
    assert "\n" not in str(e.value)


def test_the_command_line_takes_a_sheet(tmp_path):
    xlsx = workbook(tmp_path / "two.xlsx", {"Notes": [["x"]], "Sends": [HEADER] + GOOD})
    db = tmp_path / "k.db"
    out = subprocess.run([sys.executable, "-m", "bot.cli", "import", "--db", str(db),
                          "--sheet", "Sends", str(xlsx)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "two.xlsx: imported 3 new rows (events, sheet 'Sends')" in out.stdout


# -- named mappings ----------------------------------------------------------------------------

MAP = """[source]
format = "events"
[columns]
campaign = "Campaign"
message_id = "Sid"
sent_at = "Sent"
recipient = "To"
status = "Status"
"""


def test_a_named_mapping_is_kept_checked_and_used(tmp_path, write):
    db = tmp_path / "k.db"
    store = Store(db)
    with pytest.raises(MappingError):            # a broken file is refused, nothing kept
        named.add(db, "sends", write("bad.toml", "[columns\n"))
    assert named.listing(db) == []
    got = named.add(db, "sends", write("m.toml", MAP))
    assert got.path == tmp_path / "mappings" / "sends.toml" and got.format == "events"
    with pytest.raises(MappingError):
        named.add(db, "sends", write("m.toml", MAP))           # exists: only with replace
    named.add(db, "sends", write("m.toml", MAP), replace=True)
    csv_text = ("Campaign,Sid,Sent,To,Status\n"
                "spring,SM1,2026-03-01T09:00:00Z,+14155550101,delivered\n")
    assert import_file(store, write("s.csv", csv_text), mapping="sends").rows_new == 1
    xlsx = workbook(tmp_path / "s.xlsx", {"S": [["Campaign", "Sid", "Sent", "To", "Status"],
                                                 ["spring", "SM2", "2026-03-01T09:00:00Z",
                                                  "+14155550102", "sent"]]})
    assert import_file(store, xlsx, mapping="sends").rows_new == 1
    with pytest.raises(ImportRejected) as e:
        import_file(store, write("s2.csv", csv_text), mapping="nope")
    assert "no named mapping 'nope' (named mappings: sends)" in str(e.value)


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "", "x" * 65, "a b",
                                  "/etc/passwd", "..\\x"])
def test_a_mapping_name_never_reaches_outside_its_folder(tmp_path, name):
    with pytest.raises(MappingError):
        named.path_of(tmp_path / "k.db", name)


def test_kpi_mapping_list(tmp_path, write):
    store = Store(tmp_path / "k.db")
    r = run("mapping list", Context(store))
    assert r.ok and "No named mappings yet" in r.text and r.data["mappings"] == []
    named.add(store.path, "sends", write("m.toml", MAP))
    (tmp_path / "mappings" / "broken.toml").write_text("[columns\n")
    r = run("mapping", Context(store))
    assert "`sends`: events rows" in r.text
    assert "`broken`: cannot be read" in r.text
    assert [m["name"] for m in r.data["mappings"]] == ["broken", "sends"]
    assert not run("mapping add x", Context(store)).ok


def test_an_old_format_xls_workbook(tmp_path, write):
    """XLS (the format before 2007) through xlrd: dates are numbers there, read back as
    the dates they show."""
    xlwt = pytest.importorskip("xlwt")
    book = xlwt.Workbook()
    ws = book.add_sheet("Log")
    when = xlwt.easyxf(num_format_str="YYYY-MM-DD HH:MM:SS")
    for c, v in enumerate(HEADER):
        ws.write(0, c, v)
    for r, row in enumerate(GOOD, 1):
        for c, v in enumerate(row):
            if isinstance(v, dt.datetime):
                ws.write(r, c, v, when)
            else:
                ws.write(r, c, v)
    path = tmp_path / "old.xls"
    book.save(str(path))
    a, b = Store(tmp_path / "a.db"), Store(tmp_path / "b.db")
    assert import_file(a, path).rows_new == 3
    import_file(b, write("log.csv", as_csv([HEADER] + GOOD)))
    assert stored(a) == stored(b)


def test_a_header_name_over_two_lines_is_one_name(tmp_path):
    header = ["campaign", "message\nid", "sent_at", "recipient", "status"]
    xlsx = workbook(tmp_path / "h.xlsx", {"S": [header, ["spring", "SM1", "2026-03-01T09:00:00Z",
                                                         "+14155550101", "bogus"]]})
    with pytest.raises(ImportRejected) as e:
        import_file(Store(tmp_path / "k.db"), xlsx, format="events")
    assert [(x.line, x.column) for x in e.value.errors] == [(2, "status")]
