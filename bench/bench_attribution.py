"""Attribution at scale: clicks and 1M conversions imported and credited against 10M
message events; the memory it takes; and `/kpi` before and after.

    python bench/bench_attribution.py                          # 10M messages, 1M orders
    python bench/bench_attribution.py --messages 1000000 --conversions 250000,1000000

The message store is bench_kpi.py's (the demo generator's 1M events imported with
``kpibot import``; 10M copies them nine times further back in time, same recipients).
The click and order files are made from the events file: each click or order belongs to
a random message's recipient, a little after it was sent (clicks up to 3 days, orders
up to 6 days after; so some orders fall in a click window, some only in the delivery
window, some in none), 10% of orders carry a discount code and 5% name their message.

Every import runs as ``kpibot import`` in a fresh process on a fresh copy of the store;
its wall time and peak memory (ru_maxrss) are reported. Beside it, in the same run, a
minimal reference: the same orders loaded into a bare table with executemany and
credited with one plain SQL statement per rule (latest click, else latest delivery, by
recipient; no checks, no per-campaign windows, no rollups) on the same store. `/kpi`
p50 is measured on the store without and with the clicks and orders, in turns.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bench_kpi  # noqa: E402


def _events(limit: int = 1_000_000) -> list[tuple[str, str, int]]:
    """(message id, recipient, sent_at) of the outbound rows of the 1M events file."""
    out = []
    with open(OUT / "events-1000000.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["direction"] == "outbound" and row["recipient"]:
                ts = int(dt.datetime.fromisoformat(row["sent_at"].replace("Z", "+00:00"))
                         .timestamp())
                out.append((row["message_id"], row["recipient"], ts))
            if len(out) >= limit:
                break
    return out


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_files(copies: int, span: int, clicks: int, conversions: int, seed: int = 17
               ) -> tuple[Path, Path]:
    rng = random.Random(seed)
    events = _events()
    click_path = OUT / f"clicks-{copies}-{clicks}.csv"
    if not click_path.exists():
        with open(click_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["message_sid", "to", "link", "click_time"])
            for _ in range(clicks):
                sid, rcpt, ts = rng.choice(events)
                i = rng.randrange(copies)
                w.writerow([sid if i == 0 else f"{sid}-{i}", rcpt, "https://ex.co/s",
                            _iso(ts - span * i + rng.randrange(60, 3 * 86400))])
    conv_path = OUT / f"orders-{copies}-{conversions}.csv"
    if not conv_path.exists():
        with open(conv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["order_id", "converted_at", "revenue", "currency", "type", "recipient",
                        "message_id", "code"])
            for n in range(conversions):
                sid, rcpt, ts = rng.choice(events)
                i = rng.randrange(copies)
                named = (sid if i == 0 else f"{sid}-{i}") if rng.random() < 0.05 else ""
                w.writerow([f"#{n + 1000}", _iso(ts - span * i + rng.randrange(60, 6 * 86400)),
                            f"{rng.randrange(500, 30000) / 100:.2f}", "USD",
                            "lead" if rng.random() < 0.1 else "sale", rcpt, named,
                            "SPRING10" if rng.random() < 0.1 else ""])
    return click_path, conv_path


def run_import(db: Path, path: Path, sources: Path) -> tuple[float, float, str]:
    """``kpibot import`` in its own process: (wall seconds, peak RSS MB, its summary; the
    peak of the importing process, not of its parser child)."""
    code = (
        "import os, resource, sys, time\n"
        "from bot.cli import main\n"
        "t = time.perf_counter()\n"
        "sys.argv = ['kpibot', 'import', '--db', sys.argv[1], sys.argv[2]]\n"
        "try:\n    main()\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print('WALL', time.perf_counter() - t)\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of
        # this (large) process would report this process's peak
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print('RSS', int(hwm.split()[1]) / 1024)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(db), str(path)], cwd=ROOT,
                          capture_output=True, text=True,
                          env={**__import__("os").environ, "KPIBOT_SOURCES": str(sources)})
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    lines = proc.stdout.splitlines()
    wall = float(next(x for x in lines if x.startswith("WALL")).split()[1])
    rss = float(next(x for x in lines if x.startswith("RSS")).split()[1])
    summary = " / ".join(x.strip() for x in lines if not x.startswith(("WALL", "RSS")))
    return wall, rss, summary


def reference(db: Path, conv_path: Path, click_path: Path) -> float:
    """The floor: orders into a bare table, credited by one SQL statement per rule."""
    import sqlite3
    from metrics.phones import PhoneHasher
    from metrics.store import Store
    key = Store(db).hash_key()
    conn = sqlite3.connect(db)
    t = time.perf_counter()
    hasher = PhoneHasher(key, "US")
    conn.execute("CREATE TEMP TABLE ref_orders (id INTEGER PRIMARY KEY, order_id TEXT UNIQUE, "
                 "at INTEGER, revenue INTEGER, recipient BLOB, message_id INTEGER)")
    conn.execute("CREATE TEMP TABLE ref_clicks (message_key TEXT, at INTEGER, recipient BLOB)")

    def ts(s: str) -> int:
        return int(dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp())
    with open(click_path, newline="") as f:
        r = csv.reader(f)
        next(r)
        conn.executemany("INSERT INTO temp.ref_clicks VALUES (?, ?, ?)",
                         ((sid, ts(at), hasher(to).hash) for sid, to, _, at in r))
    conn.execute("CREATE INDEX temp.ref_clicks_r ON ref_clicks(recipient, at)")
    with open(conv_path, newline="") as f:
        r = csv.reader(f)
        next(r)
        conn.executemany("INSERT INTO temp.ref_orders(order_id, at, revenue, recipient) "
                         "VALUES (?, ?, ?, ?)",
                         ((o, ts(at), int(float(rev) * 1e6), hasher(rc).hash)
                          for o, at, rev, _, _, rc, _, _ in r))
    conn.execute("""UPDATE temp.ref_orders AS o SET message_id = (
        SELECT m.id FROM temp.ref_clicks k JOIN messages m ON m.message_key = k.message_key
        WHERE k.recipient = o.recipient AND k.at <= o.at AND k.at >= o.at - 432000
        ORDER BY k.at DESC LIMIT 1)""")
    conn.execute("""UPDATE temp.ref_orders AS o SET message_id = (
        SELECT m.id FROM messages m INDEXED BY messages_recipient WHERE m.recipient = o.recipient
        AND m.direction = 'outbound' AND m.recipient IS NOT NULL AND m.status = 'delivered'
        AND m.sent_at <= o.at AND m.sent_at >= o.at - 86400 ORDER BY m.sent_at DESC LIMIT 1)
        WHERE message_id IS NULL""")
    conn.commit()
    took = time.perf_counter() - t
    conn.close()
    return took


def kpi_p50(before: Path, after: Path, repeat: int) -> dict[str, tuple[float, float]]:
    """Each `/kpi` command (chart included) on the store without and with the orders, in
    turns (before, after, before, ...) so that the machine's drift falls on both: p50s."""
    import statistics
    from bot.command import Context, run
    from metrics.store import Store
    stores = [Store(before), Store(after)]
    ctxs = []
    for st in stores:
        now = st.conn.execute("SELECT MAX(sent_at) + 1 FROM messages").fetchone()[0]
        ctxs.append(Context(st, now=now))
        run(bench_kpi.COMMANDS[0], ctxs[-1]).charts()     # warm: fonts, imports, cache
    times: dict[str, tuple[list, list]] = {c: ([], []) for c in bench_kpi.COMMANDS}
    for _ in range(repeat):
        for cmd in bench_kpi.COMMANDS:
            for i, ctx in enumerate(ctxs):
                t = time.perf_counter()
                reply = run(cmd, ctx)
                assert reply.ok, reply.text
                reply.charts()
                times[cmd][i].append(time.perf_counter() - t)
    for st in stores:
        st.close()
    return {c: (statistics.median(a), statistics.median(b)) for c, (a, b) in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10_000_000)
    ap.add_argument("--conversions", default="1000000")
    ap.add_argument("--clicks", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=11)
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    base = bench_kpi.build(args.messages)
    from metrics.store import Store
    s = Store(base)
    lo, hi = s.conn.execute("SELECT MIN(sent_at), MAX(sent_at) FROM messages "
                            "WHERE rowid <= 1000000").fetchone()
    outbound = s.conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    s.close()
    copies = args.messages // 1_000_000
    sources = OUT / "bench-sources.toml"
    sources.write_text('[campaign_by_code]\nSPRING10 = "spring-sale"\n')
    results = []
    print(f"store: {outbound:,} messages ({base.name})", flush=True)
    for n in [int(x) for x in args.conversions.split(",")]:
        click_path, conv_path = make_files(copies, hi - lo + 86400, args.clicks, n)
        db = OUT / f"attr-{args.messages}-{n}.db"
        for p in OUT.glob(db.name + "*"):
            p.unlink()
        shutil.copy(base, db)       # beside it: the same hash key file
        c_wall, c_rss, c_sum = run_import(db, click_path, sources)
        o_wall, o_rss, o_sum = run_import(db, conv_path, sources)
        ref_db = OUT / f"ref-{args.messages}.db"
        shutil.copy(base, ref_db)
        ref = reference(ref_db, conv_path, click_path)
        ref_db.unlink()
        kpi = kpi_p50(base, db, args.repeat)
        results.append({"conversions": n, "clicks": args.clicks, "clicks_s": c_wall,
                        "clicks_rss_mb": c_rss, "orders_s": o_wall, "orders_rss_mb": o_rss,
                        "reference_s": ref, "summary": o_sum,
                        "kpi_ms": {k: (a * 1000, b * 1000) for k, (a, b) in kpi.items()}})
        print(json.dumps(results[-1], indent=1), flush=True)
        for p in OUT.glob(db.name + "*"):
            p.unlink()
    print(f"\n{args.messages:,} messages; {args.clicks:,} clicks imported first")
    print("| orders | orders import + credit | peak RSS | clicks import | clicks RSS | "
          "reference (bare table + 2 SQL updates) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['conversions']:,} | {r['orders_s']:.1f} s | {r['orders_rss_mb']:.0f} MB | "
              f"{r['clicks_s']:.1f} s | {r['clicks_rss_mb']:.0f} MB | {r['reference_s']:.1f} s "
              f"| {r['orders_s'] / r['reference_s']:.2f}x |")
    print("\n| command | p50 without the orders | p50 with them | ratio |")
    print("|---|---|---|---|")
    for cmd, (a, b) in results[-1]["kpi_ms"].items():
        print(f"| `{cmd}` | {a:.0f} ms | {b:.0f} ms | {b / a:.2f} |")


if __name__ == "__main__":
    main()
