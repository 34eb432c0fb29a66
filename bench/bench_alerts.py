"""Evaluating 1,000 alert rules over the 1M-event benchmark database.

    python bench/bench_alerts.py            # after bench_kpi.py built bench/out/kpi-1000000.db

The rules mix every campaign and `*`, six metrics and three windows (1h, 24h, 7d), as a
team's rules would; "now" is the end of the data. Each run evaluates all of them (the
state machines and post claims included) in a copy of the database; median of --repeat.
"""
from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from metrics import alerts  # noqa: E402
from metrics.store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--db", default=str(HERE / "out" / "kpi-1000000.db"))
    ap.add_argument("--distinct-windows", action="store_true",
                    help="give rules 168 different windows (1h..7d), so few share numbers")
    args = ap.parse_args()
    src = Path(args.db)
    if not src.exists():
        sys.exit(f"{src} is missing: run bench/bench_kpi.py --sizes 1000000 first")
    times, posts = [], 0
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "a.db"
            shutil.copy(src, db)
            shutil.copy(src.parent / ".kpibot-hash-key", Path(tmp) / ".kpibot-hash-key")
            store = Store(db)
            now = store.conn.execute("SELECT MAX(sent_at) + 1 FROM messages").fetchone()[0]
            names = [r[0] for r in store.conn.execute("SELECT name FROM campaigns")] + ["*"]
            metrics = [("opt_out_rate", ">", 0.012), ("delivery_rate", "<", 0.95),
                       ("ctr", "<", 0.05), ("spam_complaint_rate", ">", 0.001),
                       ("response_rate", "<", 0.01), ("conversion_rate", "<", 0.02)]
            windows = [3600 * k for k in range(1, 169)] if args.distinct_windows else \
                [3600, 86400, 7 * 86400]
            combos = itertools.cycle(itertools.product(names, metrics, windows))
            for _, (camp, (metric, op, thr), window) in zip(range(args.rules), combos):
                alerts.add_rule(store, camp, metric, op, min(0.999, thr * (1 + _ % 7 / 100)),
                                window_s=window, min_volume=50, channel="C1")
            t = time.perf_counter()
            posts = len(alerts.evaluate(store, now))
            times.append(time.perf_counter() - t)
            pairs = store.conn.execute("SELECT COUNT(*) FROM alert_states").fetchone()[0]
            store.close()
    print(f"{args.rules:,} rules, {pairs:,} rule-campaign pairs, {posts:,} posts claimed: "
          f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max "
          f"{max(times):.2f}, {args.repeat} runs)")


if __name__ == "__main__":
    main()
