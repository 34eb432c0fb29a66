"""A bulk load: the settings one import runs under, and the indexes it suspends.

Used as a context manager around the import's transaction; everything it changes on the
connection and in the interpreter is put back when the import ends, whatever happens."""
from __future__ import annotations

import gc
import os

IMPORT_CACHE_KIB = 48 * 1024  # holds a million-row import's key index: the writer's biggest piece
# SQLite sorts (index builds, the reach tables) in runs of about the page cache's size:
# small runs, sorted by helper threads and merged, beat one big sort in memory by half.
SORT_CACHE_KIB = 2 * 1024
SORT_THREADS = min(4, os.cpu_count() or 1)
SUSPEND_INDEX_ROWS = 50_000    # bulk loads this big rebuild the time index at the end
GC_EVERY = 16                  # batches between collections of young objects


class BulkLoad:
    """For the duration of one import:

    - a bigger page cache: inserts into the key index land at random places, and
      re-reading evicted pages dominates otherwise; from :meth:`rebuild_indexes` on, a
      small one for what is left, which is mostly sorting (see SORT_CACHE_KIB);
    - SQLite's sorter threads;
    - foreign keys off: SQLite's per-row lookups cost a sixth of the insert time, and the
      batch writer checks the same references once per batch instead
      (``writer.check_references``); enforcement is back on when the import ends (it can
      only change between transactions, so this wraps the transaction);
    - Python's cyclic collector off: the rows of every batch are tuples, which it tracks;
      left on, it ran two thousand times in a million-row import and took a second.
      Nothing here makes reference cycles to speak of; young objects are collected by
      hand every GC_EVERY batches (:meth:`batch_done`);
    - for a load that is large next to its table, the time, reach and recipient indexes
      dropped and rebuilt at the end (:meth:`suspend_indexes`, :meth:`rebuild_indexes`),
      inside the transaction."""

    def __init__(self, store):
        self.conn = store.conn
        self.batches = 0
        self._rebuild: list[str] = []
        self._late: list[str] = []

    def __enter__(self) -> "BulkLoad":
        conn = self.conn
        self._cache_before = conn.execute("PRAGMA cache_size").fetchone()[0]
        self._threads_before = conn.execute("PRAGMA threads").fetchone()[0]
        conn.execute(f"PRAGMA cache_size=-{IMPORT_CACHE_KIB}")
        conn.execute(f"PRAGMA threads={SORT_THREADS}")
        conn.execute("PRAGMA foreign_keys=OFF")
        self._gc_was_on = gc.isenabled()
        gc.disable()
        return self

    def __exit__(self, *exc) -> None:
        if self._gc_was_on:
            gc.enable()
        conn = self.conn
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA cache_size={self._cache_before}")
        conn.execute(f"PRAGMA threads={self._threads_before}")

    def batch_done(self) -> None:
        """One more batch written: collect young objects every GC_EVERY batches."""
        self.batches += 1
        if self.batches % GC_EVERY == 0:
            gc.collect(1)

    def suspend_indexes(self, conn, table: str, new_rows: int, existing: int,
                        min_rows: int = SUSPEND_INDEX_ROWS, late: tuple[str, ...] = ()) -> None:
        """For a bulk load (``new_rows`` of at least ``min_rows``, and at least a quarter of
        the ``existing``), drop the table's time, reach and recipient indexes; :meth:`rebuild_indexes`
        makes them again.

        Rows arrive in no particular time order, so keeping a (campaign, time) index up
        to date means a random B-tree insert per row; building it once at the end is a
        sort, several times cheaper when the file is large next to the table. It happens
        inside the import's transaction, so other connections never see the table
        without it."""
        if new_rows < min_rows or new_rows * 4 < existing:
            return
        found = conn.execute(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = ? AND "
            "(name LIKE '%campaign_time' OR name LIKE '%reach' OR name LIKE '%recipient')",
            (table,)).fetchall()
        for name, _ in found:
            conn.execute(f"DROP INDEX {name}")
        self._rebuild.extend(sql for _, sql in found)
        # ``late``: indexes that what follows the load does not read, and updates (the
        # credit of the conversions loaded): made again by :meth:`rebuild_late`, after that
        for name, sql in conn.execute(
                "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = ? "
                f"AND name IN ({', '.join('?' * len(late))})", (table, *late)).fetchall():
            conn.execute(f"DROP INDEX {name}")
            self._late.append(sql)

    def rebuild_late(self, conn) -> None:
        """The indexes :meth:`suspend_indexes` kept apart until the end."""
        conn.execute(f"PRAGMA cache_size=-{SORT_CACHE_KIB}")
        for sql_create in self._late:
            conn.execute(sql_create)
        self._late = []

    def for_lookups(self, conn) -> None:
        """What follows is index lookups all over the store (crediting conversions, see
        ``metrics.attribution``): the big page cache again."""
        conn.execute(f"PRAGMA cache_size=-{IMPORT_CACHE_KIB}")

    def rebuild_indexes(self, conn) -> None:
        """The load is over: what is left of the import is mostly sorting, so the small
        page cache from here on; then the indexes :meth:`suspend_indexes` dropped."""
        conn.execute(f"PRAGMA cache_size=-{SORT_CACHE_KIB}")
        for sql_create in self._rebuild:
            conn.execute(sql_create)
        self._rebuild = []
