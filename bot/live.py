"""The applier thread of ``kpibot serve``: moves acknowledged events from the inbox into
the main database (``metrics.live.apply``), woken by every webhook that stored some, and
tries the held (unassigned) events again when what could assign them changed.

An import holds the main database's write lock for as long as it runs: the applier then
waits (acknowledgements do not, they write to the inbox) and catches up after."""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
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
