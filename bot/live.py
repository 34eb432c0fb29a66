"""The applier of ``kpibot serve``: moves acknowledged events from the inbox into the
main database (``metrics.live.apply``), woken by every webhook commit that stored some,
and tries the held (unassigned) events again when what could assign them changed.

It runs in a process of its own (:class:`ApplierProcess`, ``python -m bot.live DB``), a
child of ``kpibot serve``: applying an event costs about as much interpreter time as
acknowledging one, and in the serving process every acknowledgement waited its turn
behind the applier (bench/bench_webhooks.py: p99 at 1,000/s of 73-340 ms with it, 24-91
ms without it, in the same run). The server wakes it through a pipe (a byte per inbox
commit); it names the campaigns it changed on its standard output, a line per batch, so
that the server has their alert rules checked; it ends when that pipe closes (the
server stopped, or was killed), and the server starts it again should it die.
:class:`LiveWorker` is the loop itself, also run as a thread where there is no file to
share (tests, an in-memory store).

An import holds the main database's write lock for as long as it runs: the applier then
waits (acknowledgements do not, they write to the inbox) and catches up after."""
from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from metrics.errors import KpiBotError
from metrics.live.apply import Applier
from metrics.store import Store

log = logging.getLogger("kpibot.live")
IDLE_S = 1.0          # the longest an event waits when no wake-up came
GATHER_S = 0.2        # after a batch, events gather this long before the next one: a
                      # transaction per callback would cost more than the callbacks
# Catching up (after an import held the store): batches this big, with a pause between
# them, so that the acknowledgements of new callbacks are not held back by the backlog
CATCH_UP_BATCH = 500
CATCH_UP_PAUSE_S = 0.01
RETRY_HELD_S = 10.0
BUSY_WAIT_S = 1.0     # the applier's wait for the store's write lock, before it retries   # how often held events are looked at (they are retried on a change)


class LiveWorker:
    def __init__(self, store_factory: Callable[[], Store],
                 on_applied: Callable[[set[int]], None] | None = None,
                 idle_s: float = IDLE_S, retry_held_s: float = RETRY_HELD_S,
                 gather_s: float = GATHER_S):
        self.store_factory = store_factory
        self.on_applied = on_applied or (lambda campaigns: None)
        self.idle_s, self.retry_held_s, self.gather_s = idle_s, retry_held_s, gather_s
        self.batch, self.pause_s = CATCH_UP_BATCH, CATCH_UP_PAUSE_S
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kpibot-live", daemon=True)
        self.applied = 0              # events applied since the start (for logs and tests)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> "LiveWorker":
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def __enter__(self) -> "LiveWorker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        store = applier = None
        last_retry = 0.0
        busy = False
        while not self._stop.is_set():
            self._wake.wait(self.idle_s)
            self._wake.clear()
            try:
                if applier is None:
                    store = self.store_factory()
                    # an import holds the store: give up after a second, tidy the inbox
                    # (its checkpoints are ours), and try again
                    store.wait_for_writes(BUSY_WAIT_S)
                    applier = Applier(store)
                store.checkpoint_inbox()       # what the webhooks' commits leave to us
                while not self._stop.is_set():
                    done = applier.run_once(limit=self.batch)
                    self.applied += done.events
                    if done.held:
                        log.info("live: %d event(s) kept as unassigned (see `kpibot list`)",
                                 done.held)
                    if done.campaigns:
                        self.on_applied(done.campaigns)
                    if done.events < self.batch:
                        break
                    self._stop.wait(self.pause_s)   # catching up: let acknowledgements in
                if done.events:
                    self._stop.wait(self.gather_s)
                store.checkpoint_inbox()
                busy = False
                if time.monotonic() - last_retry >= self.retry_held_s:
                    last_retry = time.monotonic()
                    done = applier.retry_held()
                    if done.released:
                        log.info("live: %d held event(s) applied", done.released)
                    if done.campaigns:
                        self.on_applied(done.campaigns)
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):   # an import: wait for it
                    if not busy:
                        log.info("live: the database is busy (an import?); events wait")
                    busy = True
                else:
                    log.exception("live: applying events failed; retrying")
                    self._stop.wait(1.0)
            except (KpiBotError, Exception):
                log.exception("live: applying events failed; retrying")
                self._stop.wait(1.0)
        if store is not None:
            store.close()


# -- the applier as a child process of kpibot serve ------------------------------------------

WAKE_EVERY_S = 0.05        # the applier process reads its wake-ups at most this often
RESTART_S = (1.0, 30.0)     # the pause before a dead applier is started again: first, most


class ApplierProcess:
    """``python -m bot.live DB`` as a child of this process, kept running: ``wake`` tells
    it events are waiting; ``on_applied`` hears which campaigns it changed."""

    def __init__(self, db: str | os.PathLike,
                 on_applied: Callable[[set[int]], None] | None = None):
        self.db = Path(db)
        self.on_applied = on_applied or (lambda campaigns: None)
        self.proc: subprocess.Popen | None = None
        self._wake_w: int | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="kpibot-applier",
                                            daemon=True)

    def start(self) -> "ApplierProcess":
        self._spawn()
        self._supervisor.start()
        return self

    def _spawn(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "bot.live", str(self.db), str(wake_r)],
                                pass_fds=(wake_r,), stdout=subprocess.PIPE, env=env,
                                cwd=os.getcwd(), text=True)
        os.close(wake_r)
        with self._lock:
            old, self._wake_w, self.proc = self._wake_w, wake_w, proc
        if old is not None:
            os.close(old)
        threading.Thread(target=self._listen, args=(proc,), name="kpibot-applied",
                         daemon=True).start()
        log.info("live: applier process %d started", proc.pid)

    def wake(self) -> None:
        """A byte down the pipe; a full pipe already holds a wake-up."""
        fd = self._wake_w
        if fd is None:
            return
        try:
            os.write(fd, b"!")
        except (BlockingIOError, BrokenPipeError, OSError):
            pass

    def _listen(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:                   # "applied 3 5 8": campaign ids
            word, *ids = line.split()
            if word == "applied":
                try:
                    self.on_applied({int(i) for i in ids})
                except Exception:
                    log.exception("live: after events were applied")

    def _supervise(self) -> None:
        pause = RESTART_S[0]
        while not self._stopping.is_set():
            proc = self.proc
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            log.error("live: the applier process ended (exit %s); starting it again in "
                      "%.0f s", code, pause)
            if self._stopping.wait(pause):
                return
            pause = RESTART_S[0] if time.monotonic() - started > 60 else \
                min(pause * 2, RESTART_S[1])
            self._spawn()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the pipe (the applier finishes its batch and ends); kill it past
        ``timeout``. What it had not applied stays in the inbox for the next start."""
        self._stopping.set()
        with self._lock:
            fd, self._wake_w = self._wake_w, None
        if fd is not None:
            os.close(fd)
        proc = self.proc
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _child(db: str, wake_fd: int) -> None:
    """The applier process: a LiveWorker woken by bytes on ``wake_fd``, reporting the
    campaigns it changed on stdout; it ends when the pipe closes (its server is gone)."""
    from .logs import install_redaction
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    install_redaction()          # as in the server: no token reaches a log
    out = threading.Lock()

    def applied(campaigns: set[int]) -> None:
        with out:
            print("applied", *sorted(campaigns), flush=True)

    worker = LiveWorker(lambda: Store(db), on_applied=applied)
    worker.start()
    log.info("live: the applier (process %d) applies what the inbox holds", os.getpid())
    try:
        while os.read(wake_fd, 4096):
            worker.wake()
            # a byte comes with every commit (a thousand a second under load): the
            # wake-ups of the next WAKE_EVERY_S wait in the pipe and are read as one
            time.sleep(WAKE_EVERY_S)
    except (OSError, KeyboardInterrupt):      # the pipe broke, or SIGTERM
        pass
    worker.stop(timeout=30.0)


def _stop_on_term(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C reaches the server, which
    signal.signal(signal.SIGTERM, _stop_on_term)     # stops us through the pipe
    _child(sys.argv[1], int(sys.argv[2]))
