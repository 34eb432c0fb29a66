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


def test_bank_conversion_rate_by_contact_and_by_month(store):
    """Subscriptions / answered calls per group, counted by hand with awk over bank-full.csv
    (every call in the file reached the client, so answered = calls)."""
    from metrics import engine
    import_file(store, BANK, mapping=MAPPING)
    rep = engine.report(store, "bank-2008")
    m = rep.current["call"].metrics
    assert (m["conversion_rate"].numerator, m["conversion_rate"].denominator) == (5_289, 45_211)
    assert m["avg_call_duration"].value == pytest.approx(11_671_811 / 45_211)

    def rates(by):
        return {k: (s["call"].metrics["conversion_rate"].numerator,
                    s["call"].metrics["conversion_rate"].denominator)
                for k, s in engine.report(store, "bank-2008", by=by).breakdown}
    assert rates("contact") == {"cellular": (4_369, 29_285), "unknown": (530, 13_020),
                                "telephone": (390, 2_906)}
    months = rates("month")
    assert months["may"] == (925, 13_766) and months["mar"] == (248, 477)
    assert months["oct"] == (323, 738) and months["dec"] == (100, 214)
    assert sum(n for n, _ in months.values()) == 5_289 and len(months) == 12
