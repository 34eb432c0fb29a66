from __future__ import annotations

import os
from pathlib import Path

import pytest

from metrics.store import Store

SHARED = Path(__file__).resolve().parents[2] / "shared"
BANK = SHARED / "data" / "bank-marketing" / "bank-full.csv"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No test sees the settings of the shell it runs in: every KPIBOT_* and Slack or
    Twilio variable is cleared (a test that needs one sets it)."""
    for name in list(os.environ):
        if name.startswith(("KPIBOT_", "SLACK_", "TWILIO_")) and name != "KPIBOT_TEST":
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "kpibot.db")
    yield s
    s.close()


@pytest.fixture
def write(tmp_path):
    """write(name, text, encoding='utf-8', newline='\\n') -> Path of a CSV file."""
    def _write(name: str, text: str, encoding: str = "utf-8", newline: str = "\n",
               bom: bytes = b"") -> Path:
        p = tmp_path / name
        body = text.lstrip("\n")
        if newline != "\n":
            body = body.replace("\n", newline)
        p.write_bytes(bom + body.encode(encoding))
        return p
    return _write


def rows(store: Store, sql: str, *params):
    return store.conn.execute(sql, params).fetchall()


def one(store: Store, sql: str, *params):
    return store.conn.execute(sql, params).fetchone()


def table_counts(store: Store) -> dict[str, int]:
    return {t: one(store, f"SELECT COUNT(*) FROM {t}")[0]
            for t in ("campaigns", "messages", "calls", "daily", "imports", "attribute_names")}


def bank_available() -> bool:
    return BANK.is_file()


os.environ.setdefault("KPIBOT_TEST", "1")


def assert_attribution_exact(store: Store) -> None:
    """Every conversion is credited as a from-scratch run would credit it, and every
    message and call holds the sum of the conversions credited to it."""
    from metrics import attribution
    from metrics.sources import SourcesFile
    codes = dict(SourcesFile().get().codes)
    with store.transaction(dry_run=True) as conn:
        assert attribution.credit(conn, "SELECT id FROM conversions", (), codes).changed == 0
    assert sorted(store.conn.execute("SELECT * FROM code_rollup").fetchall()) == sorted(
        store.conn.execute("SELECT campaign_id, credited_at - credited_at % 900 AS slot, "
                           "COUNT(*), SUM(COALESCE(revenue_micros, 0)) FROM conversions "
                           "WHERE how = 'code' AND NOT cancelled GROUP BY 1, 2").fetchall())
    assert attribution.uncredited_by_type(store.conn) == dict(store.conn.execute(
        "SELECT type, COUNT(*) FROM conversions WHERE how IS NULL AND NOT cancelled "
        "GROUP BY type").fetchall())
    for table, credits, link in (("messages", "message_credits", "message_id"),
                                 ("calls", "call_credits", "call_id")):
        assert store.conn.execute(f"""
            SELECT e.id, x.conversions, x.conversion_revenue_micros FROM {table} e
            LEFT JOIN {credits} x ON x.{link} = e.id
            WHERE (COALESCE(x.conversions, 0), COALESCE(x.conversion_revenue_micros, 0))
              IS NOT (SELECT COUNT(*) FILTER (WHERE NOT c.cancelled), COALESCE(SUM(CASE WHEN
                    c.cancelled THEN 0 ELSE COALESCE(c.revenue_micros, 0) END), 0)
                    FROM conversions c WHERE c.{link} = e.id)""").fetchall() == []
        # a row only for an event that has a conversion, and only for a stored event
        assert store.conn.execute(f"""
            SELECT COUNT(*) FROM {credits} x WHERE x.{link} NOT IN (SELECT id FROM {table})
            OR (x.conversions = 0 AND x.conversion_revenue_micros = 0
                AND x.conversions_named = 0 AND x.conversions_click = 0)""").fetchone()[0] == 0
