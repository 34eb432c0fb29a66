import os
import stat
import sqlite3

import pytest

from metrics.errors import HashKeyMismatch
from metrics.store import Store

from .conftest import one


def test_wal_foreign_keys_and_schema(store):
    assert one(store, "PRAGMA journal_mode")[0] == "wal"
    assert one(store, "PRAGMA foreign_keys")[0] == 1
    tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
    assert {"campaigns", "messages", "calls", "daily", "imports", "import_rejects",
            "attribute_names", "settings"} <= tables


def test_reopening_applies_no_migration_twice(tmp_path):
    Store(tmp_path / "a.db").close()
    s = Store(tmp_path / "a.db")
    applied = s.conn.execute("SELECT name FROM _sqlite_migrations").fetchall()
    assert [r[0] for r in applied] == ["m001_core", "m002_rollups", "m003_alerts", "m004_digests",
                                       "m005_live", "m006_attribution", "m007_credits"]


def test_transaction_rolls_back_everything(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            store.campaign_id(conn, "spring-sale", "sms")
            raise RuntimeError("boom")
    assert one(store, "SELECT COUNT(*) FROM campaigns")[0] == 0


def test_foreign_keys_are_enforced(store):
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as conn:
            conn.execute("INSERT INTO messages(message_key, campaign_id, sent_at, direction, "
                         "status) VALUES ('x', 99, 0, 'outbound', 'sent')")


def test_campaign_names_match_case_and_unicode_insensitively(store):
    with store.transaction() as conn:
        a = store.campaign_id(conn, "Spring-Sale", "sms")
        b = store.campaign_id(conn, "spring-sale", "sms")
        c = store.campaign_id(conn, "ВЕСЕННЯЯ-АКЦИЯ", "sms")
        d = store.campaign_id(conn, "весенняя-акция", "call")
        e = store.campaign_id(conn, "ＳＰＲＩＮＧ-sale", None)   # full-width letters
    assert a == b == e and c == d and a != c
    chans = dict(store.conn.execute("SELECT name, channel FROM campaigns"))
    assert chans == {"Spring-Sale": "sms", "ВЕСЕННЯЯ-АКЦИЯ": "mixed"}


def test_hash_key_file_is_created_once_with_0600(tmp_path):
    s = Store(tmp_path / "k.db")
    key = s.hash_key()
    path = tmp_path / ".kpibot-hash-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().strip() == key and len(key) == 64
    s.close()
    assert Store(tmp_path / "k.db").hash_key() == key


def test_a_different_key_is_refused(tmp_path, monkeypatch):
    Store(tmp_path / "k.db").hash_key()
    monkeypatch.setenv("KPIBOT_HASH_KEY", "another key")
    with pytest.raises(HashKeyMismatch, match="KPIBOT_HASH_KEY"):
        Store(tmp_path / "k.db").hash_key()


def test_key_from_environment_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KPIBOT_HASH_KEY", "team secret")
    assert Store(tmp_path / "k.db").hash_key() == b"team secret"
    assert not (tmp_path / ".kpibot-hash-key").exists()


def test_database_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KPIBOT_DB", str(tmp_path / "env.db"))
    s = Store.open()
    assert s.path == tmp_path / "env.db" and os.path.exists(tmp_path / "env.db")


def test_an_in_memory_database_writes_no_key_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Store(":memory:")
    assert len(s.hash_key()) == 64
    assert list(tmp_path.iterdir()) == []
