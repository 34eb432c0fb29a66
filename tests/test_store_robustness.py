"""The store under stress: first use by several processes at once, a database from a newer
kpibot, a full disk, read-only files and folders. Each failure is one clear line."""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from .conftest import one, table_counts

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 4
ROUNDS = 10
ROWS = 30


def _events(worker: int, rows: int = ROWS) -> str:
    """One worker's file: its own message ids, a shared and an own campaign, and phone
    numbers shared with the other workers (their hashes must agree)."""
    lines = ["campaign,message_id,sent_at,recipient,status"]
    for i in range(rows):
        camp = "spring-sale" if i % 2 else f"own-{worker}"
        lines.append(f"{camp},SM{worker}x{i},2026-03-01T09:{i % 60:02d}:00Z,"
                     f"+1415555{1000 + i},delivered")
    return "\n".join(lines) + "\n"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIBOT_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


# Each worker imports its own file into a fresh database, round after round; a barrier of
# files lines the workers up so that they open and migrate the same new file together.
WORKER = textwrap.dedent("""
    import os, sys, time, traceback
    from pathlib import Path
    from metrics.importers import import_file
    from metrics.store import Store
    root, me, rounds, workers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    failed = 0
    for r in range(rounds):
        folder = root / f"r{r}"
        (folder / f"ready-{me}").touch()
        deadline = time.monotonic() + 20
        while len(list(folder.glob("ready-*"))) < workers and time.monotonic() < deadline:
            time.sleep(0.0005)
        try:
            store = Store.open(folder / "kpibot.db")
            try:
                import_file(store, folder / f"ev{me}.csv")
            finally:
                store.close()
        except Exception:
            failed += 1
            print(f"round {r}, worker {me}: " + traceback.format_exc().strip().splitlines()[-1])
    sys.exit(1 if failed else 0)
""")


def _check_round(folder: Path, workers: int) -> None:
    """Every worker's rows landed once, under one schema and one hash key."""
    from metrics.store import MIGRATIONS, Store
    key = (folder / ".kpibot-hash-key").read_bytes().strip()
    assert len(key) == 64
    s = Store(folder / "kpibot.db")
    try:
        applied = [r[0] for r in s.conn.execute("SELECT name FROM _sqlite_migrations")]
        assert applied == [fn.__name__ for fn in MIGRATIONS]
        assert one(s, "SELECT COUNT(*) FROM messages")[0] == workers * ROWS
        assert one(s, "SELECT COUNT(*) FROM imports WHERE finished_at IS NOT NULL")[0] == workers
        assert one(s, "SELECT COUNT(*) FROM campaigns")[0] == workers + 1
        # the same numbers hash alike in every worker's rows: one key for all of them
        assert one(s, "SELECT COUNT(DISTINCT recipient) FROM messages")[0] == ROWS
        fingerprint = hashlib.sha256(b"kpibot-key-fingerprint:" + key).hexdigest()[:16]
        assert s.get_setting("hash_key_fingerprint") == fingerprint
        assert s.hash_key() == key
    finally:
        s.close()


def test_processes_starting_together_on_a_new_database_all_succeed(tmp_path):
    for r in range(ROUNDS):
        folder = tmp_path / f"r{r}"
        folder.mkdir()
        for w in range(WORKERS):
            (folder / f"ev{w}.csv").write_text(_events(w))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(w), str(ROUNDS),
                               str(WORKERS)], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for w in range(WORKERS)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(outputs)
    for r in range(ROUNDS):
        _check_round(tmp_path / f"r{r}", WORKERS)


def test_kpibot_import_started_four_times_at_once_on_a_new_database(tmp_path):
    for w in range(WORKERS):
        (tmp_path / f"ev{w}.csv").write_text(_events(w))
    procs = [subprocess.Popen([sys.executable, "-m", "bot.cli", "import", f"ev{w}.csv"],
                              cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for w in range(WORKERS)]
    results = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert out.startswith("✓ ev"), out
    _check_round(tmp_path, WORKERS)


KEY_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from metrics.errors import HashKeyMismatch
    from metrics.store import Store
    root, me, rounds, workers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    for r in range(rounds):
        folder = root / f"k{r}"
        (folder / f"ready-{me}").touch()
        deadline = time.monotonic() + 20
        while len(list(folder.glob("ready-*"))) < workers and time.monotonic() < deadline:
            time.sleep(0.0002)
        try:
            s = Store(folder / "kpibot.db")
            try:
                print(r, s.hash_key().decode())
            except HashKeyMismatch:
                print(r, "refused")
            finally:
                s.close()
        except Exception as exc:
            print(r, "error:", type(exc).__name__, exc)
""")


@pytest.mark.parametrize("keys", ["file", "environment"])
def test_processes_taking_the_hash_key_together_agree_on_one(tmp_path, keys):
    """From the key file, all read the one key that was written; from four different
    $KPIBOT_HASH_KEY, the first stored wins and the others are refused."""
    from metrics.store import Store
    rounds = 20
    for r in range(rounds):
        (tmp_path / f"k{r}").mkdir()
        Store(tmp_path / f"k{r}" / "kpibot.db").close()
    procs = []
    for w in range(WORKERS):
        env = _env()
        if keys == "environment":
            env["KPIBOT_HASH_KEY"] = f"key-of-worker-{w}"
        procs.append(subprocess.Popen(
            [sys.executable, "-c", KEY_WORKER, str(tmp_path), str(w), str(rounds),
             str(WORKERS)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(err for _, err in outputs)
    seen: dict[int, list[str]] = {}
    for out, _ in outputs:
        for line in out.splitlines():
            r, key = line.split(" ", 1)
            seen.setdefault(int(r), []).append(key)
    for r in range(rounds):
        folder = tmp_path / f"k{r}"
        with Store(folder / "kpibot.db") as s:
            stored = s.get_setting("hash_key_fingerprint")
        if keys == "file":
            key = (folder / ".kpibot-hash-key").read_text().strip()
            assert seen[r] == [key] * WORKERS and len(key) == 64
            assert list(folder.glob(".kpibot-hash-key.*")) == []    # no temporary file left
        else:
            winners = [k for k in seen[r] if k != "refused"]
            assert len(winners) == 1, seen[r]
            key = winners[0]
        assert stored == hashlib.sha256(b"kpibot-key-fingerprint:" + key.encode()).hexdigest()[:16]


# -- a database from a newer kpibot -----------------------------------------------------------

def _known() -> int:
    from metrics.store import MIGRATIONS
    return len(MIGRATIONS)


def _one_line_error(result) -> str:
    """The CLI's whole complaint, checked to be one line and no traceback."""
    err = result.stderr if hasattr(result, "stderr") else result.output
    assert "Traceback" not in err, err
    assert err.strip() and "\n" not in err.strip(), err
    return err.strip()


def test_a_database_from_a_newer_kpibot_is_refused_naming_both_schemas(tmp_path, write):
    from click.testing import CliRunner

    from bot.cli import main
    from metrics.errors import KpiBotError, SchemaTooNew
    from metrics.store import Store
    db = tmp_path / "kpibot.db"
    s = Store(db)
    s.conn.execute("INSERT INTO _sqlite_migrations(migration_set, name, applied_at) "
                   "VALUES ('kpibot', 'm099_from_the_future', '2031-01-01')")
    s.conn.commit()
    s.close()
    with pytest.raises(SchemaTooNew) as caught:
        Store(db)
    assert isinstance(caught.value, KpiBotError)
    assert str(caught.value) == (
        f"{db} was written by a newer kpibot (schema {_known() + 1}; this kpibot knows "
        f"schema {_known()}): upgrade kpibot (pip install -U kpibot)")
    with pytest.raises(SchemaTooNew):
        Store(db, migrate=False)
    f = write("ev.csv", "campaign,message_id,sent_at,recipient,status\n"
                        "spring-sale,SM1,2026-03-01T09:00:00Z,+14155550132,delivered\n")
    for args in (["import", str(f)], ["list"]):
        r = CliRunner().invoke(main, args + ["--db", str(db)])
        assert r.exit_code == 1
        assert "was written by a newer kpibot" in _one_line_error(r)
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM imports").fetchone()[0] == 0
    con.close()


def test_a_newer_user_version_is_refused_too(tmp_path):
    from metrics.errors import SchemaTooNew
    from metrics.store import Store
    db = tmp_path / "kpibot.db"
    Store(db).close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == _known()
    con.execute(f"PRAGMA user_version = {_known() + 3}")
    con.close()
    with pytest.raises(SchemaTooNew, match=f"schema {_known() + 3}; this kpibot knows "
                                           f"schema {_known()}"):
        Store(db)


# -- a full disk ------------------------------------------------------------------------------

def _bigger_file(write, rows: int = 4000):
    lines = ["campaign,message_id,sent_at,recipient,status,body"]
    lines += [f"autumn,BIG{i},2026-03-02T10:{i % 60:02d}:00Z,+1415556{i:04d},delivered,"
              + "x" * 80 for i in range(rows)]
    return write("big.csv", "\n".join(lines) + "\n")


def _fill_up(store) -> None:
    """Let the database grow by two pages at most."""
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages + 2}")


def _imports(store) -> list:
    return store.conn.execute("SELECT id, file, finished_at FROM imports").fetchall()


def test_a_full_disk_rolls_the_import_back_and_says_so(store, write):
    from metrics.errors import StoreError
    from metrics.importers import import_file
    import_file(store, write("ev.csv", _events(0)))
    before, imports = table_counts(store), _imports(store)
    _fill_up(store)
    with pytest.raises(StoreError, match=r"no space left on the disk while writing .*kpibot\.db"
                                         r" \(database or disk is full\): nothing was changed"):
        import_file(store, _bigger_file(write))
    assert not store.conn.in_transaction
    assert table_counts(store) == before and _imports(store) == imports
    assert one(store, "PRAGMA foreign_keys")[0] == 1
    store.conn.execute("PRAGMA max_page_count = 1073741823")   # space again: it goes in
    assert import_file(store, _bigger_file(write)).rows_new == 4000


def test_no_space_for_a_temporary_file_rolls_the_import_back(store, write, monkeypatch):
    import errno

    from metrics.errors import StoreError
    from metrics.importers import import_file, run

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/etilqs_123")
    import_file(store, write("ev.csv", _events(0)))
    before, imports = table_counts(store), _imports(store)
    monkeypatch.setattr(run, "attribute_replies", full)
    with pytest.raises(StoreError, match=r"No space left on device: /tmp/etilqs_123\): nothing "
                                         "was changed"):
        import_file(store, _bigger_file(write, 100))
    assert table_counts(store) == before and _imports(store) == imports


def test_no_space_for_the_hash_key_file(tmp_path, monkeypatch):
    import errno

    from metrics import store as store_module
    from metrics.errors import StoreError

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    s = store_module.Store(tmp_path / "kpibot.db")
    monkeypatch.setattr(store_module.tempfile, "mkstemp", full)
    with pytest.raises(StoreError, match="no space left to write the phone-number hash key"):
        s.hash_key()
    assert s.get_setting("hash_key_fingerprint") is None
    s.close()


def test_kpibot_import_on_a_full_disk_is_one_line_and_changes_nothing(tmp_path, write,
                                                                      monkeypatch):
    from click.testing import CliRunner

    from bot.cli import main
    from metrics.store import Store
    db = tmp_path / "kpibot.db"
    r = CliRunner().invoke(main, ["import", str(write("ev.csv", _events(0))), "--db", str(db)])
    assert r.exit_code == 0, r.output
    with Store(db) as s:
        before, imports = table_counts(s), _imports(s)
    opened = Store.open.__func__

    def open_on_a_full_disk(cls, path=None):
        s = opened(cls, path)
        _fill_up(s)
        return s
    monkeypatch.setattr(Store, "open", classmethod(open_on_a_full_disk))
    big = _bigger_file(write)
    r = CliRunner().invoke(main, ["import", str(big), str(big), "--db", str(db)])
    assert r.exit_code == 1
    line = _one_line_error(r)
    assert line.startswith(f"Error: big.csv: no space left on the disk while writing {db}")
    assert "free some space" in line
    monkeypatch.undo()
    with Store(db) as s:
        assert table_counts(s) == before and _imports(s) == imports


# -- files that are not databases, read-only files and folders --------------------------------

def test_a_file_that_is_not_a_database_is_one_line(tmp_path):
    from click.testing import CliRunner

    from bot.cli import main
    db = tmp_path / "notes.db"
    db.write_text("these are my notes, not a database\n" * 100)
    for args in (["list"], ["import", str(db)]):
        r = CliRunner().invoke(main, args + ["--db", str(db)])
        assert r.exit_code == 1
        assert _one_line_error(r) == (
            f"Error: cannot open the database {db}: it is not a SQLite database (file is not a "
            "database); check the path given with --db or KPIBOT_DB")


def _become_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def _drop_file_capabilities() -> None:
    """Stay root but without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (dropped from the
    bounding set, so the exec'd program has neither): a file's mode bits then bind root."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:   # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@functools.lru_cache(maxsize=None)
def _unprivileged():
    """A preexec_fn under which a child's file permissions are enforced, or None when the
    tests do not run as root. As root: become 'nobody' (uid 65534); where the interpreter is
    out of nobody's reach (under /root, say), drop the capabilities that override file
    permissions instead. Each is checked against a read-only folder; skips if neither works."""
    if os.geteuid() != 0:
        return None
    probe = Path(tempfile.mkdtemp(prefix="kpibot-probe-", dir="/tmp"))
    probe.chmod(0o555)
    check = f"import os, sys, bot.cli; sys.exit(os.access({str(probe)!r}, os.W_OK))"
    try:
        for drop in (_become_nobody, _drop_file_capabilities):
            try:
                r = subprocess.run([sys.executable, "-c", check], cwd="/", env=_env(),
                                   preexec_fn=drop, capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            if r.returncode == 0:
                return drop
    finally:
        probe.chmod(0o755)
        probe.rmdir()
    pytest.skip("running as root, and neither uid 65534 nor dropping CAP_DAC_OVERRIDE gives a "
                "child process whose file permissions are enforced")


@pytest.fixture
def open_dir():
    """A folder every user can reach (tmp_path is private to root under pytest)."""
    d = Path(tempfile.mkdtemp(prefix="kpibot-ro-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    for p in [d, *d.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(d)


def _kpibot_as_user(*args: str, cwd: Path):
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, preexec_fn=_unprivileged(), timeout=60)


def _database(folder: Path) -> Path:
    """A migrated database, closed (no -wal or -shm left), with a file to import beside."""
    from metrics.store import Store
    db = folder / "kpibot.db"
    Store(db).close()
    assert not (folder / "kpibot.db-wal").exists() and not (folder / "kpibot.db-shm").exists()
    (folder / "ev.csv").write_text(_events(0))
    (folder / "ev.csv").chmod(0o644)
    return db


def _counts(db: Path) -> dict[str, int]:
    from metrics.store import Store
    with Store(db) as s:
        return table_counts(s)


def test_a_read_only_database_file_is_named_as_such(open_dir):
    folder = open_dir / "team"
    folder.mkdir()
    db = _database(folder)
    before = _counts(db)
    folder.chmod(0o777)        # the folder is writable: only the file is not
    db.chmod(0o444)
    r = _kpibot_as_user("import", "ev.csv", "--db", str(db), cwd=folder)
    assert r.returncode == 1
    assert _one_line_error(r) == (
        f"Error: ev.csv: {db} is read-only for this user: kpibot writes to its database; make "
        f"the file writable (chmod u+w {db}), or work on a writable copy")
    db.chmod(0o644)
    assert _counts(db) == before


def test_a_read_only_folder_is_named_with_the_wal_files_it_needs(open_dir):
    folder = open_dir / "team"
    folder.mkdir()
    db = _database(folder)
    before = _counts(db)
    db.chmod(0o666)            # the file is writable: only its folder is not
    folder.chmod(0o555)
    r = _kpibot_as_user("import", "ev.csv", "--db", str(db), cwd=folder)
    assert r.returncode == 1
    assert _one_line_error(r) == (
        f"Error: the folder {folder} is read-only for this user, and SQLite's WAL mode needs "
        "to create kpibot.db-wal and kpibot.db-shm beside kpibot.db: make the folder "
        "writable, or move the database to a writable folder")
    assert _counts(db) == before
    # a new database in a read-only folder
    r = _kpibot_as_user("import", "ev.csv", "--db", str(folder / "new.db"), cwd=folder)
    assert r.returncode == 1
    assert _one_line_error(r) == (
        f"Error: cannot create {folder / 'new.db'}: the folder {folder} is read-only for this "
        "user; make it writable, or name a database in a writable folder with --db or KPIBOT_DB")
    assert not (folder / "new.db").exists()
