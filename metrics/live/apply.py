"""The applier: inbox events into the main database, in order, a batch per transaction.

One applier runs per store (a thread of ``kpibot serve``). Each batch:

- reads events after the last one applied (``Store.live_applied``, in ``settings``, written
  in the same transaction as the changes, so a crash before the commit applies the batch
  again from scratch, and one after it never applies it twice);
- builds every new row with the importer's own builders (the ``twilio-messages`` and
  ``twilio-calls`` formats for Twilio's events, ``events`` and ``calls`` for ``/ingest``),
  so statuses, keywords, numbers and money read exactly as in an import;
- lets a status only move forward (:data:`MESSAGE_RANK`, :data:`CALL_RANK`): a ``sent``
  arriving after ``delivered`` changes nothing, in either order the end is the same;
- finds each event's campaign: the one the URL named, else the stored message's, else
  the sources file's sender table; a reply with none of these goes to the campaign of
  the message it answers. An event with no campaign (or one that cannot be read) is kept
  in ``live_unassigned`` with the reason, and tried again when the sources file or the
  stored messages change (:meth:`Applier.retry_held`);
- updates the rollups by taking out each changed event as it was and putting it in as it
  is (``Rollup.apply_delta``), and redoes reach for the recipients that changed.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import time
from typing import Any, Iterable

from .. import attribution
from ..errors import StoreError
from ..importers.binding import Context
from ..importers.fields import FORMATS, NULL
from ..importers.formats import bind
from ..importers.parse import build_batch
from ..importers.values import BadValue, call_status, click_key, identifier, sms_status
from ..importers.writer import TABLES, upsert_rows
from ..times import parse_time
from ..phones import BadPhoneNumber, PhoneHasher
from ..reach import refresh_reach_pairs
from ..replies import REPLY_WINDOW_S, reply_target
from ..rollup import KINDS, Rollup
from ..sources import Sources, SourcesFile
from ..store import Store
from ..times import zone

BATCH = 2_000
KEEP_KEYS_S = 3 * 86_400       # repeats are recognised for this long after an event
FORGET_EVERY_S = 60.0

# A status only moves forward. Within the final states a fixed order decides, so that two
# final statuses in either order end the same way: a delivery receipt wins (it proves the
# message arrived), then undelivered, failed, canceled. 'read' is stored as delivered.
MESSAGE_RANK = {"pending": 0, "sent": 10, "unknown": 20, "canceled": 30, "failed": 31,
                "undelivered": 32, "delivered": 33, "received": 33}
CALL_RANK = {"queued": 0, "ringing": 10, "in-progress": 20, "canceled": 30, "failed": 31,
             "no-answer": 32, "busy": 33, "completed": 34}

_TW_MESSAGE = ["Sid", "SentDate", "Status", "ErrorCode", "Direction", "Body", "From", "To",
               "MessagingServiceSid", "NumSegments"]
_TW_CALL = ["sid", "start_time", "status", "direction", "duration", "answered_by", "from",
            "to"]
_KEYWORD_OF_OPT_OUT_TYPE = {"STOP": "opt_out", "START": "opt_in", "HELP": "help"}
# flags a message earns from other events (a reply, a STOP, a click): a later copy of the
# message itself does not take them away
_EARNED = ("replied", "opted_out", "clicked")


@dataclasses.dataclass
class Applied:
    """What one run did."""

    events: int = 0             # inbox events read
    held: int = 0               # kept in live_unassigned
    released: int = 0           # held events that could now be applied
    campaigns: set[int] = dataclasses.field(default_factory=set)   # campaigns changed
    upto: int = 0


class Held(Exception):
    """This event cannot be applied now: kept with the reason."""

    def __init__(self, reason: str, sender: str | None = None):
        super().__init__(reason)
        self.reason, self.sender = reason, sender


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat()


def _parse_iso(text: str) -> int:
    try:
        return int(dt.datetime.fromisoformat(text).timestamp())
    except ValueError:
        raise Held(f"'{text[:40]}' is not a time") from None


class _Table:
    """The rows of one events table (messages or calls) a batch changes, as dicts: as
    they were when first read, and as they are now."""

    def __init__(self, conn: sqlite3.Connection, kind: str):
        self.conn, self.kind = conn, KINDS[kind]
        self.table = self.kind.table
        self.key = "message_key" if kind == "message" else "call_key"
        info = conn.execute(f"PRAGMA table_info({self.table})").fetchall()
        self.columns = [r[1] for r in info]
        # what a new row holds in the columns no builder fills: the schema's defaults
        self.defaults = {r[1]: int(r[4]) for r in info if r[4] is not None
                         and r[4].lstrip("-").isdigit()}
        self.rows: dict[str, dict] = {}      # key -> current row
        self.old: dict[str, dict] = {}       # key -> the row as stored before the batch
        self.new: set[str] = set()           # keys inserted by the batch
        self.absent: set[str] = set()        # keys looked up ahead and not stored
        self.written: set[int] = set()       # ids of the rows the batch wrote

    def prefetch(self, keys: Iterable[str]) -> None:
        """Read the stored rows of ``keys`` in a few queries, not one per event."""
        want = [k for k in dict.fromkeys(keys) if k not in self.rows and k not in self.absent]
        for i in range(0, len(want), 500):
            part = want[i:i + 500]
            marks = ", ".join("?" * len(part))
            found = set()
            for got in self.conn.execute(
                    f"SELECT * FROM {self.table} WHERE {self.key} IN ({marks})", part):
                row = dict(zip(self.columns, got))
                key = row[self.key]
                found.add(key)
                self.old[key] = dict(row)
                self.rows[key] = row
            self.absent.update(k for k in part if k not in found)

    def get(self, key: str) -> dict | None:
        row = self.rows.get(key)
        if row is None:
            if key in self.absent:
                return None
            cur = self.conn.execute(f"SELECT * FROM {self.table} WHERE {self.key} = ?", (key,))
            got = cur.fetchone()
            if got is None:
                return None
            row = dict(zip(self.columns, got))
            self.old[key] = dict(row)
            self.rows[key] = row
        return row

    def by_id(self, row_id: int) -> dict | None:
        got = self.conn.execute(f"SELECT {self.key} FROM {self.table} WHERE id = ?",
                                (row_id,)).fetchone()
        return self.get(got[0]) if got else None

    def put_new(self, row: dict) -> None:
        key = row[self.key]
        for c in self.columns:
            row.setdefault(c, self.defaults.get(c))
        self.rows[key] = row
        self.new.add(key)

    def changed(self) -> list[str]:
        return [k for k, row in self.rows.items() if k in self.new or row != self.old.get(k)]

    def write(self) -> set[int]:
        """Write the changed rows and bring the rollups (and reach) along; returns the
        campaigns touched."""
        keys = self.changed()
        if not keys:
            return set()
        conn, cols = self.conn, [c for c in self.columns if c != "id"]
        inserts = [self.rows[k] for k in keys if k in self.new]
        updates = [self.rows[k] for k in keys if k not in self.new]
        conn.execute(f"DROP TABLE IF EXISTS temp.live_old_{self.table}")
        conn.execute(f"DROP TABLE IF EXISTS temp.live_new_{self.table}")
        conn.execute(f"CREATE TEMP TABLE live_old_{self.table} AS SELECT * FROM {self.table} "
                     "WHERE 0")
        conn.execute(f"CREATE TEMP TABLE live_new_{self.table} AS SELECT * FROM {self.table} "
                     "WHERE 0")
        marks = ", ".join("?" * len(self.columns))
        conn.executemany(f"INSERT INTO temp.live_old_{self.table} VALUES ({marks})",
                         [[self.old[r[self.key]][c] for c in self.columns] for r in updates])
        if updates:
            sets = ", ".join(f"{c} = ?" for c in cols)
            conn.executemany(f"UPDATE {self.table} SET {sets} WHERE id = ?",
                             [[r[c] for c in cols] + [r["id"]] for r in updates])
        if inserts:     # the ids SQLite would give them (max + 1 on), in one statement
            (top,) = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {self.table}").fetchone()
            for n, r in enumerate(inserts, top + 1):
                r["id"] = n
            conn.executemany(
                f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES ({marks})",
                [[r[c] for c in self.columns] for r in inserts])
        conn.executemany(f"INSERT INTO temp.live_new_{self.table} VALUES ({marks})",
                         [[r[c] for c in self.columns] for r in inserts + updates])
        Rollup(conn, self.kind).apply_delta(f"temp.live_old_{self.table}",
                                            f"temp.live_new_{self.table}")
        if self.table == "messages":
            conn.execute("DROP TABLE IF EXISTS temp.live_reach")
            conn.execute("CREATE TEMP TABLE live_reach AS "
                         "SELECT campaign_id, recipient, sent_at, id FROM temp.live_old_messages "
                         "UNION SELECT campaign_id, recipient, sent_at, id FROM "
                         "temp.live_new_messages")
            refresh_reach_pairs(conn, "temp.live_reach")
            conn.execute("DROP TABLE temp.live_reach")
        touched = {r["campaign_id"] for r in inserts + updates}
        touched |= {self.old[r[self.key]]["campaign_id"] for r in updates}
        self.written.update(r["id"] for r in inserts + updates)
        conn.execute(f"DROP TABLE temp.live_old_{self.table}")
        conn.execute(f"DROP TABLE temp.live_new_{self.table}")
        # what is written is the starting point of any further change in this batch
        self.old = {k: dict(r) for k, r in self.rows.items()}
        self.new = set()
        return touched


class _Batch:
    """One transaction's worth of events."""

    def __init__(self, conn: sqlite3.Connection, store: Store, sources: Sources,
                 phones: PhoneHasher, tz: dt.tzinfo, window_s: int):
        self.conn, self.store, self.sources = conn, store, sources
        self.phones, self.tz, self.window_s = phones, tz, window_s
        self.messages = _Table(conn, "message")
        self.calls = _Table(conn, "call")
        self._plans: dict[tuple, Any] = {}
        self._campaign_ids: dict[tuple[str, str], int] = {}
        self.replies: list[str] = []        # inbound keys to credit to what they answer
        self.clicks: list[str] = []         # keys of the clicks stored by the batch
        self.orders: list[str] = []         # order ids of the conversions it stored
        self.attributes: set[tuple[int, str, str]] = set()   # (campaign, kind, name)

    # -- building rows with the importer's builders ------------------------------------
    def _campaign_id(self, name: str, channel: str) -> int:
        key = (name, channel)             # looked up once a batch (it is one transaction)
        cid = self._campaign_ids.get(key)
        if cid is None:
            cid = self._campaign_ids[key] = self.store.campaign_id(self.conn, name, channel)
        return cid

    def _build(self, fmt: str, header: list[str], fields: list[list[str]],
               campaign: str | None) -> list[dict]:
        """Rows through the importer's builder of ``fmt``; a bad value holds the event."""
        plan, _ = self._plans.get((fmt, tuple(header), campaign)) or (None, None)
        if plan is None:
            ctx = Context(tz=self.tz, phones=self.phones, campaign_id=self._campaign_id,
                          import_id=0, campaign=campaign)
            try:
                plan = bind(FORMATS[fmt], header, ctx)
            except ValueError as exc:
                raise Held(str(exc)) from None
            self._plans[(fmt, tuple(header), campaign)] = plan, ctx
        columns, errors = build_batch(plan.build, list(enumerate(fields, 1)))
        if errors:
            e = errors[0]
            where = f"row {e.line}, " if len(fields) > 1 else ""
            raise Held(f"{where}{e.column}: {e.reason}")
        names = TABLES[FORMATS[fmt].kind][1]
        out = []
        for values in zip(*columns):
            row = {c: (None if v == NULL else v) for c, v in zip(names, values)}
            row["import_id"] = None
            if isinstance(row.get("recipient"), bytearray):
                row["recipient"] = bytes(row["recipient"])
            out.append(row)
        return out

    # -- one event ---------------------------------------------------------------------
    def apply(self, at: int, body: dict) -> None:
        t = body.get("t")
        if t == "status":
            self._status(at, body)
        elif t == "inbound":
            self._inbound(at, body)
        elif t == "call":
            self._call(at, body)
        elif t == "click":
            self._click(at, body)
        elif t == "rows":
            self._rows(body)
        elif t == "record":
            (self._message_record if body["kind"] == "message" else self._call_record)(body)
        elif t == "unreadable":
            raise Held(f"an unreadable CloudEvent ({body.get('reason')})")
        else:
            raise Held(f"unknown event type {t!r}")

    def _campaign_named(self, name: str | None, channel: str) -> int | None:
        if not name:
            return None
        try:
            from ..importers.values import campaign_name
            return self._campaign_id(campaign_name(name), channel)
        except BadValue as exc:
            raise Held(f"?campaign=: {exc}") from None

    def _status(self, at: int, b: dict) -> None:
        try:
            status = sms_status(b["status"])
        except BadValue as exc:
            raise Held(str(exc)) from None
        row = self.messages.get(b["sid"])
        if row is None:
            name = b.get("campaign") or self.sources.campaign_for(b.get("from"), b.get("service"))
            if not name:
                raise Held("no campaign: the callback URL has no ?campaign=, no message with "
                           "this SID is stored, and the sender is not in [campaign_by_sender]",
                           sender=b.get("service") or b.get("from"))
            fields = [b["sid"], _iso(at), b["status"], b.get("error", ""), "outbound-api", "",
                      b.get("from", ""), b.get("to", ""), b.get("service", ""), ""]
            self.messages.put_new(self._build("twilio-messages", _TW_MESSAGE, [fields], name)[0])
            return
        cid = self._campaign_named(b.get("campaign"), "sms")
        if cid is not None:
            row["campaign_id"] = cid
        if MESSAGE_RANK.get(status, -1) > MESSAGE_RANK.get(row["status"], -1):
            row["status"] = status
            # the error of the status it moved to (a delivery receipt after an
            # 'undelivered' leaves no error behind)
            row["error_code"] = b["error"][:40] if b.get("error") else None
        elif status == row["status"] and b.get("error") and not row["error_code"]:
            row["error_code"] = b["error"][:40]

    def _inbound(self, at: int, b: dict) -> None:
        if self.messages.get(b["sid"]) is not None:
            return                                   # a repeat of a reply already stored
        name = b.get("campaign") or self.sources.campaign_for(b.get("to"), b.get("service"))
        if not name:
            try:
                phone = self.phones(b.get("from", ""))
            except BadPhoneNumber as exc:
                raise Held(f"From: {exc}") from None
            cid = phone and self._answered_campaign(phone.hash, at)
            if cid:
                name = self.conn.execute("SELECT name FROM campaigns WHERE id = ?",
                                         (cid,)).fetchone()[0]
        if not name:
            raise Held("no campaign: the webhook URL has no ?campaign=, our number is not in "
                       "[campaign_by_sender], and no message went to this number in the "
                       f"{self.window_s // 86400} days before", sender=b.get("service") or b.get("to"))
        fields = [b["sid"], _iso(at), "received", "", "inbound", b.get("body", ""),
                  b.get("from", ""), b.get("to", ""), b.get("service", ""),
                  b.get("segments", "")]
        row = self._build("twilio-messages", _TW_MESSAGE, [fields], name)[0]
        opt = _KEYWORD_OF_OPT_OUT_TYPE.get(b.get("opt") or "")
        if opt:
            row["keyword"] = opt     # Twilio matched its own (or the account's) keywords
        self.messages.put_new(row)
        self.replies.append(row["message_key"])

    def _answered_campaign(self, recipient: bytes, at: int) -> int | None:
        """The campaign of the message a reply from ``recipient`` at ``at`` answers: stored,
        or new in this batch (the later of the two)."""
        best = reply_target(self.conn, recipient, at, self.window_s)
        best_at = best and self.conn.execute("SELECT sent_at FROM messages WHERE id = ?",
                                             (best[0],)).fetchone()[0]
        cid = best and best[1]
        for key in self.messages.new:
            o = self.messages.rows[key]
            if (o["direction"] == "outbound" and o["recipient"] == recipient
                    and at - self.window_s <= o["sent_at"] <= at
                    and (best_at is None or o["sent_at"] >= best_at)):
                best_at, cid = o["sent_at"], o["campaign_id"]
        return cid

    def _new_call_campaign(self, b: dict, no_campaign: str, named_first: bool = True) -> str:
        """The campaign of a call not stored yet: the one the URL named, else our number's
        (a sync's --campaign comes after our number's: ``named_first`` False)."""
        ours = b.get("to") if b.get("direction", "").lower().startswith("inbound") \
            else b.get("from")
        if named_first:
            name = b.get("campaign") or self.sources.campaign_for(ours)
        else:
            name = self.sources.campaign_for(ours) or b.get("campaign")
        if not name:
            raise Held(f"no campaign: {no_campaign}, no call with this SID is stored, and "
                       "the caller ID is not in [campaign_by_sender]", sender=ours)
        return name

    def _call(self, at: int, b: dict) -> None:
        try:
            status = call_status(b["status"])
        except BadValue as exc:
            raise Held(str(exc)) from None
        started = b.get("at") or at
        row = self.calls.get(b["sid"])
        if row is None:
            name = self._new_call_campaign(b, "the callback URL has no ?campaign=")
            fields = [b["sid"], _iso(started), b["status"], b.get("direction") or "outbound-api",
                      b.get("duration", ""), b.get("answered_by", ""), b.get("from", ""),
                      b.get("to", "")]
            self.calls.put_new(self._build("twilio-calls", _TW_CALL, [fields], name)[0])
            return
        # what a later callback knows: the duration and who answered, read as an import
        # reads them (first: a bad value holds the event before anything changes)
        probe = [b["sid"], _iso(started), b["status"], b.get("direction") or "outbound-api",
                 b.get("duration", ""), b.get("answered_by", ""), b.get("from", ""),
                 b.get("to", "")]
        name = self.conn.execute("SELECT name FROM campaigns WHERE id = ?",
                                 (row["campaign_id"],)).fetchone()[0]
        built = self._build("twilio-calls", _TW_CALL, [probe], name)[0]
        cid = self._campaign_named(b.get("campaign"), "call")
        if cid is not None:
            row["campaign_id"] = cid
        if started < row["started_at"]:
            row["started_at"] = started
        if CALL_RANK.get(status, -1) > CALL_RANK.get(row["status"], -1):
            row["status"] = status
        if built["duration_s"] is not None and (row["duration_s"] or 0) < built["duration_s"]:
            row["duration_s"] = built["duration_s"]
        if built["answered_by"] is not None and not row["answered_by"]:
            row["answered_by"] = built["answered_by"]

    def _campaign_name(self, cid: int) -> str:
        return self.conn.execute("SELECT name FROM campaigns WHERE id = ?", (cid,)).fetchone()[0]

    def _message_record(self, b: dict) -> None:
        """A message as Twilio's REST API lists it (``kpibot sync twilio``)."""
        outbound = not b.get("direction", "").lower().startswith("inbound")
        fields = [b["sid"], b["sent"], b["status"], b.get("error", ""),
                  b.get("direction") or "outbound-api", b.get("body", ""), b.get("from", ""),
                  b.get("to", ""), b.get("service", ""), b.get("segments", ""),
                  b.get("price", ""), b.get("price_unit", "")]
        header = _TW_MESSAGE + ["Price", "PriceUnit"]
        row = self.messages.get(b["sid"])
        if row is None:
            name = self.sources.campaign_for(b.get("from") if outbound else b.get("to"),
                                             b.get("service")) or b.get("campaign")
            if not name and not outbound:
                try:
                    phone = self.phones(b.get("from", ""))
                except BadPhoneNumber as exc:
                    raise Held(f"From: {exc}") from None
                cid = phone and self._answered_campaign(phone.hash, _parse_iso(b["sent"]))
                name = cid and self._campaign_name(cid)
            if not name:
                raise Held("no campaign: no message with this SID is stored, the sender is "
                           "not in [campaign_by_sender], and `kpibot sync` had no --campaign",
                           sender=b.get("service") or (b.get("from") if outbound else b.get("to")))
            new = self._build("twilio-messages", header, [fields], name)[0]
            self.messages.put_new(new)
            if new["direction"] == "inbound":
                self.replies.append(new["message_key"])
            return
        got = self._build("twilio-messages", header, [fields],
                          self._campaign_name(row["campaign_id"]))[0]
        if MESSAGE_RANK.get(got["status"], -1) > MESSAGE_RANK.get(row["status"], -1):
            row["status"] = got["status"]
        row["sent_at"] = got["sent_at"]              # when Twilio says it was sent
        for col in ("cost_micros", "currency", "segments", "error_code", "recipient",
                    "country"):
            if got[col] is not None and (row[col] is None or col in ("cost_micros",
                                                                     "currency")):
                row[col] = got[col]

    def _call_record(self, b: dict) -> None:
        """A call as Twilio's REST API lists it."""
        fields = [b["sid"], b["sent"], b["status"], b.get("direction") or "outbound-api",
                  b.get("duration", ""), b.get("answered_by", ""), b.get("from", ""),
                  b.get("to", ""), b.get("price", ""), b.get("price_unit", "")]
        header = _TW_CALL + ["price", "price_unit"]
        row = self.calls.get(b["sid"])
        if row is None:
            name = self._new_call_campaign(b, "`kpibot sync` had no --campaign",
                                           named_first=False)
            self.calls.put_new(self._build("twilio-calls", header, [fields], name)[0])
            return
        got = self._build("twilio-calls", header, [fields],
                          self._campaign_name(row["campaign_id"]))[0]
        if CALL_RANK.get(got["status"], -1) > CALL_RANK.get(row["status"], -1):
            row["status"] = got["status"]
        row["started_at"] = got["started_at"]
        for col in ("duration_s", "answered_by", "cost_micros", "currency", "recipient",
                    "country"):
            if got[col] is not None:
                row[col] = got[col]

    def _click(self, at: int, b: dict) -> None:
        """A click is kept whether or not its message is stored: it belongs to that message,
        which counts as clicked as soon as it is (``attribution.mark_clicked``)."""
        try:
            sid = identifier(b.get("sid") or "", "message SID")
            when = parse_time(b["at"]) if b.get("at") else at
            phone = self.phones(b.get("to") or "")
        except BadValue as exc:
            raise Held(str(exc)) from None
        except ValueError as exc:
            raise Held(f"click_time: {exc}") from None
        except BadPhoneNumber as exc:
            raise Held(f"to: {exc}") from None
        link = (b.get("link") or "").strip()
        key = click_key(sid, when, link)
        self.conn.execute(
            "INSERT INTO clicks(click_key, message_key, clicked_at, recipient, link) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(click_key) DO NOTHING",
            (key, sid, when, phone.hash if phone else None, link or None))
        self.clicks.append(key)
        row = self.messages.get(sid)
        if row is not None and not row["clicked"] and row["direction"] == "outbound":
            row["clicked"] = 1

    def _rows(self, b: dict) -> None:
        kind, header, rows = b["kind"], b["header"], b["rows"]
        if kind == "conversion":
            self._conversions(header, rows)
            return
        fmt = "events" if kind == "message" else "calls"
        table = self.messages if kind == "message" else self.calls
        rank = MESSAGE_RANK if kind == "message" else CALL_RANK
        for row in self._build(fmt, header, rows, None):
            stored = table.get(row[table.key])
            if stored is None:
                table.put_new(row)
                if row.get("direction") == "inbound":
                    self.replies.append(row[table.key])
                continue
            status = stored["status"]
            kept = {f: stored.get(f) or 0 for f in _EARNED if f in stored}
            for c, v in row.items():       # the later copy wins ...
                if c not in ("id", "reply_to"):
                    stored[c] = v
            if rank.get(status, -1) > rank.get(stored["status"], -1):
                stored["status"] = status  # ... but a status only moves forward,
            for f, v in kept.items():      # and what replies and clicks earned stays
                stored[f] = max(stored[f] or 0, v)

    def _conversions(self, header: list[str], rows: list[list[str]]) -> None:
        """``/ingest`` conversion rows, stored as an import stores them (a later copy of an
        order updates it); credited once the batch's messages are written."""
        built = self._build("conversions", header, rows, None)
        columns = TABLES["conversion"][1]
        cells = [[NULL if r[c] is None else r[c] for c in columns] for r in built]
        upsert_rows(self.conn, "conversion", [list(col) for col in zip(*cells)])
        self.orders.extend(r["order_key"] for r in built)

    # -- replies -----------------------------------------------------------------------
    def _open_replies_to_new_messages(self, fresh: list[str]) -> None:
        """Replies stored before the message they answer (a sync or an import brought the
        message later): those from the recipients of this batch's new outbound messages,
        after them and within the window, are credited now."""
        for key in fresh:
            o = self.messages.rows[key]
            if o["direction"] != "outbound" or o["recipient"] is None:
                continue
            for (reply_key,) in self.conn.execute(
                    "SELECT message_key FROM messages INDEXED BY messages_unattributed "
                    "WHERE direction = 'inbound' AND reply_to IS NULL AND sent_at >= ? "
                    "AND sent_at <= ? AND recipient = ?",
                    (o["sent_at"], o["sent_at"] + self.window_s, o["recipient"])).fetchall():
                if self.messages.get(reply_key) is not None and reply_key not in self.replies:
                    self.replies.append(reply_key)

    def _credit_replies(self) -> None:
        """Each new inbound message to the latest outbound message to the same number
        within the window before it, as ``replies.attribute_replies`` does for imports:
        that message is marked replied to (or opted out), and the reply joins its
        campaign. Runs once the batch's rows are written, so a message of this very batch
        can be the one answered."""
        for key in self.replies:
            reply = self.messages.rows[key]
            if reply["reply_to"] is not None or reply["recipient"] is None:
                continue
            target = reply_target(self.conn, reply["recipient"], reply["sent_at"],
                                  self.window_s)
            if not target:
                continue
            out = self.messages.by_id(target[0])
            reply["reply_to"], reply["campaign_id"] = out["id"], out["campaign_id"]
            if reply["keyword"] == "opt_out":
                out["opted_out"] = max(out["opted_out"] or 0, 1)
            elif reply["keyword"] is None:
                out["replied"] = max(out["replied"] or 0, 1)

    def _replies_follow_their_message(self, moved: list[dict]) -> None:
        """A message moved to another campaign takes its replies along (as imports do)."""
        for out in moved:
            for (reply_key,) in self.conn.execute(
                    "SELECT message_key FROM messages WHERE reply_to = ?", (out["id"],)
                    ).fetchall():
                reply = self.messages.get(reply_key)
                if reply is not None:
                    reply["campaign_id"] = out["campaign_id"]

    def write(self) -> set[int]:
        """Write what the batch changed; returns the campaigns touched."""
        for cid, kind, name in self.attributes:   # extra /ingest fields, for `by <attribute>`
            self.conn.execute("INSERT OR IGNORE INTO attribute_names(campaign_id, kind, name) "
                              "VALUES (?, ?, ?)", (cid, kind, name))
        moved = [r for k, r in self.messages.rows.items() if k in self.messages.old
                 and r["direction"] == "outbound"
                 and r["campaign_id"] != self.messages.old[k]["campaign_id"]]
        fresh = list(self.messages.new)
        touched = self.messages.write() | self.calls.write()
        self._open_replies_to_new_messages(fresh)
        self._replies_follow_their_message(moved)
        if self.replies or moved:
            self._credit_replies()
            touched |= self.messages.write()
        return touched | self._attribute()

    def _attribute(self) -> set[int]:
        """Clicks and conversions: what the batch's messages, calls, clicks and orders claim
        or may now be claimed by (``metrics.attribution``); last, once every row is
        written. Returns the campaigns whose figures moved."""
        conn, codes, touched = self.conn, dict(self.sources.codes), set()
        ids = "SELECT value FROM json_each(?)"
        for kind, table in (("message", self.messages), ("call", self.calls)):
            if table.written:
                touched |= attribution.after_events(
                    conn, kind, ids, (json.dumps(sorted(table.written)),), codes).campaigns
        if self.clicks:
            touched |= attribution.after_clicks(
                conn, f"SELECT id FROM clicks WHERE click_key IN ({ids})",
                (json.dumps(self.clicks),), codes).campaigns
        if self.orders:
            touched |= attribution.credit(
                conn, f"SELECT id FROM conversions WHERE order_key IN ({ids})",
                (json.dumps(self.orders),), codes).campaigns
        return touched

    def keep_attributes(self) -> None:
        """The attributes the plans met so far belong to events that applied."""
        for plan, ctx in self._plans.values():
            self.attributes.update((cid, plan.kind, name) for cid, name in ctx.attributes)


class Applier:
    """Moves inbox events into the main database (see the module's docstring). One per
    store; :meth:`run_once` is called by ``kpibot serve``'s applier thread whenever
    events arrive, and by tests."""

    def __init__(self, store: Store, sources: SourcesFile | None = None,
                 window_s: int = REPLY_WINDOW_S, region: str | None = None):
        import os
        self.store = store
        self.sources = sources or SourcesFile()
        self.window_s = window_s
        self.region = region or os.environ.get("KPIBOT_REGION", "US")
        self._phones: PhoneHasher | None = None
        self._held_stamp: tuple | None = None
        self._forgot_at = float("-inf")

    def _phones_now(self) -> PhoneHasher:
        if self._phones is None:
            self._phones = PhoneHasher(self.store.hash_key(), self.region)
        return self._phones

    def applied_upto(self) -> int:
        return self.store.live_applied()

    def pending(self) -> int:
        """Events acknowledged and not yet applied."""
        upto = self.applied_upto()
        return self.store.inbox.execute("SELECT COUNT(*) FROM events WHERE id > ?",
                                        (upto,)).fetchone()[0]

    def run_once(self, limit: int = BATCH, now: int | None = None) -> Applied:
        """Apply up to ``limit`` events in one transaction. A batch that fails for any
        reason but a busy or full database is tried again from its first event alone, and
        an event that fails alone is held with the reason: one bad event never stops the
        ones behind it."""
        try:
            return self._run(limit, now)
        except Exception as exc:
            if _retry_later(exc):
                raise
        # the same events one at a time, each in its own transaction
        total = Applied(upto=self.applied_upto())
        for _ in range(limit):
            try:
                done = self._run(1, now)
            except Exception as exc:
                if _retry_later(exc):
                    raise
                done = self._hold_first(exc)
            if not done.events:
                break
            total.events += done.events
            total.held += done.held
            total.campaigns |= done.campaigns
            total.upto = done.upto
        return total

    def _hold_first(self, failure: Exception) -> Applied:
        store = self.store
        done = Applied(upto=self.applied_upto())
        with store.transaction() as conn:
            upto = store.live_applied(conn)
            first = store.inbox_after(upto, 1)
            if first:
                event_id, at, source, body = first[0]
                reason = f"could not be applied: {' '.join(str(failure).split())[:300]}"
                conn.execute(
                    "INSERT INTO live_unassigned(event_id, received_at, source, what, sender, "
                    "reason, body) VALUES (?, ?, ?, ?, NULL, ?, ?) ON CONFLICT(event_id) DO "
                    "UPDATE SET reason = excluded.reason", (event_id, at, source, _what(body),
                                                           reason, body))
                store.set_live_applied(conn, event_id)
                done.upto, done.events, done.held = event_id, 1, 1
        return done

    def _run(self, limit: int, now: int | None) -> Applied:
        store = self.store
        done = Applied(upto=self.applied_upto())
        events = store.inbox_after(done.upto, limit)
        if not events:
            return done
        phones, sources = self._phones_now(), self.sources.get()
        tz = zone(store.timezone())
        with store.transaction() as conn:
            upto = store.live_applied(conn)                  # again, under the write lock
            events = [e for e in events if e[0] > upto]
            if not events:
                return done
            _settle_rollups(conn)
            batch = _Batch(conn, store, sources, phones, tz, self.window_s)
            parsed = [_loads(body) for _, _, _, body in events]
            batch.messages.prefetch(p["sid"] for p in parsed if isinstance(p, dict) and
                                    p.get("t") in ("status", "inbound") and
                                    isinstance(p.get("sid"), str))
            for (event_id, at, source, body), payload in zip(events, parsed):
                self._one(batch, conn, event_id, at, source, body, done, payload)
            done.campaigns |= batch.write()
            done.upto = events[-1][0]
            store.set_live_applied(conn, done.upto)
        done.events = len(events)
        # old keys go at most once a minute: a delete takes the inbox's write lock, which
        # the acknowledgements of kpibot serve (another process) then wait for
        if now is not None or time.monotonic() - self._forgot_at >= FORGET_EVERY_S:
            self._forgot_at = time.monotonic()
            store.inbox_forget(done.upto, (now or int(time.time())) - KEEP_KEYS_S)
        return done

    def _one(self, batch: _Batch, conn, event_id: int, at: int, source: str, body: str,
             done: Applied, payload: dict | None = None) -> None:
        """Apply one event, or keep it with the reason (in a savepoint: a held event leaves
        no half-applied trace)."""
        conn.execute("SAVEPOINT live_event")
        try:
            batch.apply(at, payload if isinstance(payload, dict) else json.loads(body))
        except (Held, ValueError, KeyError, TypeError) as exc:
            # nothing of the event is in the batch's rows (every Held is raised before a
            # row changes); what it wrote (a new campaign) goes, with the plans that knew it
            conn.execute("ROLLBACK TO live_event")
            batch._plans.clear()
            batch._campaign_ids.clear()
            reason = exc.reason if isinstance(exc, Held) else f"unreadable event ({exc})"
            sender = exc.sender if isinstance(exc, Held) else None
            what = _what(body)
            conn.execute(
                "INSERT INTO live_unassigned(event_id, received_at, source, what, sender, "
                "reason, body) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(event_id) DO UPDATE "
                "SET reason = excluded.reason, sender = excluded.sender",
                (event_id, at, source, what, sender, reason[:500], body))
            done.held += 1
        else:
            batch.keep_attributes()
            conn.execute("DELETE FROM live_unassigned WHERE event_id = ?", (event_id,))
        finally:
            conn.execute("RELEASE live_event")

    def retry_held(self, force: bool = False, limit: int = BATCH) -> Applied:
        """Try the held events again: when the sources file or the stored messages changed
        since the last try (or ``force``). Those that apply now leave the list. A
        ``[campaign_by_code]`` table that changed credits the conversions with a code
        again (``done.campaigns`` says whose figures moved)."""
        store = self.store
        done = Applied(upto=self.applied_upto())
        codes = dict(self.sources.get().codes)
        if attribution.codes_changed(store.conn, codes):
            with store.transaction() as conn:
                done.campaigns |= attribution.credit(conn, "SELECT NULL WHERE 0", (),
                                                     codes).campaigns
        stamp = (self.sources.stamp,
                 store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM imports").fetchone()[0],
                 store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0],
                 store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM calls").fetchone()[0])
        if not force and stamp == self._held_stamp:
            return done
        self._held_stamp = stamp
        after, tried = 0, 0
        while True:        # every held event, a page (one transaction) at a time
            held = store.conn.execute("SELECT event_id, received_at, source, body FROM "
                                      "live_unassigned WHERE event_id > ? ORDER BY event_id "
                                      "LIMIT ?", (after, limit)).fetchall()
            if not held:
                break
            after, tried = held[-1][0], tried + len(held)
            try:
                self._apply_held(held, done)
            except Exception as exc:
                if _retry_later(exc):
                    raise
                # one of them fails in a way that is not a reason to hold it (a bug, a
                # total too large): each on its own, and the one that fails keeps the reason
                for event in held:
                    try:
                        self._apply_held([event], done)
                    except Exception as exc:
                        if _retry_later(exc):
                            raise
                        with store.transaction() as conn:
                            conn.execute(
                                "UPDATE live_unassigned SET reason = ? WHERE event_id = ?",
                                (f"could not be applied: {' '.join(str(exc).split())[:300]}",
                                 event[0]))
        done.held = store.conn.execute("SELECT COUNT(*) FROM live_unassigned "
                                       "WHERE event_id <= ?", (after,)).fetchone()[0]
        done.released = tried - done.held
        return done

    def _apply_held(self, held: list[tuple], done: Applied) -> None:
        store = self.store
        phones, sources = self._phones_now(), self.sources.get()
        tz = zone(store.timezone())
        with store.transaction() as conn:
            _settle_rollups(conn)
            batch = _Batch(conn, store, sources, phones, tz, self.window_s)
            for event_id, at, source, body in held:
                self._one(batch, conn, event_id, at, source, body, done)
            done.campaigns |= batch.write()


def _loads(body: str) -> Any:
    """An event's JSON, or None where it does not read (applying it says why)."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def _retry_later(exc: Exception) -> bool:
    """A failure of the database, not of the events: a busy database (an import), a full
    disk, a read-only file. The same batch is tried again later."""
    if isinstance(exc, StoreError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL,
                        sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY) or "locked" in str(exc)
    return isinstance(exc, (KeyboardInterrupt, MemoryError))


def _what(body: str) -> str:
    try:
        t = json.loads(body).get("t")
    except (ValueError, AttributeError):
        return "event"
    return {"status": "message status", "inbound": "reply", "call": "call",
            "click": "click", "rows": "ingest rows", "record": "synced record",
            "unreadable": "unreadable event"}.get(t, "event")


def _settle_rollups(conn) -> None:
    """A batch's rollup deltas assume no slot is waiting for a recount; one left by a
    write that did not finish its rollups is recounted first."""
    if conn.execute("SELECT 1 FROM rollup_dirty LIMIT 1").fetchone():
        for kind in KINDS.values():
            Rollup(conn, kind).finish()


def held_summary(store: Store) -> list[dict]:
    """The events kept as unassigned, grouped by what they are, the sender and the reason."""
    rows = store.conn.execute(
        "SELECT what, COALESCE(sender, ''), reason, COUNT(*), MIN(received_at), "
        "MAX(received_at) FROM live_unassigned GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2").fetchall()
    return [{"what": w, "sender": s or None, "reason": r, "events": n, "first": f, "last": last}
            for w, s, r, n, f, last in rows]
