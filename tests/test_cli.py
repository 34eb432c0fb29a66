"""The command line, as a user runs it."""
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from bot.cli import main
from metrics.store import Store

ROOT = Path(__file__).resolve().parents[1]

EVENTS = ("campaign,message_id,sent_at,recipient,status\n"
          "spring-sale,SM1,2026-03-01T09:00:00Z,+14155550132,delivered\n"
          "spring-sale,SM2,2026-03-01T09:01:00Z,+14155550133,delivered\n")


def test_import_prints_a_summary_and_counts_once(tmp_path):
    f = tmp_path / "ev.csv"
    f.write_text(EVENTS)
    db = str(tmp_path / "k.db")
    runner = CliRunner()
    r = runner.invoke(main, ["import", str(f), "--db", db])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("✓ ev.csv: imported 2 new rows (events); campaigns: spring-sale")
    r = runner.invoke(main, ["import", str(f), "--db", db])
    assert "imported 0 new rows (events), 2 already present (updated, counted once)" in r.output


def test_a_rejected_file_exits_non_zero_and_the_others_still_land(tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(EVENTS)
    bad.write_text(EVENTS.replace("delivered\n", "vanished\n", 1))
    db = tmp_path / "k.db"
    r = CliRunner().invoke(main, ["import", str(bad), str(good), "--db", str(db)])
    assert r.exit_code == 1
    assert "✗ bad.csv: rejected: 1 bad row out of 2" in r.stderr
    assert "line 2, column 'status': unknown SMS status 'vanished'" in r.stderr
    assert "✓ good.csv: imported 2 new rows" in r.stdout
    r = CliRunner().invoke(main, ["import", str(bad), "--skip-bad-rows", "--db", str(db)])
    assert r.exit_code == 0 and "skipped 1 bad row:" in r.output


def test_contradictory_flags(tmp_path):
    r = CliRunner().invoke(main, ["import", "x.csv", "--strict", "--skip-bad-rows"])
    assert r.exit_code == 2 and "contradict" in r.output


def test_demo_fills_the_database_and_lists_campaigns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "demo.db"
    r = CliRunner().invoke(main, ["demo", "--messages", "3000", "--calls", "600", "--db", str(db)])
    assert r.exit_code == 0, r.output
    # it ends with a campaign's card and writes its chart
    assert "spring-sale · SMS · goal: sales" in r.output and "★ Revenue" in r.output
    assert (tmp_path / "kpibot-demo-chart.png").stat().st_size > 10_000
    assert "imported 3,000 new rows (events)" in r.output
    assert "imported 600 new rows (calls)" in r.output
    for name in ("spring-sale", "весенняя-акция", "春の新商品", "renewals-q4"):
        assert name in r.output
    s = Store(db)
    assert dict(s.conn.execute("SELECT name, goal FROM campaigns"))["renewals-q4"] == "appointments"
    again = CliRunner().invoke(main, ["demo", "--messages", "3000", "--calls", "600", "--db", str(db)])
    assert "imported 0 new rows (events), 3,000 already present" in again.output


def test_installed_entry_point_runs_with_the_default_database(tmp_path):
    """`kpibot` as a fresh shell runs it: ./kpibot.db in the working directory."""
    f = tmp_path / "ev.csv"
    f.write_text(EVENTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIBOT_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-m", "bot.cli", "import", "ev.csv"], cwd=tmp_path,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "kpibot.db").exists() and (tmp_path / ".kpibot-hash-key").exists()
