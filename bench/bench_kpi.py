"""One `/kpi` answer (query, text and chart), in-process, on 1M and 10M message events.

    python bench/bench_kpi.py                      # 1M and 10M events
    python bench/bench_kpi.py --sizes 1000000      # one size

The 1M database is the demo generator's file imported with ``kpibot import`` (cached in
bench/out/). Larger ones copy those events in SQL, each copy a new set of message ids
shifted back by the generated span, so the campaigns run proportionally longer, then
rebuild the rollups. Each command is answered --repeat times through the same core the CLI
and Slack use (``bot.command.run`` plus rendering its chart), with "now" at the end of the
data; we report p50 and p95.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(ROOT))

COMMANDS = ['/kpi black-friday', '/kpi black-friday 7d', '/kpi black-friday 30d by country',
            '/kpi "春の新商品" by weekday_hour', '/kpi ab black-friday',
            '/kpi compare black-friday spring-sale', '/kpi top conversion_rate 30d']


def build(size: int) -> Path:
    from metrics import rollup
    from metrics.store import Store
    base = OUT / "kpi-1000000.db"
    if not base.exists():
        src = OUT / "events-1000000.csv"
        if not src.exists():
            subprocess.run([sys.executable, str(HERE / "bench_import.py"), "--sizes", "1000000",
                            "--repeat", "1"], check=True)
        tmp = base.with_suffix(".tmp")
        for p in OUT.glob(tmp.name + "*"):
            p.unlink()
        subprocess.run([sys.executable, "-m", "bot.cli", "import", "--db", str(tmp), str(src)],
                       check=True, cwd=ROOT)
        tmp.rename(base)
    if size == 1_000_000:
        return base
    db = OUT / f"kpi-{size}.db"
    if db.exists():
        return db
    shutil.copy(base, db)
    store = Store(db)
    conn = store.conn
    lo, hi = conn.execute("SELECT MIN(sent_at), MAX(sent_at) FROM messages").fetchone()
    span = hi - lo + 86400
    cols = [r[1] for r in conn.execute("PRAGMA table_info(messages)") if r[1] not in ("id",)]
    copies = size // 1_000_000 - 1
    t = time.perf_counter()
    with store.transaction():
        for i in range(1, copies + 1):
            sel = ", ".join({"message_key": f"message_key || '-{i}'",
                             "sent_at": f"sent_at - {span * i}",
                             "reply_to": "NULL"}.get(c, c) for c in cols)
            conn.execute(f"INSERT INTO messages ({', '.join(cols)}) SELECT {sel} FROM messages "
                         "WHERE rowid <= 1000000")
            print(f"  copy {i}/{copies} ({time.perf_counter() - t:.0f} s)", flush=True)
        rollup.rebuild(conn)
    store.close()
    return db


def measure(db: Path, repeat: int) -> dict[str, tuple[float, float]]:
    from bot.command import Context, run
    from metrics.store import Store
    store = Store(db)
    # "now" is the end of the data, so that 7d and 30d cover the campaigns' last weeks
    now = store.conn.execute("SELECT MAX(sent_at) + 1 FROM messages").fetchone()[0]
    ctx = Context(store, now=now)
    out = {}
    run(COMMANDS[0], ctx).charts()   # warm: fonts, imports
    for cmd in COMMANDS:
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            reply = run(cmd, ctx)
            assert reply.ok, reply.text
            reply.charts()
            times.append(time.perf_counter() - t)
        times.sort()
        out[cmd] = (statistics.median(times), times[int(len(times) * 0.95) - 1])
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    results = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        db = build(size)
        results[size] = measure(db, args.repeat)
    print("\n| command | " + " | ".join(f"{s:,} events p50 / p95" for s in results) + " |")
    print("|---|" + "---|" * len(results))
    for cmd in COMMANDS:
        print(f"| `{cmd}` | " + " | ".join(f"{r[cmd][0] * 1000:.0f} / {r[cmd][1] * 1000:.0f} ms"
                                           for r in results.values()) + " |")


if __name__ == "__main__":
    main()
