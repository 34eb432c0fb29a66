"""The importer's house rules: no import cycles, nothing global changed on import, the
delimiter sniffed by csv.Sniffer where it is sure, a bulk load that puts everything back,
and the public names where they always were."""
from __future__ import annotations

import ast
import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

from metrics.importers import import_file
from metrics.importers.source import CsvSource, _sniff_delimiter

from .conftest import one, rows

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "metrics" / "importers"

EVENTS = """campaign,message_id,sent_at,recipient,status,direction,body
spring,SM1,2026-03-01T09:00:00Z,+14155550132,delivered,outbound,Sale! Reply STOP to opt out
spring,SM2,2026-03-01T09:01:00Z,+14155550133,delivered,outbound,Sale! Reply STOP to opt out
spring,SM3,2026-03-02T10:00:00Z,+14155550132,received,inbound,STOP
spring,SM4,2026-03-02T10:00:00Z,+14155550133,received,inbound,Sunday too?
"""


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter on this checkout; it prints one JSON value."""
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
                          + code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


GLOBALS = """
import codecs, csv, json
def handlers():
    found = []
    for name in ("kpibot-latin1", "kpibot_latin1", "kpibot", "kpibot-latin-1", "latin1-fallback"):
        try:
            codecs.lookup_error(name)
            found.append(name)
        except LookupError:
            pass
    return found
"""


def test_importing_metrics_changes_nothing_global():
    state = _run(GLOBALS + """
import metrics.importers, metrics.engine, metrics.replies
from metrics.importers import (binding, bulk, child, fields, formats, mapping, parse, rows,
                               run, source, values, writer)
print(json.dumps({"limit": csv.field_size_limit(), "handlers": handlers()}))
""")
    assert state == {"limit": 131072, "handlers": []}


def test_reading_a_file_sets_what_reading_needs(tmp_path):
    """The importer sets the field size limit and the cp1252 fallback itself, when it
    opens a file; a byte cp1252 leaves undefined reads as Latin-1."""
    p = tmp_path / "w.csv"
    p.write_bytes(b"campaign,sent_at,status\ncaf\xe9\x81,2026-03-01,sent\n")
    state = _run(GLOBALS + f"""
from metrics.importers.source import CsvSource
src = CsvSource({str(p)!r})
got = [f for _, f in src.rows()]
print(json.dumps({{"limit": csv.field_size_limit(), "handlers": handlers(),
                  "encoding": src.encoding, "rows": got}}))
""")
    assert state == {"limit": 1 << 30, "handlers": ["kpibot-latin1"], "encoding": "cp1252",
                     "rows": [["café\x81", "2026-03-01", "sent"]]}


def test_the_cli_prepares_csv_reading_where_it_starts(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import metrics.importers.source as source
    from bot.cli import main
    calls = []
    monkeypatch.setattr(source, "prepare_csv_reading", lambda: calls.append(1))
    r = CliRunner().invoke(main, ["list", "--db", str(tmp_path / "kpibot.db")])
    assert r.exit_code == 0, r.output
    assert calls == [1]


def _imports(path: Path) -> set[str]:
    """The metrics.importers modules (and metrics.replies) a module imports, anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
            out.update(n.split(".")[0] for n in names)
        elif isinstance(node, ast.ImportFrom) and node.module \
                and node.module.startswith("metrics.importers."):
            out.add(node.module.split(".")[2])
    return out


def test_the_importer_modules_import_each_other_without_cycles():
    graph = {p.stem: _imports(p) - {p.stem} for p in PACKAGE.glob("*.py")
             if p.stem != "__init__"}
    done: set[str] = set()

    def visit(mod: str, path: tuple[str, ...]) -> None:
        assert mod not in path, "import cycle: " + " -> ".join(path + (mod,))
        if mod in done or mod not in graph:
            return
        for dep in sorted(graph[mod]):
            visit(dep, path + (mod,))
        done.add(mod)
    for mod in sorted(graph):
        visit(mod, ())
    assert graph["fields"] == set(), "fields.py is the leaf everything else builds on"


def test_public_names_stay_where_they_were():
    from metrics.importers import FORMATS, attribute_replies, detect, load_mapping  # noqa: F401
    from metrics.importers.formats import (CALL_COLUMNS, CALL_FIELDS, DAILY_COLUMNS,  # noqa: F401
                                           MESSAGE_COLUMNS, MESSAGE_FIELDS, NULL, Context,
                                           RowProblem, bind, campaign_name)
    from metrics.importers.source import normalise_header  # noqa: F401
    import metrics.importers.run as run
    import metrics.replies as replies
    assert run.attribute_replies is replies.attribute_replies is attribute_replies
    assert detect(["Campaign", "Sent At", "Status"]) == "events"


@pytest.mark.parametrize("head, want", [
    (["campaign,sent_at,status\n", "a,2026-03-01,sent\n"], ","),
    (["campaign;sent_at;status\n", "a;2026-03-01;sent\n"], ";"),
    (["campaign\tsent_at\tstatus\n", "a\t2026-03-01\tsent\n"], "\t"),
    (["campaign|sent_at|status\n", "a|2026-03-01|sent\n"], "|"),
    (['"age";"job";"y"\n', '58;"management";"no"\n'], ";"),
    (['"a;b","c","d"\n', "1,2,3\n"], ","),                   # a delimiter inside quotes
    (["campaign\n", "spring\n"], ","),                        # one column: Sniffer raises
    (["a;b;c\n"], ";"),                                       # a header and no rows
    # decimal commas in a semicolon file: the Sniffer finds both consistent and would
    # take the comma by its preference; the count rule decides
    (["date;campaign;cost, EUR\n", "2026-03-01;a;1,5\n", "2026-03-02;b;2,5\n"], ";"),
    # as many commas as semicolons in the header, but only the semicolon fits the rows:
    # the Sniffer is sure (the count rule alone took the comma)
    (["Name, first;Name, last;Phone\n", "Ann;Lee;+1\n", "Bo;Ng;+2\n"], ";"),
])
def test_the_delimiter_is_sniffed(head, want):
    assert _sniff_delimiter(head) == want


def test_the_source_sniffs_on_the_header_and_the_lines_after_it(tmp_path):
    p = tmp_path / "eu.csv"
    p.write_text("Kampagne;Zeit;Kosten, EUR\n" + "Frühling;01.03.2026;0,05\n" * 50,
                 encoding="utf-8")
    src = CsvSource(p)
    assert src.delimiter == ";" and src.header == ["Kampagne", "Zeit", "Kosten, EUR"]


@pytest.mark.parametrize("parallel", [False, True])
def test_a_bulk_load_puts_everything_back(store, write, monkeypatch, parallel):
    import metrics.importers.run as run
    monkeypatch.setattr(run, "SUSPEND_INDEX_ROWS", 1)   # drop and rebuild the indexes too
    settings = "PRAGMA cache_size", "PRAGMA threads", "PRAGMA foreign_keys"
    before = [one(store, s)[0] for s in settings]
    assert gc.isenabled()
    r = import_file(store, write("ev.csv", EVENTS), parallel=parallel)
    assert r.rows_new == 4
    assert [one(store, s)[0] for s in settings] == before and gc.isenabled()
    with pytest.raises(Exception):
        import_file(store, write("bad.csv", EVENTS.replace("delivered", "lost")))
    assert [one(store, s)[0] for s in settings] == before and gc.isenabled()
    assert one(store, "SELECT COUNT(*) FROM sqlite_schema WHERE name = "
                      "'messages_campaign_time'")[0] == 1


def test_replies_are_attributed_by_metrics_replies(store, write):
    from metrics.replies import attribute_replies
    import_file(store, write("ev.csv", EVENTS))
    got = rows(store, "SELECT i.message_key, o.message_key, o.opted_out, o.replied "
                      "FROM messages i JOIN messages o ON o.id = i.reply_to ORDER BY 1")
    assert got == [("SM3", "SM1", 1, 0), ("SM4", "SM2", 0, 1)]
    with store.transaction() as conn:
        assert attribute_replies(conn) == 0    # nothing left open
