"""Bad input gets a clear error and loses nothing; the same rows twice count once."""
import codecs
import re

import pytest

from metrics.errors import ImportRejected
from metrics.importers import import_file

from .conftest import one, rows, table_counts

HEADER = "campaign,message_id,sent_at,recipient,status,direction,clicked\n"
GOOD = [
    "spring-sale,SM1,2026-03-01T09:00:00Z,+14155550132,delivered,outbound,1",
    "spring-sale,SM2,2026-03-01T09:01:00Z,+14155550133,delivered,outbound,0",
    "spring-sale,SM3,2026-03-01T09:02:00Z,+14155550134,failed,outbound,0",
]


def csv(*lines: str) -> str:
    return HEADER + "\n".join(lines) + "\n"


def rejected(store, path, **kw) -> str:
    before = table_counts(store)
    with pytest.raises(ImportRejected) as exc:
        import_file(store, path, **kw)
    assert table_counts(store) == before, "a rejected file must change nothing"
    return str(exc.value)


def test_strict_rejects_the_whole_file_naming_line_column_and_reason(store, write):
    p = write("bad.csv", csv(GOOD[0], "spring-sale,SM2,yesterday,+14155550133,delivered,outbound,0",
                             GOOD[2], "spring-sale,SM4,2026-03-01T09:03:00Z,+14155550135,lost,outbound,0",
                             "spring-sale,SM5,2026-03-01T09:04:00Z,+14155550136,sent,outbound,maybe"))
    msg = rejected(store, p)
    assert "3 bad rows out of 5; nothing was imported" in msg
    assert "line 3, column 'sent_at': " in msg
    assert "line 5, column 'status': unknown SMS status 'lost'" in msg
    assert "line 6, column 'clicked': 'maybe' is not a yes/no value" in msg
    assert "--skip-bad-rows" in msg


def test_skip_bad_rows_imports_the_good_and_reports_the_bad(store, write):
    p = write("bad.csv", csv(GOOD[0], "spring-sale,SM2,2026-03-01T09:01:00Z,not a number,delivered,outbound,0",
                             GOOD[2]))
    r = import_file(store, p, skip_bad_rows=True)
    assert (r.rows_in, r.rows_new, r.rows_rejected) == (3, 2, 1)
    assert [str(e) for e in r.errors] == [
        "line 3, column 'recipient': not a phone number (The string supplied did not seem to be a phone number)"]
    assert rows(store, "SELECT message_key FROM messages ORDER BY 1") == [("SM1",), ("SM3",)]
    assert rows(store, 'SELECT line, "column" FROM import_rejects') == [(3, "recipient")]
    assert one(store, "SELECT rows_in, rows_new, rows_rejected FROM imports") == (3, 2, 1)


def test_the_same_file_twice_counts_once(store, write):
    p = write("ok.csv", csv(*GOOD))
    first = import_file(store, p)
    second = import_file(store, p)
    assert (first.rows_new, second.rows_new, second.rows_existing) == (3, 0, 3)
    assert second.seen_before and "imported before" in second.warnings[0]
    assert one(store, "SELECT COUNT(*) FROM messages")[0] == 3
    assert one(store, "SELECT COUNT(*) FROM imports")[0] == 2


def test_overlapping_exports_count_each_message_once_and_keep_the_latest_status(store, write):
    import_file(store, write("a.csv", csv(*GOOD[:2])))
    later = GOOD[1].replace("delivered,outbound,0", "delivered,outbound,1")
    r = import_file(store, write("b.csv", csv(later, GOOD[2])))
    assert (r.rows_new, r.rows_existing) == (1, 1)
    assert rows(store, "SELECT message_key, clicked FROM messages ORDER BY 1") == [
        ("SM1", 1), ("SM2", 1), ("SM3", 0)]


def test_rows_without_ids_count_once_but_true_duplicates_are_kept(store, write):
    header = "campaign,sent_at,recipient,status\n"
    body = ("promo,2026-03-01T09:00:00Z,+14155550132,delivered\n"
            "promo,2026-03-01T09:00:00Z,+14155550132,delivered\n"     # sent twice, same second
            "promo,2026-03-01T09:00:00Z,+14155550133,delivered\n")
    p = write("noid.csv", header + body)
    assert import_file(store, p).rows_new == 3
    assert import_file(store, p).rows_new == 0
    assert one(store, "SELECT COUNT(*) FROM messages")[0] == 3


def test_empty_file(store, write):
    assert "the file is empty (0 bytes)" in rejected(store, write("e.csv", ""))


def test_header_only(store, write):
    assert "has a header but no data rows" in rejected(store, write("h.csv", HEADER))


def test_missing_file_and_folder(store, tmp_path):
    assert "file not found" in rejected(store, tmp_path / "nope.csv")
    assert "is a folder" in rejected(store, tmp_path)


def test_utf8_bom_and_crlf_are_read_cleanly(store, write):
    p = write("bom.csv", csv("весна,SM1,2026-03-01T09:00:00Z,+14155550132,delivered,outbound,1"),
              newline="\r\n", bom=codecs.BOM_UTF8)
    r = import_file(store, p)
    assert (r.rows_new, r.encoding) == (1, "utf-8-sig")
    assert one(store, "SELECT name FROM campaigns")[0] == "весна"   # no BOM in the name
    assert one(store, "SELECT status FROM messages")[0] == "delivered"   # no \r in values


def test_utf16_excel_export(store, write):
    p = write("u16.csv", csv(*GOOD).replace(",", "\t"), encoding="utf-16")
    r = import_file(store, p)
    assert r.rows_new == 3 and "UTF-16" in r.warnings[0]


def test_latin1_bytes_are_read_as_windows_1252_with_a_warning(store, write):
    p = write("l1.csv", csv("Frühjahr-Aktion,SM1,2026-03-01T09:00:00Z,+4915123456789,delivered,outbound,1"),
              encoding="latin-1")
    r = import_file(store, p)
    assert r.encoding == "cp1252" and "not valid UTF-8" in r.warnings[0]
    assert one(store, "SELECT name FROM campaigns")[0] == "Frühjahr-Aktion"


def test_missing_required_column(store, write):
    msg = rejected(store, write("m.csv", "campaign,message_id,recipient,status\nx,SM1,+14155550132,sent\n"),
                   format="events")
    assert "missing required column for the events format: sent_at" in msg


def test_duplicate_header(store, write):
    msg = rejected(store, write("d.csv", "campaign,sent_at,status,Status\nx,2026-03-01,sent,sent\n"))
    assert "the header names column 'Status' twice (as 'status')" in msg


def test_a_one_megabyte_field(store, write):
    big = "x" * 1_000_000
    p = write("big.csv", csv(GOOD[0], f'spring-sale,SM2,2026-03-01T09:01:00Z,+14155550133,delivered,outbound,"{big}"'))
    msg = rejected(store, p)
    assert "line 3, column 'clicked': value is 1,000,000 characters long; the limit is 65,536" in msg
    r = import_file(store, p, skip_bad_rows=True)
    assert (r.rows_new, r.rows_rejected) == (1, 1)


def test_oversized_values_deep_in_a_file_are_each_named(store, write):
    """The reader hands lines to the CSV parser a block at a time and measures values only
    near a long line or in a record over several lines: an oversized value anywhere, on
    one line or spread over many, is still caught, and the rows around it land."""
    lines = [f"spring-sale,SM{i},2026-03-01T09:{i % 60:02d}:00Z,+14155550133,delivered,outbound,0"
             for i in range(6000)]
    lines[3000] = lines[3000][:-1] + '"' + "y" * 70_000 + '"'
    lines[4500] = lines[4500][:-1] + '"' + "z\n" * 40_000 + '"'
    p = write("deep.csv", csv(*lines))
    r = import_file(store, p, skip_bad_rows=True)
    assert [(e.line, e.column) for e in r.errors] == [(3002, "clicked"), (4502, "clicked")]
    assert "value is 80,000 characters long" in r.errors[1].reason
    assert (r.rows_new, r.rows_rejected) == (5998, 2)


def test_wrong_number_of_fields(store, write):
    msg = rejected(store, write("w.csv", csv(GOOD[0], "spring-sale,SM2,2026-03-01T09:01:00Z")))
    assert "line 3: has 3 fields but the header has 7" in msg


def test_unknown_format_is_named(store, write):
    msg = rejected(store, write("u.csv", "age;job;y\n30;admin.;no\n"))
    assert "could not tell the format from the header (age, job, y)" in msg
    assert "--map" in msg


def test_mapping_that_names_a_missing_column(store, write, tmp_path):
    mp = tmp_path / "m.toml"
    mp.write_text('[constants]\ncampaign = "x"\nsent_at = "2026-01-01"\nstatus = "sent"\n'
                  '[columns]\nconverted = "outcome"\n')
    msg = rejected(store, write("f.csv", "age,y\n30,no\n"), mapping=mp)
    assert "the mapping's [columns] converted = \"outcome\", but the file has no column 'outcome' " \
           "(it has: age, y)" in msg


def test_value_with_no_mapping(store, write, tmp_path):
    mp = tmp_path / "m.toml"
    mp.write_text('[constants]\ncampaign = "x"\nsent_at = "2026-01-01"\nstatus = "sent"\n'
                  '[columns]\nconverted = "y"\n[values.converted]\nyes = true\nno = false\n')
    msg = rejected(store, write("f.csv", "age,y\n30,no\n31,maybe\n"), mapping=mp)
    assert "line 3, column 'y': value 'maybe' has no mapping in [values.converted] (mapped: no, yes)" in msg


def test_broken_mapping_files(store, write, tmp_path):
    f = write("f.csv", "age,y\n30,no\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[columns\n")
    assert "bad.toml is not valid TOML" in rejected(store, f, mapping=bad)
    bad.write_text('[columns]\nrecipeint = "phone"\n')
    assert "[columns] 'recipeint' is not a canonical events field" in rejected(store, f, mapping=bad)
    assert "not found" in rejected(store, f, mapping=tmp_path / "none.toml")


def test_dry_run_changes_nothing(store, write):
    before = table_counts(store)
    r = import_file(store, write("ok.csv", csv(*GOOD)), dry_run=True)
    assert r.rows_new == 3 and table_counts(store) == before


def test_parallel_parser_reports_errors_the_same_way(store, write):
    p = write("bad.csv", csv(GOOD[0], "spring-sale,SM2,2026-03-01T09:01:00Z,+14155550133,lost,outbound,0"))
    msg = rejected(store, p, parallel=True)
    assert "line 3, column 'status': unknown SMS status 'lost'" in msg
    r = import_file(store, p, parallel=True, skip_bad_rows=True)
    assert (r.rows_new, r.rows_rejected) == (1, 1)


def test_phone_numbers_are_never_stored(tmp_path, write):
    """Scan the database files' bytes for every number in any spelling."""
    from metrics.store import Store
    s = Store(tmp_path / "pii.db")
    import_file(s, write("ok.csv", csv(*GOOD)))
    import_file(s, write("t.csv", "From,To,Body,Status,SentDate,Sid,Direction\n"
                                  "+14155550132,+15005550006,STOP,received,2026-03-01T10:00:00Z,SM9,inbound\n"),
                campaign="spring-sale")
    s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("pii.db*"))
    for number in ("4155550132", "4155550133", "4155550134", "5005550006"):
        assert number.encode() not in blob
        assert number.encode("utf-16-le") not in blob
    assert re.search(rb"\+1\d{10}", blob) is None


def test_rejected_rows_create_no_campaign(store, write):
    p = write("b.csv", csv("ghost-campaign,SM1,2026-03-01T09:00:00Z,+14155550132,lost,outbound,0",
                           GOOD[0]))
    r = import_file(store, p, skip_bad_rows=True)
    assert (r.rows_new, r.campaigns) == (1, ["spring-sale"])
    assert rows(store, "SELECT name FROM campaigns") == [("spring-sale",)]


def test_parser_process_ignores_a_metrics_folder_in_the_working_directory(store, write, tmp_path,
                                                                         monkeypatch):
    """A user's folder may well hold its own `metrics` package; the parser must not load it."""
    other = tmp_path / "elsewhere"
    (other / "metrics").mkdir(parents=True)
    (other / "metrics" / "__init__.py").write_text("raise ImportError('the wrong metrics')\n")
    monkeypatch.chdir(other)
    r = import_file(store, write("ok.csv", csv(*GOOD)), parallel=True)
    assert r.rows_new == 3


def test_reimport_leaves_identical_rows_alone_and_updates_changed_ones(store, write):
    first = import_file(store, write("a.csv", csv(*GOOD)))
    changed = GOOD[2].replace(",failed,", ",delivered,")
    second = import_file(store, write("b.csv", csv(GOOD[0], GOOD[1], changed)))
    assert (second.rows_new, second.rows_existing) == (0, 3)
    assert rows(store, "SELECT message_key, status, import_id FROM messages ORDER BY 1") == [
        ("SM1", "delivered", first.import_id), ("SM2", "delivered", first.import_id),
        ("SM3", "delivered", second.import_id)]


def test_bulk_load_rebuilds_the_time_index_and_a_rejection_keeps_it(store, write, monkeypatch):
    import metrics.importers.run as run
    monkeypatch.setattr(run, "SUSPEND_INDEX_ROWS", 1)
    index_sql = "SELECT sql FROM sqlite_schema WHERE name = 'messages_campaign_time'"
    want = one(store, index_sql)
    bad = write("bad.csv", csv(GOOD[0], GOOD[1].replace("delivered", "lost")))
    rejected(store, bad)
    assert one(store, index_sql) == want
    r = import_file(store, write("ok.csv", csv(*GOOD)))
    assert r.rows_new == 3 and one(store, index_sql) == want
    plan = rows(store, "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM messages "
                       "WHERE campaign_id = 1 AND sent_at > 0")
    assert "messages_campaign_time" in str(plan)


def test_an_oversized_value_spread_over_many_lines(store, write):
    big = "word\n" * 20_000          # 100,000 characters, no line longer than 5
    p = write("multi.csv", csv(GOOD[0], f'spring-sale,SM2,2026-03-01T09:01:00Z,+14155550133,delivered,outbound,"{big}"', GOOD[2]))
    msg = rejected(store, p)
    assert "line 3, column 'clicked': value is 100,000 characters long" in msg
    r = import_file(store, p, skip_bad_rows=True)
    assert (r.rows_new, r.rows_rejected) == (2, 1)
    assert r.errors[0].line == 3


def test_foreign_keys_are_back_on_after_any_import(store, write):
    import_file(store, write("ok.csv", csv(*GOOD)))
    assert one(store, "PRAGMA foreign_keys")[0] == 1
    rejected(store, write("bad.csv", csv(GOOD[1].replace("delivered", "lost"))))
    assert one(store, "PRAGMA foreign_keys")[0] == 1
    assert rows(store, "PRAGMA foreign_key_check") == []


@pytest.mark.parametrize("parallel", [False, True])
def test_bad_rows_anywhere_in_a_large_batch_are_each_named(store, write, parallel):
    """Batches are read column by column and a bad batch is halved until its bad rows
    stand alone: each is named with its own line and first bad column, in line order,
    and every good row around them lands exactly once, with its own content key."""
    lines = [f"spring-sale,,2026-03-01T09:{i % 60:02d}:00Z,+1415555{i % 10000:04d},delivered,"
             f"outbound,{i % 2}" for i in range(5000)]
    lines[1] = lines[2]                                   # a true duplicate without an id
    bad = {6: ("status", "lost"), 2500: ("recipient", "+999"), 2501: ("sent_at", "soon"),
           4999: ("clicked", "maybe")}
    for i, (col, value) in bad.items():
        fields = lines[i].split(",")
        fields[HEADER.strip().split(",").index(col)] = value
        lines[i] = ",".join(fields)
    path = write("many.csv", csv(*lines))
    msg = rejected(store, path, parallel=parallel)
    assert "4 bad rows out of 5,000" in msg
    for i, (col, _) in bad.items():
        assert f"line {i + 2}, column '{col}'" in msg
    assert msg.index("line 8,") < msg.index("line 2502,") < msg.index("line 2503,") < msg.index("line 5001,")
    r = import_file(store, path, skip_bad_rows=True, parallel=parallel)
    assert (r.rows_in, r.rows_new, r.rows_rejected) == (5000, 4996, 4)
    assert [(e.line, e.column) for e in r.errors] == [(i + 2, c) for i, (c, _) in bad.items()]
    assert one(store, "SELECT COUNT(*), SUM(clicked) FROM messages") == (4996, sum(
        i % 2 for i in range(5000) if i not in bad and i != 1) + 0)
    keys = [k for (k,) in rows(store, "SELECT message_key FROM messages WHERE message_key "
                                      "LIKE '%:2'")]
    assert len(keys) == 1   # the duplicate is the second of its content
    assert import_file(store, path, skip_bad_rows=True, parallel=parallel).rows_new == 0
