"""Signed `/kpi` request in, answer out at the response_url: the served app (waitress)
on the 1M-event benchmark database, Slack played by tests/fake_slack.py, all local.

    python bench/bench_slack.py              # 30 requests per command
    python bench/bench_slack.py --repeat 50

Run bench/bench_kpi.py first (it builds bench/out/kpi-1000000.db). For each request we
time from sending the signed POST to the fake Slack receiving the answer at the
response_url (the chart upload that follows is timed separately), one request at a time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bot.deps import Settings  # noqa: E402
from bot.serve import Background, http_server  # noqa: E402
from metrics.store import Store  # noqa: E402
from tests.fake_slack import FakeSlack  # noqa: E402
from tests.test_slack import post, sign  # noqa: E402

SECRET = "bench-secret"


def commands(db: str) -> list[str]:
    """The whole card, the last 7 and 30 days of the data (as dates: the data ends when
    it was generated, not today), a list and help."""
    import datetime as dt
    import sqlite3
    last = sqlite3.connect(db).execute("SELECT MAX(sent_at) FROM messages").fetchone()[0]
    end = dt.datetime.fromtimestamp(last, dt.timezone.utc).date()
    week, month = end - dt.timedelta(days=6), end - dt.timedelta(days=29)
    return ["black-friday", f"black-friday {week} {end}",
            f"black-friday {month} {end} by country", "list", "help"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--db", default=str(HERE / "out" / "kpi-1000000.db"))
    args = ap.parse_args()
    if not Path(args.db).exists():
        sys.exit(f"{args.db} is missing: run bench/bench_kpi.py --sizes 1000000 first")
    with FakeSlack() as fake:
        settings = Settings(bot_token="xoxb-bench", signing_secret=SECRET, api_url=fake.api_url)
        app = Background(http_server(settings, lambda: Store(args.db), "127.0.0.1", 0,
                                     threads=4)).__enter__()
        url = app.url
        rows = []
        n = 0
        for text in commands(args.db):
            answer, ack, chart = [], [], []
            for i in range(args.repeat + 2):
                n += 1
                form = {"command": "/kpi", "text": text, "user_id": "U1", "channel_id": "C1",
                        "team_id": "T1", "response_url": fake.response_url(f"b{n}"),
                        "trigger_id": "t"}
                body = urllib.parse.urlencode(form)
                uploads = len(fake.of("files.completeUploadExternal"))
                t0 = time.perf_counter()
                post(url, form, headers={**sign(body, secret=SECRET)})
                t_ack = time.perf_counter()
                tag = f"b{n}"
                t_answer = fake.wait_until(lambda c: c.method == "response"
                                           and c.params.get("_url") == tag, timeout=30).at
                if text not in ("list", "help"):
                    t_chart = fake.wait_for("files.completeUploadExternal", uploads + 1,
                                            timeout=30)[-1].at
                if i < 2:      # warm-up
                    continue
                ack.append(t_ack - t0)
                # the fake records time.monotonic(); convert the send time to that clock
                start = t0 - time.perf_counter() + time.monotonic()
                answer.append(t_answer - start)
                if text not in ("list", "help"):
                    chart.append(t_chart - start)
            rows.append((text, ack, answer, chart))
        app.__exit__(None, None, None)
    print("| `/kpi ...` | ack p50 | answer p50 | answer p95 | chart uploaded p50 |")
    print("|---|---|---|---|---|")
    for text, ack, answer, chart in rows:
        answer.sort()
        p95 = answer[max(0, int(len(answer) * 0.95) - 1)]
        c = f"{statistics.median(chart) * 1000:.0f} ms" if chart else "—"
        print(f"| `{text}` | {statistics.median(ack) * 1000:.0f} ms | "
              f"{statistics.median(answer) * 1000:.0f} ms | {p95 * 1000:.0f} ms | {c} |")


if __name__ == "__main__":
    main()
