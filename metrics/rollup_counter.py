"""The importer's in-memory rollup counter: rows it inserts are counted for the rollups with
numpy, batch by batch, while it waits on its parser; what cannot be counted exactly here
(values that are not integers, totals past int32 or the campaign limit) is left to SQL
(:meth:`metrics.rollup.Rollup.add_new_rows`). What the counters are is defined once, in
:mod:`metrics.rollup`.
"""
from __future__ import annotations

import sqlite3
from typing import Iterator, Sequence

from . import rollup
from .rollup import KINDS, SLOT, Kind


class NewRowCounter:
    """Counts freshly inserted events into rollup rows with numpy, batch by batch, while the
    importer waits on its parser (a grouped SQL pass over a million new rows costs seconds
    of sorting at the end of the import, on one core).

    The counters keep their one definition, the SQL in :class:`Kind`: each row gets a
    profile (its values of ``kind.profile``), SQLite evaluates the counters once per
    distinct profile, from a row typed like the events table, and numpy counts rows per
    (campaign, slot, dimension key, profile); ``kind.summed`` columns are summed as
    integers. Dimension keys are likewise what SQLite makes of each distinct value. The
    campaign totals are the sums over one dimension's keys.

    :meth:`add` takes a batch only if every row of it was inserted (rows the importer
    updated instead reach the rollup through the triggers). It returns False, having
    counted nothing of that batch, when it cannot count it exactly (values that are not
    integers, say); the caller then counts that batch and the rest in SQL
    (:meth:`Rollup.add_new_rows`). The memory held grows with the rollup, not the events."""

    REDUCE_AT = 1 << 15    # pending entries per dimension between reductions
    MAX_VALUES = 50_000    # distinct values of one dimension (a segment per recipient?)
    MAX_PROFILES = 10_000  # past these, SQL counts the rest: memory stays small
    WRITE_AT = 16 << 20    # bytes of counts held before they are written out (see write)
    # a row's key packs its (campaign, slot) code, dimension value code and profile code
    _CS_BITS, _VALUE_BITS, _PROFILE_BITS = 24, 20, 18
    _MAX_SUMMED = 1 << 39  # |value| of a summed column: a batch's sums stay exact in int64
    _EXACT = 1 << 31       # counter values are int32: totals stay below this (see add)

    def __init__(self, conn: sqlite3.Connection, kind: Kind | str, columns: Sequence[str]):
        import numpy
        self.np = numpy
        self.conn = conn
        self.kind = k = KINDS[kind] if isinstance(kind, str) else kind
        for c in k.summed:
            assert k.counters[c] == f"COALESCE({c}, 0)", c
        idx = {c: i for i, c in enumerate(columns)}
        self.live = bool(k.profile) and {"campaign_id", k.time} <= set(idx)
        self._cols = idx
        names = list(k.counters)
        derived = [c for c in names if c not in k.summed]
        self._derived_at = [names.index(c) for c in derived]
        self._derived_sql = [k.counters[c] for c in derived]
        self._summed_at = [names.index(c) for c in k.summed]
        self._summed_idx = [idx.get(c) for c in k.summed]
        self._profile_idx = [idx.get(c) for c in k.profile]
        self._dims = [(d, idx.get(col)) for d, col in k.dims.items()]
        self._total_from = 0    # every row has one key in each dimension: any gives totals
        self._profiles = _Codes()
        self._P = numpy.zeros((0, len(derived)), dtype=numpy.int64)
        self._cs = _Codes()                                  # packed (campaign, slot) -> code
        self._values = [_Codes() for _ in self._dims]        # per dim: value -> code
        self._keys: list[list[str]] = [[] for _ in self._dims]   # per dim: code -> key
        # per dim: batches not yet folded in, as (keys, counts, keys without the
        # profile, summed columns), and what they were folded into: (keys without the
        # profile, a column of counter values per key)
        self._pending: list[list] = [[] for _ in self._dims]
        self._pending_len = [0] * len(self._dims)
        self._counted: list = [[None, None] for _ in self._dims]
        self.rows_counted = 0
        self.writes = 0
        self._summed_abs = 0    # of every summed value counted: no int64 sum can pass it
        # Counter values are held as int32, half the memory of int64 (so that a million
        # rows' counts fit under WRITE_AT and are written once): exact while every total
        # is below _EXACT, which holds while (rows counted since the last write) times
        # (the largest counter value of a row) is. Past that, add writes out first.
        self._since_write = 0
        self._pmax = 1
        # (the credited conversions a counter reads are a new row's none: NULL, read as 0)
        info = [r for t in (k.table, k.credits) if t
                for r in conn.execute(f"PRAGMA table_info({t})").fetchall()]
        self._decl = {name: (decl, bool(notnull or pk)) for _, name, decl, notnull, _, pk in info}

    def add(self, cols: Sequence[Sequence]) -> bool:
        """Count a batch of rows that were all just inserted, given as its columns (values
        as built for the insert: "" for NULL)."""
        if not self.live:
            return False
        if not cols or not len(cols[0]):
            return True
        np = self.np
        n = len(cols[0])
        idx = self._cols
        cid = np.array(cols[idx["campaign_id"]])
        t = np.array(cols[idx[self.kind.time]])
        summed = np.zeros((len(self._summed_idx), n), np.int64)
        for j, i in enumerate(self._summed_idx):
            if i is not None:
                a = np.array([0 if v == "" else v for v in cols[i]])
                if a.dtype != np.int64:
                    return False
                m = np.abs(a)
                if m.max() >= self._MAX_SUMMED:
                    return False
                # the sums held (and the totals they are added to) stay within int64:
                # SQL counts the rest, and the rollup's checks see a total too large (the
                # limit is the rollup's, read from there: one value, wherever it is set)
                self._summed_abs += int(m.sum())
                if self._summed_abs >= rollup.MAX_TOTAL_MICROS:
                    return False
                summed[j] = a
        if cid.dtype != np.int64 or t.dtype != np.int64:
            return False
        slot = t // SLOT
        if cid.min() < 0 or cid.max() >= 1 << 27 or abs(slot).max() >= 1 << 30:
            return False
        ucs, inv = np.unique((cid << 31) | (slot + (1 << 30)), return_inverse=True)
        cs = self._cs
        cs_code = np.fromiter(map(cs.__getitem__, ucs.tolist()), np.int64, len(ucs))[inv]
        none = [None] * n
        pid = np.fromiter(map(self._profiles.__getitem__,
                              zip(*(none if i is None else cols[i] for i in self._profile_idx))),
                          np.int64, n)
        if len(cs) >= 1 << self._CS_BITS or len(self._profiles) > self.MAX_PROFILES:
            return False
        if len(self._profiles) > len(self._P) and not self._evaluate_profiles():
            return False
        if n * self._pmax >= self._EXACT:
            return False
        if (self._since_write + n) * self._pmax >= self._EXACT:
            self.write()
        codes = []
        for d, (_, i) in enumerate(self._dims):
            memo = self._values[d]
            codes.append(np.fromiter(map(memo.__getitem__, none if i is None else cols[i]),
                                     np.int64, n))
            if len(memo) > self.MAX_VALUES:
                return False
            if len(memo) > len(self._keys[d]) and not self._evaluate_keys(d):
                return False
        base = cs_code << (self._VALUE_BITS + self._PROFILE_BITS)
        for d, code in enumerate(codes):
            key = base | (code << self._PROFILE_BITS) | pid
            order = key.argsort()
            key = key[order]
            self._pending[d].append((*_runs(np, key, None),
                                     *_runs(np, key >> self._PROFILE_BITS, summed[:, order])))
            self._pending_len[d] += len(key)
            if self._pending_len[d] >= self.REDUCE_AT:
                self._reduce(d)
        self.rows_counted += n
        self._since_write += n
        return True

    def campaign_ids(self) -> set[int]:
        """The campaigns of the rows counted."""
        return {cs >> 31 for cs in self._cs}

    def _reduce(self, d: int) -> None:
        """Fold dimension ``d``'s pending batches into its totals per (campaign, slot,
        value): the profile counts times each profile's counter values, and the sums."""
        pending = self._pending[d]
        if not pending:
            return
        np = self.np
        pb = self._PROFILE_BITS
        keys = np.concatenate([k for k, _, _, _ in pending])
        counts = np.concatenate([c for _, c, _, _ in pending])
        order = keys.argsort(kind="stable")   # sorted runs, merged
        keys, counts = _runs(np, keys[order], counts[order])
        derived = (self._PT[:, keys & ((1 << pb) - 1)] * counts).astype(np.int32)
        sum_keys = np.concatenate([p for _, _, p, _ in pending])
        order = sum_keys.argsort(kind="stable")
        sum_keys = sum_keys[order]
        sums = np.concatenate([s for _, _, _, s in pending], axis=1)[:, order]
        self._counted[d] = [_merge(np, self._counted[d][0], keys >> pb, derived),
                            _merge(np, self._counted[d][1], sum_keys, sums)]
        pending.clear()
        self._pending_len[d] = 0

    def _evaluate_profiles(self) -> bool:
        """Counter values for the profiles met since the last call, computed by SQLite."""
        new = list(self._profiles)[len(self._P):]
        got = self._evaluate(list(self.kind.profile), new, self._derived_sql, (int, None))
        if got is None:
            return False
        # SUM skips NULL (an opt-out test on a reply without a keyword, say): it adds 0
        got = [[0 if v is None else v for v in row] for row in got]
        np = self.np
        self._P = np.concatenate([self._P, np.array(got, dtype=np.int64).reshape(
            len(new), len(self._derived_sql))])
        if self._P.size:
            self._pmax = max(1, int(np.abs(self._P).max()))
        self._PT = np.ascontiguousarray(self._P.T)
        return True

    def _evaluate_keys(self, d: int) -> bool:
        """The keys of dimension ``d``'s values met since the last call, as SQLite has them."""
        dim, _ = self._dims[d]
        new = list(self._values[d])[len(self._keys[d]):]
        got = self._evaluate([self.kind.dims[dim]], [(v,) for v in new],
                             [self.kind.dim_sql(dim)], (str,))
        if got is None:
            return False
        self._keys[d].extend(k for (k,) in got)
        return True

    def _evaluate(self, columns: list[str], rows: list[tuple], exprs: list[str],
                  want: tuple) -> list | None:
        """``exprs`` over each of ``rows`` (values of ``columns`` as built for an insert:
        "" for NULL) stored in a temporary table typed like the events table; None unless
        every answer is of a type in ``want`` (None for NULL) and every value is plain (a str, an int or None:
        values a dict would take for equal, 1 and 1.0 say, may be stored differently)."""
        if not all(v is None or type(v) is str or type(v) is int for row in rows for v in row):
            return None
        conn = self.conn
        decl = self._decl
        conn.execute("DROP TABLE IF EXISTS temp.rollup_eval")
        conn.execute("CREATE TEMP TABLE rollup_eval (" + ", ".join(
            f"{c} {decl[c][0]}" for c in columns) + ")")
        conn.executemany("INSERT INTO temp.rollup_eval VALUES (" + ", ".join(
            "?" if decl[c][1] else "NULLIF(?, '')" for c in columns) + ")", rows)
        out = conn.execute(f"SELECT {', '.join(exprs)} FROM temp.rollup_eval ORDER BY rowid"
                           ).fetchall()
        conn.execute("DROP TABLE temp.rollup_eval")
        ok = {None if t is None else t for t in want}
        return out if all((None if v is None else type(v)) in ok for row in out for v in row) \
            else None

    def held_bytes(self) -> int:
        """The memory the counts take (their arrays: the codes are bounded above)."""
        arrays = [a for d in range(len(self._dims)) for part in self._pending[d] for a in part]
        arrays += [a for state in self._counted if state[0] is not None
                   for pair in state for a in pair]
        return sum(a.nbytes for a in arrays)

    def write(self, skip: set[tuple[int, int]] | frozenset = frozenset()) -> None:
        """Add the rows counted so far to the rollup table and start again from nothing.
        Done at the end, and whenever the counts outgrow :attr:`WRITE_AT`, so that the
        memory held stays flat however long the file: counts are added to what the table
        holds, and a slot found dirty later is recomputed whole, so writing early changes
        no result."""
        k = self.kind
        cols = ", ".join(k.counters)
        self.conn.executemany(
            f"INSERT INTO {k.rollup} (campaign_id, dim, slot, key, {cols}) VALUES "
            f"({', '.join('?' * (4 + len(k.counters)))}) "
            "ON CONFLICT (campaign_id, dim, slot, key) DO UPDATE SET "
            + ", ".join(f"{c} = {c} + excluded.{c}" for c in k.counters),
            self.rows(skip=skip))
        self.writes += 1
        self._since_write = 0

    def rows(self, skip: set[tuple[int, int]] | frozenset = frozenset(),
             chunk: int = 10_000) -> Iterator[tuple]:
        """The rollup rows counted, ``(campaign_id, dim, slot, key, *counters)``, a dimension
        at a time in primary key order, leaving out the (campaign, slot) pairs in ``skip``. Made ``chunk`` rows
        at a time, and each dimension's counts are let go once its rows are out, so the
        memory held only shrinks from here."""
        np = self.np
        cs_of = np.fromiter(self._cs, np.int64, len(self._cs))   # code -> packed pair
        cid_of = cs_of >> 31
        slot_of = ((cs_of & ((1 << 31) - 1)) - (1 << 30)) * SLOT
        vb = self._VALUE_BITS
        vmask = (1 << vb) - 1
        # the campaign totals ('' sorts first) come from a dimension's counts: that one last
        order = [len(self._dims)] + [d for d in range(len(self._dims)) if d != self._total_from] \
            + [self._total_from]
        for d in order:
            total = d == len(self._dims)
            src = self._total_from if total else d
            self._reduce(src)
            if self._counted[src][0] is None:
                continue
            (prefixes, derived), (sum_keys, sums) = self._counted[src]
            if not total:
                self._counted[src] = [None, None]
            assert np.array_equal(prefixes, sum_keys)
            values = np.empty((len(self._derived_at) + len(self._summed_at), len(prefixes)),
                              np.int64)
            values[self._derived_at] = derived
            values[self._summed_at] = sums
            del derived, sums, sum_keys
            # values SQLite stores alike ('' and NULL, say) share a key, numbered in key
            # order; the campaign total has one key
            names = [""] if total else sorted(set(self._keys[src]))
            rank = {k: i for i, k in enumerate(names)}
            canon = np.array([0 if total else rank[k] for k in self._keys[src]], np.int64)
            prefixes = ((prefixes >> vb) << vb) | canon[prefixes & vmask]
            at = prefixes.argsort()
            prefixes, values = _runs(np, prefixes[at], values[:, at])
            codes = prefixes >> vb
            cids, slots, keys = cid_of[codes], slot_of[codes], prefixes & vmask
            at = np.lexsort((keys, slots, cids))   # primary key order
            dim = "" if total else self._dims[d][0]
            for i in range(0, len(at), chunk):
                part = at[i:i + chunk]
                for cid, slot, j, vals in zip(cids[part].tolist(), slots[part].tolist(),
                                              keys[part].tolist(), values[:, part].T.tolist()):
                    if (cid, slot) not in skip:
                        yield (cid, dim, slot, names[j], *vals)


class _Codes(dict):
    """value -> code, numbering values in the order first met."""

    __slots__ = ()

    def __missing__(self, value) -> int:
        code = self[value] = len(self)
        return code


def _merge(np, state, keys, values):
    """``state`` (None, or sorted distinct keys and their column sums, updated in place)
    with sorted ``keys`` and their ``values`` added in."""
    keys, values = _runs(np, keys, values)
    if state is None or state[0] is None or not len(state[0]):
        return keys, values
    known, sums = state
    # Once a file's first rows are in, nearly every key is one the state has: add those
    # where they are, and insert the few new ones (no sort of the whole state).
    at = np.searchsorted(known, keys)
    hit = known[np.minimum(at, len(known) - 1)] == keys
    sums[:, at[hit]] += values[:, hit]
    if hit.all():
        return known, sums
    miss = ~hit
    return (np.insert(known, at[miss], keys[miss]),
            np.insert(sums, at[miss], values[:, miss], axis=1))


def _runs(np, keys, values):
    """For sorted ``keys``: the distinct keys, and for each the sum of its ``values``
    (the last axis runs along the keys) or, when ``values`` is None, its count."""
    n = len(keys)
    if n == 0:
        return keys, (np.zeros(0, np.int64) if values is None else values[..., :0])
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    if values is None:
        return keys[starts], np.diff(np.append(starts, n))
    return keys[starts], np.add.reduceat(values, starts, axis=-1, dtype=values.dtype)
