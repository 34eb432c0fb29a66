"""Import speed and memory: kpibot's importer against sqlite3's own `.import`.

    python bench/bench_import.py                 # 100k, 300k and 1M message events
    python bench/bench_import.py --sizes 100000  # one size

For each size it generates the file once with the project's demo generator (cached in
bench/out/), imports it with ``sqlite3 DB ".import --csv FILE t"`` into an empty database
(the floor: no parsing, no checks, no hashing), then with ``kpibot import`` into an empty
database, each in a fresh subprocess so peak memory is per run: "peak MB" is the
importing process's VmHWM, "parser MB" that of the parser process it starts for large
files (sampled every 20 ms from /proc while it runs). Each timing
is the median of --repeat runs; the two imports take turns, and "ratio" is the median of
the ratios of each turn's pair (the machine's speed drifts: a pair shares it). A final row re-imports the largest file into its own
database to time the idempotent path (every row already present).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"

CHILD = r"""
import json, subprocess, sys, threading, time
sys.path.insert(0, {root!r})
from metrics.store import Store
from metrics.importers import import_file
import metrics.importers.child as child

def hwm_mb(pid="self"):
    # VmHWM: this process's peak resident memory (unlike ru_maxrss, not inflated by the
    # parent's memory when a child is forked before it execs)
    try:
        with open(f"/proc/{{pid}}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None

parser_peak = [0.0]

class Watched(subprocess.Popen):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        def watch():
            while self.poll() is None:
                v = hwm_mb(self.pid)
                if v:
                    parser_peak[0] = max(parser_peak[0], v)
                time.sleep(0.02)
        threading.Thread(target=watch, daemon=True).start()

child.subprocess.Popen = Watched
db, path, repeat_db = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
store = Store(db)
store.hash_key()
if repeat_db:
    import_file(store, path)
parser_peak[0] = 0.0
t = time.perf_counter()
r = import_file(store, path)
elapsed = time.perf_counter() - t
print(json.dumps({{"seconds": elapsed, "rows_in": r.rows_in, "rows_new": r.rows_new,
                  "maxrss_mb": hwm_mb(), "parser_maxrss_mb": parser_peak[0]}}))
"""


def generate(n: int) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"events-{n}.csv"
    if not path.exists():
        sys.path.insert(0, str(ROOT))
        from metrics.demo import write_message_events
        import datetime as dt
        t = time.perf_counter()
        tmp = path.with_suffix(".tmp")
        write_message_events(tmp, n, seed=1, end=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
                             recipients_per_country=max(3000, n // 20))
        tmp.rename(path)
        print(f"  generated {path.name} ({path.stat().st_size / 1e6:.1f} MB) "
              f"in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return path


def sqlite_import(sqlite: str, path: Path, workdir: Path) -> float:
    db = workdir / "floor.db"
    db.unlink(missing_ok=True)
    t = time.perf_counter()
    subprocess.run([sqlite, str(db), f".import --csv {path} events"], check=True)
    elapsed = time.perf_counter() - t
    db.unlink()
    return elapsed


def kpibot_import(path: Path, workdir: Path, again: bool = False) -> dict:
    db = workdir / "kpibot.db"
    for p in workdir.glob("kpibot.db*"):
        p.unlink()
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), str(db), str(path),
                          "1" if again else "0"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                    default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sqlite = shutil.which("sqlite3")
    if not sqlite:
        sys.exit("the sqlite3 command-line shell is needed for the baseline "
                 "(Debian/Ubuntu: apt-get install sqlite3)")
    print(f"python {sys.version.split()[0]}, sqlite3 shell "
          f"{subprocess.run([sqlite, '--version'], capture_output=True, text=True).stdout.split()[0]}, "
          f"{os.cpu_count()} cores")
    print(f"{'rows':>9} {'MB':>6} {'.import s':>10} {'kpibot s':>9} {'ratio':>6} "
          f"{'µs/row':>7} {'peak MB':>8} {'parser MB':>9}")
    with tempfile.TemporaryDirectory(prefix="kpibot-bench-") as tmp:
        work = Path(tmp)
        last = None
        for n in args.sizes:
            path = generate(n)
            floors, runs = [], []
            for _ in range(args.repeat):   # in turns, so that both see the same machine
                floors.append(sqlite_import(sqlite, path, work))
                runs.append(kpibot_import(path, work))
            assert all(r["rows_new"] == n for r in runs), runs
            floor = statistics.median(floors)
            ours = statistics.median(r["seconds"] for r in runs)
            ratio = statistics.median(r["seconds"] / f for r, f in zip(runs, floors))
            peak = max(r["maxrss_mb"] for r in runs)
            parser = max(r["parser_maxrss_mb"] for r in runs)
            print(f"{n:>9,} {path.stat().st_size / 1e6:>6.1f} {floor:>10.2f} {ours:>9.2f} "
                  f"{ratio:>6.2f} {ours / n * 1e6:>7.1f} {peak:>8.0f} {parser:>9.0f}",
                  flush=True)
            last = path, n
        if last:
            path, n = last
            r = kpibot_import(path, work, again=True)
            assert r["rows_new"] == 0 and r["rows_in"] == n, r
            print(f"re-import of {n:,} rows already present: {r['seconds']:.2f} s, "
                  f"0 new, peak {r['maxrss_mb']:.0f} MB + parser {r['parser_maxrss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
