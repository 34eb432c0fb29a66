"""The batch writer: one batch of built rows into its table, inside the import's
transaction. New rows go in with a plain insert; from the first batch that meets rows
already stored, batches go through an upsert (the later copy of a row wins, identical
rows are left alone)."""
from __future__ import annotations

from operator import itemgetter

from ..errors import KpiBotError
from .fields import (CALL_COLUMNS, CLICK_COLUMNS, CONVERSION_COLUMNS, DAILY_COLUMNS,
                     MESSAGE_COLUMNS, NULL)

# A kind of row -> its table, the columns a built row holds, and the table's unique key.
TABLES = {"message": ("messages", MESSAGE_COLUMNS, ("message_key",)),
          "call": ("calls", CALL_COLUMNS, ("call_key",)),
          "daily": ("daily", DAILY_COLUMNS, ("campaign_id", "date", "channel")),
          "click": ("clicks", CLICK_COLUMNS, ("click_key",)),
          "conversion": ("conversions", CONVERSION_COLUMNS, ("order_key",))}
# Kinds whose later copy of a row updates only the values it has (an order's line-item
# rows repeat the order with its totals left empty); a cancellation is never taken back.
KEEP_WHEN_EMPTY = {"conversion"}
NEVER_UNSET = {"cancelled"}


class BatchWriter:
    """Writes one import's batches (columns of built rows) into the kind's table.

    ``present`` tells whether a batch met rows already stored; from then on every batch
    goes through the upsert."""

    def __init__(self, conn, kind: str, import_id: int, campaign_ids: set[int]):
        self.conn = conn
        self.table = TABLES[kind][0]
        self.statements = _Statements(conn, kind, import_id)
        self.import_id = import_id
        self.campaign_ids = campaign_ids          # the campaigns rows may refer to
        self.campaign_col = {"daily": 0, "message": 1, "call": 1}.get(kind)
        # Each batch goes in sorted by its unique key (stable, so a later copy of a row
        # still wins): neighbouring keys share index pages, which roughly halves the
        # cost of the inserts once the key index outgrows SQLite's page cache.
        self.sort_key = itemgetter(0) if kind != "daily" else itemgetter(0, 1, 2)
        self.present = False    # met a row that was already stored
        self._last_rowid = f"SELECT COALESCE(MAX(rowid), 0) FROM {self.table}"

    def last_rowid(self) -> int:
        return self.conn.execute(self._last_rowid).fetchone()[0]

    def write(self, columns: list) -> None:
        """Insert (or upsert) one non-empty batch."""
        check_references(columns, self.campaign_col, self.campaign_ids, self.import_id)
        insert, upsert, bound = self.statements.for_batch(columns)
        rows = list(zip(*bound))
        rows.sort(key=self.sort_key)
        # New rows (the usual case) go in with a plain insert; once a batch meets stored
        # rows, it and the rest go through the upsert.
        if self.present or self.conn.executemany(insert, rows).rowcount != len(rows):
            self.present = True
            self.conn.executemany(upsert, rows)


class _Statements:
    """The two statements a batch goes in with: an insert that skips rows already present,
    and an upsert for batches where some were. The upsert updates the stored row when the
    file's copy differs (the later copy wins; identical rows are left alone, so
    re-importing an export rewrites nothing).

    A built row holds ``NULL`` ("") for no value. Each batch gets statements fitted to it:
    a nullable column that is empty in every row of the batch is the literal NULL (and
    not sent), one that is empty in some rows is read through NULLIF(?, ''), the others
    are bound as they are; the import's id is a literal. Per-row function calls and
    parameters are what an insert costs from Python, so this takes about a tenth off."""

    def __init__(self, conn, kind: str, import_id: int | None):
        self.table, self.columns, self.key = TABLES[kind]
        self.keep = kind in KEEP_WHEN_EMPTY
        info = conn.execute(f"PRAGMA table_info({self.table})").fetchall()
        nullable = {name for _, name, _, notnull, _, pk in info if not notnull and not pk}
        self.nullable = [i for i, c in enumerate(self.columns)
                         if c in nullable and c != "import_id"]
        self.import_at = self.columns.index("import_id")
        self.import_id = "NULL" if import_id is None else int(import_id)
        self._made: dict[tuple, tuple[str, str, list[int]]] = {}

    def for_batch(self, columns: list) -> tuple[str, str, list]:
        """The insert and the upsert for this batch, and the columns they bind."""
        shape = [0] * len(self.columns)
        for i in self.nullable:
            empty = columns[i].count(NULL)
            if empty:
                shape[i] = 2 if empty == len(columns[i]) else 1
        shape[self.import_at] = 3
        made = self._made.get(key := tuple(shape))
        if made is None:
            made = self._made[key] = self._make(key)
        insert, upsert, bound = made
        return insert, upsert, [columns[i] for i in bound]

    def _make(self, shape: tuple) -> tuple[str, str, list[int]]:
        table, columns, key = self.table, self.columns, self.key
        values = ", ".join(("?", "NULLIF(?, '')", "NULL", str(self.import_id))[k] for k in shape)
        bound = [i for i, k in enumerate(shape) if k < 2]
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"
        data = [c for c in columns if c not in key and c != "import_id"]
        stored = ", ".join(f"{table}.{c}" for c in data)
        if self.keep:
            nullable = {columns[i] for i in self.nullable}
            new = {c: (f"MAX({table}.{c}, excluded.{c})" if c in NEVER_UNSET else
                       f"COALESCE(excluded.{c}, {table}.{c})" if c in nullable else
                       f"excluded.{c}") for c in data}
        else:
            new = {c: f"excluded.{c}" for c in data}
        incoming = ", ".join(new[c] for c in data)
        upsert = (f"{head} ON CONFLICT({', '.join(key)}) DO UPDATE SET "
                  + ", ".join(f"{c} = {new[c]}" for c in data)
                  + ", import_id = excluded.import_id"
                  + f" WHERE ({stored}) IS NOT ({incoming})")
        return head.replace("INSERT", "INSERT OR IGNORE", 1), upsert, bound


def upsert_rows(conn, kind: str, columns: list) -> None:
    """Rows that came without an import (live ``/ingest`` batches) into the kind's table,
    as an import writes them: a new row is inserted, a later copy updates the stored one."""
    insert, upsert, bound = _Statements(conn, kind, None).for_batch(columns)
    conn.executemany(upsert, list(zip(*bound)))


def check_references(columns: list, campaign_col: int | None, campaign_ids: set[int],
                      import_id: int) -> None:
    """What the foreign keys would check, for a whole batch: every row's campaign exists
    and every row belongs to this import."""
    unknown = set(columns[campaign_col]) - campaign_ids if campaign_col is not None else set()
    if unknown or set(columns[-1]) != {import_id}:
        raise KpiBotError(f"internal error: rows refer to campaigns {sorted(unknown)} or "
                          "another import; nothing was imported")
