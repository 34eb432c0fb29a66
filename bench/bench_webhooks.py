"""Signed Twilio status callbacks into `kpibot serve`, beside a minimal reference server
(waitress + the signature check + one SQLite insert per request), in one run.

    python bench/bench_webhooks.py                       # 1,000/s for 20 s, each server
    python bench/bench_webhooks.py --rate 1000 --seconds 30 --import-rows 1000000
    python bench/bench_webhooks.py --memory-run 1000000  # RSS of kpibot serve over 1M

The load generator runs on this machine too: two processes, each with 8 threads on
keep-alive connections, sending pre-signed callbacks on a fixed schedule (open loop: a
slow answer does not slow the sender, so queueing shows in the latency, which is taken
from the time a request was due to its answer). Every callback is a new message's
'sent' or 'delivered', so kpibot's applier inserts and updates as it would in a real
campaign. Reported: achieved rate, p50/p99/max acknowledgement, and for kpibot how far
the applier fell behind.

With --import-rows N, the same load runs while `kpibot import` loads N rows
(bench/out/events-N.csv, made by bench_import.py) into the served database, and the
import's time is compared with the same import alone (in turns, same run).
"""
from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-twilio-token"
PUBLIC = "https://kpibot.example.com"
PATH = "/twilio/messages/status?campaign=bench"
THREADS = 8
PROCS = 2


# -- the reference: waitress, the signature check, one insert ----------------------------

def reference_app(db: str):
    import sqlite3
    from urllib.parse import parse_qs

    from twilio.request_validator import RequestValidator
    validator = RequestValidator(TOKEN)
    local = threading.local()

    def conn():
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = sqlite3.connect(db, timeout=30)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, "
                      "key TEXT UNIQUE, received_at INTEGER, body TEXT)")
        return c

    def app(environ, start_response):
        n = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(n).decode()
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        url = PUBLIC + environ["PATH_INFO"] + "?" + environ.get("QUERY_STRING", "")
        if not validator.validate(url, form, environ.get("HTTP_X_TWILIO_SIGNATURE", "")):
            start_response("403 Forbidden", [("Content-Length", "0")])
            return [b""]
        c = conn()
        with c:
            c.execute("INSERT INTO events(key, received_at, body) VALUES (?, ?, ?) "
                      "ON CONFLICT(key) DO NOTHING",
                      (form["MessageSid"] + ":" + form["MessageStatus"], int(time.time()), raw))
        start_response("200 OK", [("Content-Type", "text/xml"), ("Content-Length", "0")])
        return [b""]
    return app


def run_reference(port: int, db: str) -> None:
    from waitress import serve
    print("listening on", port, flush=True)
    serve(reference_app(db), host="127.0.0.1", port=port, threads=8, _quiet=True)


# -- the load -----------------------------------------------------------------------------

def _requests(first: int, count: int) -> list[tuple[bytes, str]]:
    from twilio.request_validator import RequestValidator
    v = RequestValidator(TOKEN)
    out = []
    for i in range(first, first + count):
        sid = f"SM{i // 2:032d}"
        form = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": "delivered" if i % 2 else
                "sent", "From": "+14155550100", "To": f"+1415{5550000 + (i // 2) % 9000:07d}",
                "AccountSid": "AC" + "0" * 32, "ApiVersion": "2010-04-01"}
        out.append((urllib.parse.urlencode(form).encode(), v.compute_signature(PUBLIC + PATH, form)))
    return out


def _load_proc(port: int, first: int, count: int, rate: float, ready, out) -> None:
    reqs = _requests(first, count)
    ready.wait()                                # every sender has signed its requests
    start_at = time.perf_counter() + 0.2        # (the clock is the system's, shared)
    per_thread = [reqs[k::THREADS] for k in range(THREADS)]
    lat: list[list[float]] = [[] for _ in range(THREADS)]
    errors = [0] * THREADS
    step = THREADS * PROCS / rate       # each thread's interval

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        offset = (k * PROCS + first % PROCS) / rate
        for j, (body, sig) in enumerate(per_thread[k]):
            due = start_at + offset + j * step
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            try:
                conn.request("POST", PATH, body, {"X-Twilio-Signature": sig, "Content-Type":
                                                  "application/x-www-form-urlencoded"})
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if ok:
                lat[k].append((time.perf_counter() - due, due - start_at))
            else:
                errors[k] += 1
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put(([x for part in lat for x in part], sum(errors), start_at, time.perf_counter()))


def load(port: int, first: int, count: int, rate: float) -> dict:
    """Send ``count`` callbacks at ``rate`` per second; the latencies and achieved rate."""
    q: mp.Queue = mp.Queue()
    ready = mp.Barrier(PROCS)
    share = count // PROCS
    procs = [mp.Process(target=_load_proc, args=(port, first + k * share, share, rate,
                                                 ready, q)) for k in range(PROCS)]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    timed = [x for r in results for x in r[0]]
    lat = sorted(x for x, _ in timed)
    slow = sorted({int(at) for x, at in timed if x > 0.1})  # the seconds with slow answers
    errors = sum(r[1] for r in results)
    start_at = min(r[2] for r in results)
    end = max(r[3] for r in results)
    q99 = lat[int(len(lat) * 0.99) - 1] if lat else float("nan")
    return {"sent": share * PROCS, "ok": len(lat), "errors": errors,
            "rate": len(lat) / (end - start_at), "p50": statistics.median(lat) if lat else 0,
            "p99": q99, "max": lat[-1] if lat else 0, "slow_seconds": slow}


# -- the servers --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_kpibot(db: Path, fake_url: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-bench", "SLACK_SIGNING_SECRET": "s",
           "SLACK_API_URL": fake_url, "KPIBOT_DB": str(db), "TWILIO_AUTH_TOKEN": TOKEN,
           "KPIBOT_PUBLIC_URL": PUBLIC}
    env.pop("TWILIO_ACCOUNT_SID", None)
    env.pop("SLACK_APP_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                            text=True)
    _wait_listening(proc)
    return proc, port


def start_reference(db: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--reference-server", str(port), str(db)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    while "listening" not in proc.stdout.readline():
        if proc.poll() is not None:
            sys.exit("the reference server did not start")
    time.sleep(0.3)
    return proc, port


def _wait_listening(proc: subprocess.Popen) -> None:
    line = ""
    while "listening on" not in line:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            sys.exit("kpibot serve exited")
    threading.Thread(target=proc.stderr.read, daemon=True).start()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds of the process and of its children (kpibot serve's applier)."""
    kids = 0.0
    for k in children(pid):
        try:
            kids += cpu_s(k)
        except OSError:
            pass
    return cpu_s(pid), kids


def lag(db: Path) -> int:
    from metrics.live.apply import Applier
    from metrics.store import Store
    s = Store(db)
    try:
        return Applier(s).pending()
    finally:
        s.close()


def wait_applied(db: Path, timeout: float = 600) -> float:
    t0 = time.perf_counter()
    while lag(db):
        if time.perf_counter() - t0 > timeout:
            break
        time.sleep(0.1)
    return time.perf_counter() - t0


def fmt(name: str, r: dict, extra: str = "") -> str:
    return (f"{name:<22} {r['rate']:>8,.0f}/s {r['p50'] * 1000:>8.1f} {r['p99'] * 1000:>8.1f} "
            f"{r['max'] * 1000:>8.1f} {r['errors']:>6} {extra}")


HEAD = f"{'server':<22} {'achieved':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>6}"


def import_alone(csv: Path, db: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bot.cli", "import", str(csv), "--db", str(db)],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--repeat", type=int, default=1, help="turns of kpibot and the reference")
    ap.add_argument("--import-rows", type=int, default=0)
    ap.add_argument("--memory-run", type=int, default=0, metavar="N",
                    help="send N callbacks as fast as they are taken; RSS of kpibot serve")
    ap.add_argument("--reference-server", nargs=2, metavar=("PORT", "DB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reference_server:
        return run_reference(int(args.reference_server[0]), args.reference_server[1])
    from tests.fake_slack import FakeSlack
    work = Path(tempfile.mkdtemp(prefix="kpibot-webhooks-"))
    n = int(args.rate * args.seconds)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {n:,} signed callbacks "
          f"at {args.rate:,.0f}/s, {THREADS * PROCS} sender threads in {PROCS} processes")
    try:
        with FakeSlack() as fake:
            if args.memory_run:
                return memory_run(work, fake.api_url, args.memory_run, args.rate)
            print(HEAD)
            for turn in range(args.repeat):
                ref_db = work / f"ref{turn}.db"
                proc, port = start_reference(ref_db)
                cpu0 = cpu_s(proc.pid)
                r = load(port, 0, n, args.rate)
                cpu = (cpu_s(proc.pid) - cpu0) / n * 1000
                proc.terminate()
                proc.wait()
                print(fmt("reference", r, f"CPU {cpu:.2f} ms a request"), flush=True)
                db = work / f"kpibot{turn}.db"
                proc, port = start_kpibot(db, fake.api_url)
                rss0, (cpu0, kids0) = rss_mb(proc.pid), tree_cpu_s(proc.pid)
                r = load(port, 0, n, args.rate)
                behind = lag(db)
                caught = wait_applied(db)
                cpu, kids = tree_cpu_s(proc.pid)
                print(fmt("kpibot serve", r, f"CPU {(cpu - cpu0) / n * 1000:.2f} ms a request "
                          f"(and the applier process {(kids - kids0) / n * 1000:.2f} ms); "
                          f"applier {behind:,} behind at the end, caught up "
                          f"in {caught:.1f} s; RSS {rss0:.0f} -> {rss_mb(proc.pid):.0f} MB"),
                      flush=True)
                proc.terminate()
                proc.wait()
            if args.import_rows:
                during_import(work, fake.api_url, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def during_import(work: Path, fake_url: str, args) -> None:
    """The import alone, then with the callbacks going to the reference server, then to
    kpibot serve (whose database it is), in turns: what the load itself costs the import
    on this machine, and what kpibot adds."""
    csv = HERE / "out" / f"events-{args.import_rows}.csv"
    if not csv.exists():
        sys.exit(f"{csv} is missing: run bench/bench_import.py --sizes {args.import_rows} first")
    times: dict[str, list[float]] = {"alone": [], "reference": [], "kpibot": []}
    for turn in range(args.repeat):
        times["alone"].append(import_alone(csv, work / f"alone{turn}.db"))
        count = int(args.rate * times["alone"][-1])      # callbacks for as long as it runs
        for name in ("reference", "kpibot"):
            db = work / f"{name}-live{turn}.db"
            if name == "kpibot":
                proc, port = start_kpibot(db, fake_url)
            else:
                proc, port = start_reference(work / f"{name}-ref{turn}.db")
            t0 = time.perf_counter()
            imp = subprocess.Popen([sys.executable, "-m", "bot.cli", "import", str(csv),
                                    "--db", str(db)], cwd=ROOT, stdout=subprocess.DEVNULL)
            r = load(port, 10_000_000, count, args.rate)
            imp.wait()
            times[name].append(time.perf_counter() - t0)
            extra = ""
            if name == "kpibot":
                extra = f"; applier caught up {wait_applied(db):.1f} s after"
            print(fmt(f"{name} during import", r, f"import {times[name][-1]:.1f} s (alone "
                      f"{times['alone'][-1]:.1f} s){extra}"), flush=True)
            proc.terminate()
            proc.wait()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"import: alone {med['alone']:.1f} s; with callbacks to the reference "
          f"{med['reference']:.1f} s ({med['reference'] / med['alone']:.2f}x); to kpibot "
          f"{med['kpibot']:.1f} s ({med['kpibot'] / med['alone']:.2f}x, "
          f"{med['kpibot'] / med['reference']:.2f}x the reference's)")


def memory_run(work: Path, fake_url: str, total: int, rate: float) -> None:
    db = work / "memory.db"
    proc, port = start_kpibot(db, fake_url)
    step = 100_000
    def applier_mb() -> float:
        return sum(rss_mb(k) for k in children(proc.pid))

    print(f"{'callbacks':>10} {'RSS MB':>8} {'applier':>8} {'p99 ms':>8} {'rate/s':>8} "
          f"{'behind':>8}")
    print(f"{0:>10,} {rss_mb(proc.pid):>8.0f} {applier_mb():>8.0f}")
    for done in range(0, total, step):
        r = load(port, done, step, rate)
        print(f"{done + step:>10,} {rss_mb(proc.pid):>8.0f} {applier_mb():>8.0f} "
              f"{r['p99'] * 1000:>8.1f} {r['rate']:>8,.0f} {lag(db):>8,}", flush=True)
    wait_applied(db)
    print(f"all applied; RSS {rss_mb(proc.pid):.0f} MB, the applier process's "
          f"{applier_mb():.0f} MB")
    proc.terminate()
    proc.wait()


if __name__ == "__main__":
    main()
