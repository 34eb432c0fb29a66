"""The real telemarketing campaign (UCI Bank Marketing, bank-full.csv) through the example
mapping. Facts checked by hand: 45,211 calls, 5,289 subscriptions (y = yes)."""
from pathlib import Path

import pytest

from metrics.importers import import_file

from .conftest import BANK, bank_available, one, rows

MAPPING = Path(__file__).resolve().parents[1] / "examples" / "bank-marketing.toml"

pytestmark = pytest.mark.skipif(not bank_available(),
                                reason="../shared/data/bank-marketing is not beside this clone")


def test_bank_marketing_imports_through_the_example_mapping(store):
    r = import_file(store, BANK, mapping=MAPPING)
    assert (r.rows_in, r.rows_new, r.rows_rejected) == (45_211, 45_211, 0)
    assert r.campaigns == ["bank-2008"]
    assert one(store, "SELECT COUNT(*), SUM(converted), SUM(status = 'completed') FROM calls") == \
        (45_211, 5_289, 45_211)
    assert one(store, "SELECT channel FROM campaigns")[0] == "call"
    # durations in seconds, summed by hand with awk -F';' '{s+=$12} END {print s}'
    assert one(store, "SELECT SUM(duration_s), MAX(duration_s) FROM calls") == (11_671_811.0, 4_918.0)
    # unmapped columns are attributes usable with `by job`
    names = {n for (n,) in rows(store, "SELECT name FROM attribute_names")}
    assert {"job", "marital", "education", "contacts", "poutcome"} <= names and "y" not in names
    students = one(store, """SELECT COUNT(*), SUM(converted) FROM calls
                             WHERE json_extract(attrs, '$.job') = 'student'""")
    assert students == (938, 269)


def test_bank_marketing_reimport_counts_once(store):
    import_file(store, BANK, mapping=MAPPING)
    again = import_file(store, BANK, mapping=MAPPING)
    assert (again.rows_new, again.rows_existing) == (0, 45_211)
    assert one(store, "SELECT COUNT(*) FROM calls")[0] == 45_211
