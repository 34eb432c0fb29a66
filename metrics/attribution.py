"""Attribution: clicks and conversions from other systems (a link shortener, a shop, a
form, a CRM), credited to the messages, calls and campaigns that earned them.

The rules (the contract's formats 7 and 8):

- A click belongs to its message (the provider's SID): the message counts as clicked.
- A conversion that names a message (or call) is credited to it ("named").
- Otherwise it goes to the message of the customer's latest click within the click
  window before it ("click": clicks win, as on Klaviyo and Attentive), else to the latest
  message delivered to them, or call answered, within the delivery window before it
  ("delivery"). Each window is the campaign's own, else the team's, else 5 days and 24
  hours. The edges count: a click exactly 5 days before is inside, one second more is not.
  Ties (two clicks in the same second) go to the greater message id text, so that the
  answer never depends on which was stored first.
- What no message claims, a ``code`` may: ``[campaign_by_code]`` in the sources file
  names its campaign ("code"); it counts at the conversion's own time.
- The rest is kept, uncredited, with the reason (:func:`uncredited`), never dropped.

A credit is a function of what is stored, nothing else: :func:`credit` recomputes it for
the conversions a change may concern (an import of messages, clicks or orders; a live
batch; new windows), so importing messages after orders gives what the other order gives.

A credited conversion adds to its message's (or call's) ``conversions`` and
``conversion_revenue_micros`` (kept beside the event, in ``message_credits`` or
``call_credits``), so rollups, breakdowns (by variant, segment, any attribute) and A/B
tests see it where the message is, in the period of its send time. The rollups are
brought along cell by cell (``Rollup.apply_delta``), not recounted.

Recipients are matched on the keyed hash only (``phones``).
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field

from .names import name_key
from .rollup import KINDS, SLOT, Rollup, columns_read, slot_sql
from .store import iso, utcnow

CLICK_WINDOW_S = 5 * 86_400
DELIVERY_WINDOW_S = 86_400
MAX_WINDOW_S = 400 * 86_400
TYPES = ("sale", "sign-up", "appointment", "lead")
TYPE_BIT = {"sale": 1, "sign-up": 2, "appointment": 4, "lead": 8}   # calls.conversion_types
HOW = ("named", "click", "delivery", "code")
_SETTING = {"click": "attribution_click_window_s", "delivery": "attribution_delivery_window_s"}
_CODES_SETTING = "attribution_codes"


def duration_text(seconds: int) -> str:
    """5 days, 24 hours, 90 minutes: how a window reads on a card."""
    if seconds >= 2 * 86_400 and seconds % 86_400 == 0:
        n, unit = seconds // 86_400, "day"
    elif seconds >= 3_600 and seconds % 3_600 == 0:
        n, unit = seconds // 3_600, "hour"
    elif seconds >= 60 and seconds % 60 == 0:
        n, unit = seconds // 60, "minute"
    else:
        n, unit = seconds, "second"
    return f"{n:,} {unit}{'s' * (n != 1)}"


@dataclass(frozen=True)
class Windows:
    """The attribution windows in force for a campaign (or the team)."""

    click_s: int
    delivery_s: int
    set_by: str = "default"          # default, team or campaign

    def text(self) -> str:
        return (f"last click within {duration_text(self.click_s)}, else last delivery within "
                f"{duration_text(self.delivery_s)}")

    def as_json(self) -> dict:
        return {"click_window_s": self.click_s, "delivery_window_s": self.delivery_s,
                "set_by": self.set_by, "text": self.text()}


def team_windows(conn: sqlite3.Connection) -> Windows:
    got = dict(conn.execute("SELECT key, value FROM settings WHERE key IN (?, ?)",
                            tuple(_SETTING.values())).fetchall())
    click = got.get(_SETTING["click"])
    delivery = got.get(_SETTING["delivery"])
    return Windows(int(click) if click else CLICK_WINDOW_S,
                   int(delivery) if delivery else DELIVERY_WINDOW_S,
                   "team" if click or delivery else "default")


def windows_for(conn: sqlite3.Connection, campaign_id: int | None) -> Windows:
    """The windows a campaign's conversions are credited under."""
    team = team_windows(conn)
    if campaign_id is None:
        return team
    row = conn.execute("SELECT click_window_s, delivery_window_s FROM campaigns WHERE id = ?",
                       (campaign_id,)).fetchone()
    if not row or (row[0] is None and row[1] is None):
        return team
    return Windows(row[0] if row[0] is not None else team.click_s,
                   row[1] if row[1] is not None else team.delivery_s, "campaign")


def set_windows(conn: sqlite3.Connection, campaign_id: int | None, click_s: int | None,
                delivery_s: int | None, codes: dict[str, str] | None = None,
                reset: bool = False) -> "Credited":
    """Set the team's windows (``campaign_id`` None) or a campaign's (``reset``: back to
    the team's), inside the caller's transaction, and credit every conversion again."""
    for s in (click_s, delivery_s):
        if s is not None and not 0 <= s <= MAX_WINDOW_S:
            raise ValueError(f"a window is between 0 and {MAX_WINDOW_S // 86_400} days")
    if campaign_id is None:
        for what, s in (("click", click_s), ("delivery", delivery_s)):
            if reset:
                conn.execute("DELETE FROM settings WHERE key = ?", (_SETTING[what],))
            elif s is not None:
                conn.execute("INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) "
                             "DO UPDATE SET value = excluded.value", (_SETTING[what], str(s)))
    elif reset:
        conn.execute("UPDATE campaigns SET click_window_s = NULL, delivery_window_s = NULL "
                     "WHERE id = ?", (campaign_id,))
    else:
        if click_s is not None:
            conn.execute("UPDATE campaigns SET click_window_s = ? WHERE id = ?",
                         (click_s, campaign_id))
        if delivery_s is not None:
            conn.execute("UPDATE campaigns SET delivery_window_s = ? WHERE id = ?",
                         (delivery_s, campaign_id))
    return credit(conn, "SELECT id FROM conversions", (), codes)


@dataclass
class Credited:
    """What one run of :func:`credit` found, for the conversions it looked at."""

    looked_at: int = 0
    changed: int = 0
    by_how: dict[str, int] = field(default_factory=dict)      # how -> conversions
    uncredited: dict[str, int] = field(default_factory=dict)  # type -> conversions
    cancelled: int = 0                                         # kept, counting for nothing
    campaigns: set[int] = field(default_factory=set)           # campaigns whose figures moved

    def summary(self) -> str:
        """One line for an import's output: how the conversions it looked at are credited."""
        if not self.looked_at:
            return ""
        credited = sum(self.by_how.values())
        if credited:
            how = ", ".join(f"{n:,} {_HOW_TEXT[h]}" for h, n in self.by_how.items() if n)
            line = f"{credited:,} conversion{'s' * (credited != 1)} credited ({how})"
        else:
            line = "no conversion credited"
        if self.uncredited:
            kinds = ", ".join(plural(n, t) for t, n in sorted(self.uncredited.items()))
            line += f"; not credited: {kinds} (see `kpibot list`)"
        if self.cancelled:
            line += (f"; {self.cancelled:,} cancelled order{'s' * (self.cancelled != 1)} "
                     "kept, counting for nothing")
        return line


def plural(n: int, type_: str) -> str:
    """``3 sales``, ``1 sign-up``."""
    return f"{n:,} {type_}{'s' * (n != 1)}"


_HOW_TEXT = {"named": "to the message or call named", "click": "by click",
             "delivery": "by delivery", "code": "by code"}


def credit(conn: sqlite3.Connection, todo_sql: str, params: tuple = (),
           codes: dict[str, str] | None = None) -> Credited:
    """Credit again the conversions ``todo_sql`` selects (their ids), inside the caller's
    transaction, and bring the messages, calls and rollups along. ``codes`` is the
    sources file's ``[campaign_by_code]`` (casefolded code -> campaign name); when it
    differs from the one the stored credits were made with, every conversion with a code
    is looked at again too."""
    out = Credited()
    codes = codes or {}
    fingerprint = _fingerprint(codes)
    codes_changed = _codes_differ(conn, fingerprint)
    if not conn.execute("SELECT 1 FROM conversions LIMIT 1").fetchone():
        if codes_changed:
            _remember_codes(conn, fingerprint)
        return out
    _drop(conn, "attr_todo", "attr_win", "attr_new", "attr_events")
    conn.execute("CREATE TEMP TABLE attr_todo (id INTEGER PRIMARY KEY)")
    conn.execute(f"INSERT OR IGNORE INTO temp.attr_todo {todo_sql}", params)
    if codes_changed:
        conn.execute("INSERT OR IGNORE INTO temp.attr_todo SELECT id FROM conversions "
                     "WHERE code IS NOT NULL AND (how IS NULL OR how = 'code')")
        _remember_codes(conn, fingerprint)
    out.looked_at = conn.execute("SELECT COUNT(*) FROM temp.attr_todo").fetchone()[0]
    if not out.looked_at:
        return out
    conn.execute("UPDATE conversions SET type = 'sale' WHERE type IS NULL "
                 "AND id IN (SELECT id FROM temp.attr_todo)")
    team = team_windows(conn)
    conn.execute("CREATE TEMP TABLE attr_win (campaign_id INTEGER PRIMARY KEY, click_s INTEGER, "
                 "delivery_s INTEGER)")
    conn.execute("INSERT INTO temp.attr_win SELECT id, COALESCE(click_window_s, ?), "
                 "COALESCE(delivery_window_s, ?) FROM campaigns", (team.click_s, team.delivery_s))
    max_click, max_delivery = conn.execute(
        "SELECT COALESCE(MAX(click_s), 0), COALESCE(MAX(delivery_s), 0) FROM temp.attr_win"
    ).fetchone()
    conn.execute("CREATE TEMP TABLE attr_new (id INTEGER PRIMARY KEY, how TEXT, message_id "
                 "INTEGER, call_id INTEGER, campaign_id INTEGER, credited_at INTEGER, note TEXT, "
                 "counted_as TEXT)")
    open_ = "t.id NOT IN (SELECT id FROM temp.attr_new)"
    # (CROSS JOIN keeps SQLite's join order: from the conversions looked at, index lookups
    # for each; left to choose, it walked the whole recipient index of the messages)
    # 1. the message or call the conversion names
    conn.execute("""
        INSERT INTO temp.attr_new (id, how, message_id, campaign_id, credited_at)
        SELECT c.id, 'named', m.id, m.campaign_id, m.sent_at
        FROM temp.attr_todo t CROSS JOIN conversions c ON c.id = t.id
        CROSS JOIN messages m ON m.message_key = c.message_key
        WHERE c.message_key IS NOT NULL AND m.direction = 'outbound'""")
    conn.execute(f"""
        INSERT INTO temp.attr_new (id, how, call_id, campaign_id, credited_at)
        SELECT c.id, 'named', k.id, k.campaign_id, k.started_at
        FROM temp.attr_todo t CROSS JOIN conversions c ON c.id = t.id
        CROSS JOIN calls k ON k.call_key = c.message_key
        WHERE c.message_key IS NOT NULL AND {open_}""")
    # 2. the message of the customer's latest click within the click window
    conn.execute(f"""
        INSERT INTO temp.attr_new (id, how, message_id, campaign_id, credited_at)
        SELECT id, 'click', mid, cid, sent_at FROM (
            SELECT c.id, m.id AS mid, m.campaign_id AS cid, m.sent_at,
                   ROW_NUMBER() OVER (PARTITION BY c.id
                                      ORDER BY k.clicked_at DESC, m.message_key DESC) AS rank
            FROM temp.attr_todo t CROSS JOIN conversions c ON c.id = t.id
            CROSS JOIN clicks k ON k.recipient = c.recipient AND k.recipient IS NOT NULL
                         AND k.clicked_at <= c.converted_at
                         AND k.clicked_at >= c.converted_at - ?
            CROSS JOIN messages m ON m.message_key = k.message_key AND m.direction = 'outbound'
            JOIN temp.attr_win w ON w.campaign_id = m.campaign_id
            WHERE c.recipient IS NOT NULL AND {open_}
              AND c.converted_at - k.clicked_at <= w.click_s)
        WHERE rank = 1""", (max_click,))
    # 3. the latest message delivered (or call answered) within the delivery window
    conn.execute(f"""
        INSERT INTO temp.attr_new (id, how, message_id, call_id, campaign_id, credited_at)
        SELECT id, 'delivery', mid, kid, cid, at FROM (
            SELECT id, mid, kid, cid, at, ROW_NUMBER() OVER (
                       PARTITION BY id ORDER BY at DESC, ekey DESC) AS rank FROM (
                SELECT c.id, m.id AS mid, NULL AS kid, m.campaign_id AS cid, m.sent_at AS at,
                       m.message_key AS ekey
                FROM temp.attr_todo t CROSS JOIN conversions c ON c.id = t.id
                CROSS JOIN messages m INDEXED BY messages_recipient
                     ON m.recipient = c.recipient AND m.direction = 'outbound'
                    AND m.recipient IS NOT NULL
                    AND m.sent_at <= c.converted_at AND m.sent_at >= c.converted_at - ?
                JOIN temp.attr_win w ON w.campaign_id = m.campaign_id
                WHERE c.recipient IS NOT NULL AND {open_} AND m.status = 'delivered'
                  AND c.converted_at - m.sent_at <= w.delivery_s
                UNION ALL
                SELECT c.id, NULL, k.id, k.campaign_id, k.started_at, k.call_key
                FROM temp.attr_todo t CROSS JOIN conversions c ON c.id = t.id
                CROSS JOIN calls k INDEXED BY calls_recipient
                     ON k.recipient = c.recipient AND k.recipient IS NOT NULL
                    AND k.started_at <= c.converted_at AND k.started_at >= c.converted_at - ?
                JOIN temp.attr_win w ON w.campaign_id = k.campaign_id
                WHERE c.recipient IS NOT NULL AND {open_} AND k.status = 'completed'
                  AND (k.answered_by IS NULL OR k.answered_by IN ('', 'human'))
                  AND k.abandoned = 0 AND c.converted_at - k.started_at <= w.delivery_s))
        WHERE rank = 1""", (max_delivery, max_delivery))
    # 4. a code's campaign (codes are matched casefolded, as the sources file reads them)
    if codes:
        conn.create_function("kpibot_code_key", 1, _code_key, deterministic=True)
        conn.execute("CREATE TEMP TABLE attr_codes (code_key TEXT PRIMARY KEY, "
                     "campaign_id INTEGER)")
        wanted = {name for (key,) in conn.execute(f"""
            SELECT DISTINCT kpibot_code_key(c.code) FROM temp.attr_todo t
            JOIN conversions c ON c.id = t.id WHERE c.code IS NOT NULL AND {open_}""")
                  if (name := codes.get(key)) is not None}
        ids = {name: _campaign(conn, name) for name in sorted(wanted)}
        conn.executemany("INSERT INTO temp.attr_codes VALUES (?, ?)",
                         [(k, ids[n]) for k, n in codes.items() if n in ids])
        conn.execute(f"""
            INSERT INTO temp.attr_new (id, how, campaign_id, credited_at)
            SELECT c.id, 'code', k.campaign_id, c.converted_at
            FROM temp.attr_todo t JOIN conversions c ON c.id = t.id
            JOIN temp.attr_codes k ON k.code_key = kpibot_code_key(c.code)
            WHERE c.code IS NOT NULL AND {open_}""")
        _drop(conn, "attr_codes")
    # 5. the rest: why nothing could be credited
    conn.execute(f"""
        INSERT INTO temp.attr_new (id, note)
        SELECT c.id, CASE
            WHEN c.message_key IS NOT NULL THEN 'the message it names is not stored'
                 || CASE WHEN c.recipient IS NULL THEN '' ELSE
                    ', and no click or delivery to the customer within the windows' END
            WHEN c.recipient IS NULL THEN 'no customer number and no message named'
            ELSE 'no click or delivery to the customer within the windows' END
            || CASE WHEN c.code IS NULL THEN '' ELSE '; its code is not in [campaign_by_code]'
               END
        FROM temp.attr_todo t JOIN conversions c ON c.id = t.id WHERE {open_}""")
    # the slots of conversions credited by code, before and after: recounted below
    _drop(conn, "attr_code_slots")
    conn.execute(f"""
        CREATE TEMP TABLE attr_code_slots AS
        SELECT c.campaign_id, {slot_sql('c.credited_at')} AS slot FROM temp.attr_todo t
        JOIN conversions c ON c.id = t.id WHERE c.how = 'code'
        UNION SELECT campaign_id, {slot_sql('credited_at')} FROM temp.attr_new
        WHERE how = 'code'""")
    # what changed, and the events whose totals move
    conn.execute("""
        CREATE TEMP TABLE attr_events AS
        SELECT c.message_id, c.call_id, c.campaign_id FROM temp.attr_todo t
        JOIN conversions c ON c.id = t.id
        UNION SELECT message_id, call_id, campaign_id FROM temp.attr_new""")
    # the uncredited counts: what the conversions looked at counted as before, out; what
    # they count as now, in
    conn.execute("UPDATE temp.attr_new SET counted_as = (SELECT c.type FROM conversions c "
                 "WHERE c.id = attr_new.id AND NOT c.cancelled) WHERE how IS NULL")
    delta: dict[str, int] = {}
    for sql, sign in (("SELECT c.counted_as, COUNT(*) FROM temp.attr_todo t JOIN conversions c "
                       "ON c.id = t.id WHERE c.counted_as IS NOT NULL GROUP BY 1", -1),
                      ("SELECT counted_as, COUNT(*) FROM temp.attr_new "
                       "WHERE counted_as IS NOT NULL GROUP BY 1", 1)):
        for typ, n in conn.execute(sql):
            delta[typ] = delta.get(typ, 0) + sign * n
    conn.executemany("INSERT INTO uncredited_counts VALUES (?, ?) ON CONFLICT(type) "
                     "DO UPDATE SET n = n + excluded.n",
                     [(t, n) for t, n in sorted(delta.items()) if n])
    out.changed = conn.execute("""
        UPDATE conversions SET how = n.how, message_id = n.message_id, call_id = n.call_id,
            campaign_id = n.campaign_id, credited_at = n.credited_at, note = n.note,
            counted_as = n.counted_as
        FROM temp.attr_new n WHERE conversions.id = n.id AND
            (conversions.how, conversions.message_id, conversions.call_id,
             conversions.campaign_id, conversions.credited_at, conversions.note,
             conversions.counted_as)
            IS NOT (n.how, n.message_id, n.call_id, n.campaign_id, n.credited_at, n.note,
                    n.counted_as)
        """).rowcount
    counts = dict(conn.execute("SELECT n.how, COUNT(*) FROM temp.attr_new n JOIN conversions c "
                               "ON c.id = n.id WHERE n.how IS NOT NULL AND NOT c.cancelled "
                               "GROUP BY n.how").fetchall())
    out.by_how = {h: counts[h] for h in HOW if counts.get(h)}
    for typ, n in conn.execute("SELECT c.type, COUNT(*) FROM temp.attr_new n JOIN conversions c "
                               "ON c.id = n.id WHERE n.how IS NULL AND NOT c.cancelled "
                               "GROUP BY c.type"):
        out.uncredited[typ] = n
    out.cancelled = conn.execute("SELECT COUNT(*) FROM temp.attr_todo t JOIN conversions c "
                                 "ON c.id = t.id WHERE c.cancelled").fetchone()[0]
    conn.execute("INSERT OR IGNORE INTO conversion_currencies SELECT DISTINCT n.campaign_id, "
                 "c.currency FROM temp.attr_new n JOIN conversions c ON c.id = n.id "
                 "WHERE n.campaign_id IS NOT NULL AND c.currency IS NOT NULL")
    out.campaigns |= {c for (c,) in conn.execute(
        "SELECT DISTINCT campaign_id FROM temp.attr_events WHERE campaign_id IS NOT NULL")}
    out.campaigns |= _recount_codes(conn)
    out.campaigns |= _recount(conn, "message", "SELECT message_id FROM temp.attr_events "
                                               "WHERE message_id IS NOT NULL")
    out.campaigns |= _recount(conn, "call", "SELECT call_id FROM temp.attr_events "
                                            "WHERE call_id IS NOT NULL")
    _drop(conn, "attr_todo", "attr_win", "attr_new", "attr_events", "attr_code_slots")
    return out


def _recount_codes(conn: sqlite3.Connection) -> set[int]:
    """``code_rollup`` for the slots in ``temp.attr_code_slots``, counted again from the
    conversions credited by code (a few index ranges)."""
    slots = conn.execute("SELECT COUNT(*) FROM temp.attr_code_slots").fetchone()[0]
    if not slots:
        return set()
    conn.execute("DELETE FROM code_rollup WHERE (campaign_id, slot) IN "
                 "(SELECT campaign_id, slot FROM temp.attr_code_slots)")
    conn.execute(f"""
        INSERT INTO code_rollup
        SELECT s.campaign_id, s.slot, COUNT(*), SUM(COALESCE(c.revenue_micros, 0))
        FROM temp.attr_code_slots s CROSS JOIN conversions c INDEXED BY conversions_coded
          ON c.campaign_id = s.campaign_id AND c.credited_at >= s.slot
         AND c.credited_at < s.slot + {SLOT}
        WHERE c.how = 'code' AND NOT c.cancelled
        GROUP BY s.campaign_id, s.slot""")
    return {c for (c,) in conn.execute("SELECT DISTINCT campaign_id FROM temp.attr_code_slots")}


_NET = "CASE WHEN c.cancelled THEN 0 ELSE COALESCE(c.revenue_micros, 0) END"


def _recount(conn: sqlite3.Connection, kind: str, ids_sql: str) -> set[int]:
    """Set the conversion totals of the events ``ids_sql`` selects from the conversions
    credited to them; returns the campaigns whose figures moved."""
    link = "message_id" if kind == "message" else "call_id"
    columns = ("conversions", "conversion_revenue_micros", "conversions_named",
               "conversions_click")
    types = ""
    if kind == "call":      # which types: a lead, and whether a sale followed it
        columns += ("conversion_types",)
        types = ", " + " + ".join(
            f"COALESCE(MAX(c.type = '{t}' AND NOT c.cancelled), 0) * {bit}"
            for t, bit in TYPE_BIT.items()) + " AS conversion_types"
    return set_event_columns(conn, kind, f"""
        SELECT x.{link} AS id, COALESCE(SUM(c.id IS NOT NULL AND NOT c.cancelled), 0)
               AS conversions, COALESCE(SUM({_NET}), 0) AS conversion_revenue_micros,
               COALESCE(SUM(c.how = 'named' AND NOT c.cancelled), 0) AS conversions_named,
               COALESCE(SUM(c.how = 'click' AND NOT c.cancelled), 0) AS conversions_click
               {types}
        FROM (SELECT DISTINCT {link} FROM ({ids_sql})) AS x
        LEFT JOIN conversions c ON c.{link} = x.{link}
        GROUP BY x.{link}""", columns)


def set_event_columns(conn: sqlite3.Connection, kind: str, values_sql: str,
                      columns: tuple[str, ...], params: tuple = ()) -> set[int]:
    """Set ``columns`` of the events (messages or calls) to what ``values_sql`` gives
    (``id`` and the columns, by name), where they differ, and bring the rollups along:
    each changed event is taken out of its cells as it was and put in as it is, for the
    counters that read these columns only. Columns of the kind's credits table
    (``Kind.credit_columns``) are written there: a row for an event with any conversion
    credited, none for the others. Returns the campaigns touched."""
    k = KINDS[kind]
    table, credits = k.table, k.credits
    counters = tuple(c for c in k.counters
                     if set(re.findall(r"[a-z_]+", k.counters[c])) & set(columns))
    table_columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]

    def cur(c: str) -> str:          # an event's value as it is stored
        return f"COALESCE({credits}.{c}, 0)" if c in k.credit_columns else f"e.{c}"

    read = ", ".join(f"{cur(c)} AS {c}" for c in columns_read(
        k, counters, table_columns + list(k.credit_columns)))
    _drop(conn, "attr_vals", "attr_old", "attr_now")
    # in id order: the events are then read and written page by page, each page once
    conn.execute(f"CREATE TEMP TABLE attr_vals AS SELECT * FROM ({values_sql}) ORDER BY id",
                 params)
    differs = " OR ".join(f"{cur(c)} IS NOT v.{c}" for c in columns)
    conn.execute(f"CREATE TEMP TABLE attr_old AS SELECT e.id, {read} FROM temp.attr_vals v "
                 f"CROSS JOIN {table} e ON e.id = v.id{k.credits_join('e')} WHERE {differs} "
                 "ORDER BY v.id")
    if not conn.execute("SELECT 1 FROM temp.attr_old LIMIT 1").fetchone():
        _drop(conn, "attr_vals", "attr_old")
        return set()
    own = [c for c in columns if c not in k.credit_columns]
    credited = [c for c in columns if c in k.credit_columns]
    if conn.execute("SELECT 1 FROM rollup_dirty WHERE kind = ? LIMIT 1", (kind,)).fetchone():
        Rollup(conn, k).finish()      # the delta below assumes no slot waits for a recount
    if own:
        sets = ", ".join(f"{c} = v.{c}" for c in own)
        conn.execute(f"UPDATE {table} SET {sets} FROM temp.attr_old o CROSS JOIN temp.attr_vals "
                     f"v ON v.id = o.id WHERE {table}.id = o.id")
    if credited:
        names = ", ".join(credited)
        conn.execute(f"INSERT INTO {credits} ({k.credit_key}, {names}) SELECT v.id, "
                     f"{', '.join(f'v.{c}' for c in credited)} FROM temp.attr_old o "
                     f"CROSS JOIN temp.attr_vals v ON v.id = o.id WHERE true "
                     f"ON CONFLICT ({k.credit_key}) DO UPDATE SET "
                     + ", ".join(f"{c} = excluded.{c}" for c in credited))
        nothing = " AND ".join(f"{c} = 0" for c in k.credit_columns)
        conn.execute(f"DELETE FROM {credits} WHERE {k.credit_key} IN "
                     f"(SELECT id FROM temp.attr_old) AND {nothing}")
    conn.execute(f"CREATE TEMP TABLE attr_now AS SELECT e.id, {read} FROM {table} e"
                 f"{k.credits_join('e')} WHERE e.id IN (SELECT id FROM temp.attr_old)")
    Rollup(conn, k).apply_delta("temp.attr_old", "temp.attr_now", counters, credited=True)
    touched = {c for (c,) in conn.execute("SELECT DISTINCT campaign_id FROM temp.attr_now")}
    _drop(conn, "attr_vals", "attr_old", "attr_now")
    return touched


def mark_clicked(conn: sqlite3.Connection, scope_sql: str, params: tuple = ()) -> set[int]:
    """Messages (those ``scope_sql`` selects: ids) that have a stored click count as
    clicked; a click's recipient, when the click did not say, is its message's."""
    if conn.execute("SELECT 1 FROM clicks WHERE recipient IS NULL LIMIT 1").fetchone():
        conn.execute(f"""
            UPDATE clicks SET recipient = (SELECT m.recipient FROM messages m
                                           WHERE m.message_key = clicks.message_key)
            WHERE recipient IS NULL AND message_key IN (
                SELECT message_key FROM messages WHERE id IN ({scope_sql})
                AND recipient IS NOT NULL)""", params)
    return set_event_columns(conn, "message", f"""
        SELECT m.id, 1 AS clicked FROM messages m WHERE m.id IN ({scope_sql})
        AND m.clicked = 0 AND m.direction = 'outbound'
        AND EXISTS (SELECT 1 FROM clicks k WHERE k.message_key = m.message_key)""",
                             ("clicked",), params)


def after_events(conn: sqlite3.Connection, kind: str, ids_sql: str, params: tuple = (),
                 codes: dict[str, str] | None = None) -> Credited:
    """Messages or calls (``kind``) were stored or changed (``ids_sql`` selects their ids):
    messages with a stored click count as clicked, and the conversions these events may
    now claim or lose are credited again. Reads nothing more while the store has no
    clicks or conversions."""
    if not concerns(conn, kind):
        return Credited()
    has_clicks = kind == "message" and _has_clicks(conn)
    table = KINDS[kind].table
    key, link = ("message_key", "message_id") if kind == "message" else ("call_key", "call_id")
    _drop(conn, "attr_changed")      # the events, found once (an import's: one scan)
    conn.execute(f"CREATE TEMP TABLE attr_changed AS SELECT id, {key} AS event_key, recipient "
                 f"FROM {table} WHERE id IN ({ids_sql})", params)
    touched = mark_clicked(conn, "SELECT id FROM temp.attr_changed") if has_clicks else set()
    done = credit(conn, f"""
        SELECT c.id FROM conversions c WHERE c.recipient IN
            (SELECT recipient FROM temp.attr_changed WHERE recipient IS NOT NULL)
        UNION SELECT c.id FROM conversions c WHERE c.message_key IN
            (SELECT event_key FROM temp.attr_changed)
        UNION SELECT c.id FROM conversions c WHERE c.{link} IN
            (SELECT id FROM temp.attr_changed)""", (), codes)
    _drop(conn, "attr_changed")
    done.campaigns |= touched
    return done


def after_clicks(conn: sqlite3.Connection, ids_sql: str, params: tuple = (),
                 codes: dict[str, str] | None = None) -> Credited:
    """Clicks were stored (``ids_sql`` selects their ids): their messages count as
    clicked, and the customers' conversions may now go to them."""
    touched = mark_clicked(conn, f"SELECT m.id FROM messages m JOIN clicks k ON "
                                 f"k.message_key = m.message_key WHERE k.id IN ({ids_sql})",
                           params)
    done = credit(conn, f"""
        SELECT c.id FROM conversions c WHERE c.recipient IN
            (SELECT recipient FROM clicks WHERE id IN ({ids_sql}) AND recipient IS NOT NULL)""",
                  params, codes)
    done.campaigns |= touched
    return done


def _fingerprint(codes: dict[str, str]) -> str:
    return repr(sorted(codes.items()))


def _codes_differ(conn: sqlite3.Connection, fingerprint: str) -> bool:
    stored = conn.execute("SELECT value FROM settings WHERE key = ?", (_CODES_SETTING,)).fetchone()
    return (stored[0] if stored else repr([])) != fingerprint


def codes_changed(conn: sqlite3.Connection, codes: dict[str, str]) -> bool:
    """Whether ``[campaign_by_code]`` is not the one the stored credits were made with."""
    return _codes_differ(conn, _fingerprint(codes))


def _code_key(code: str | None) -> str | None:
    return code.strip().casefold() if code is not None else None


def _campaign(conn: sqlite3.Connection, name: str) -> int:
    """The id of campaign ``name`` (a code's), made when there is none yet."""
    row = conn.execute("SELECT id FROM campaigns WHERE name_key = ?", (name_key(name),)).fetchone()
    if row:
        return row[0]
    return conn.execute("INSERT INTO campaigns(name, name_key, channel, created_at) "
                        "VALUES (?, ?, NULL, ?)",
                        (name.strip(), name_key(name), iso(utcnow()))).lastrowid


def _remember_codes(conn: sqlite3.Connection, fingerprint: str) -> None:
    conn.execute("INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                 "SET value = excluded.value", (_CODES_SETTING, fingerprint))


def _drop(conn: sqlite3.Connection, *tables: str) -> None:
    for t in tables:
        conn.execute(f"DROP TABLE IF EXISTS temp.{t}")


# -- what the cards and lists show ----------------------------------------------------------

def uncredited(conn: sqlite3.Connection) -> list[dict]:
    """Conversions nothing could be credited with, by type and reason."""
    return [{"type": t, "reason": r, "conversions": n, "revenue": (rev or 0) / 1_000_000,
             "currencies": sorted(set((cur or "").split(",")) - {""})}
            for t, r, n, rev, cur in conn.execute(
                "SELECT type, note, COUNT(*), SUM(CASE WHEN cancelled THEN 0 ELSE "
                "revenue_micros END), GROUP_CONCAT(DISTINCT currency) FROM conversions "
                "INDEXED BY conversions_uncredited WHERE how IS NULL AND NOT cancelled "
                "GROUP BY type, note "
                "ORDER BY COUNT(*) DESC, type")]


def waiting_clicks(conn: sqlite3.Connection) -> int:
    """Clicks on messages not stored (yet)."""
    return conn.execute("SELECT COUNT(*) FROM clicks k WHERE NOT EXISTS (SELECT 1 FROM "
                        "messages m WHERE m.message_key = k.message_key)").fetchone()[0]


def currencies(conn: sqlite3.Connection, campaign_id: int, start: int, end: int) -> list[str]:
    """The currencies of a campaign's conversions in [start, end): a few index lookups
    (one per currency it was ever credited in, which ``conversion_currencies`` keeps)."""
    return [cur for (cur,) in conn.execute(
        "SELECT currency FROM conversion_currencies k WHERE campaign_id = ?1 AND EXISTS ("
        "SELECT 1 FROM conversions c INDEXED BY conversions_campaign WHERE c.campaign_id = ?1 "
        "AND c.currency = k.currency AND c.credited_at >= ?2 AND c.credited_at < ?3 "
        "AND c.how IS NOT NULL AND NOT c.cancelled) ORDER BY currency",
        (campaign_id, start, end))]


def uncredited_by_type(conn: sqlite3.Connection) -> dict[str, int]:
    """Store-wide: conversions nothing could be credited with, by type (kept by
    :func:`credit`: a card reads a few rows, however many there are)."""
    return dict(conn.execute("SELECT type, n FROM uncredited_counts WHERE n > 0 "
                             "ORDER BY type").fetchall())


def _has_clicks(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM clicks LIMIT 1").fetchone() is not None


def concerns(conn: sqlite3.Connection, kind: str) -> bool:
    """Whether stored messages or calls (``kind``) can change any click or credit: not
    while the store has no conversions (nor, for messages, clicks)."""
    return has_conversions(conn) or (kind == "message" and _has_clicks(conn))


def has_conversions(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM conversions LIMIT 1").fetchone() is not None


def configure(store, campaign_id: int | None, click_s: int | None = None,
              delivery_s: int | None = None, reset: bool = False,
              codes: dict[str, str] | None = None) -> Credited:
    """Set (or ``reset``) the team's or a campaign's windows in one transaction, every
    conversion credited again under them."""
    with store.transaction() as conn:
        return set_windows(conn, campaign_id, click_s, delivery_s, codes, reset)


def campaign_windows(conn: sqlite3.Connection) -> list[tuple[str, Windows]]:
    """Campaigns with windows of their own: (name, windows)."""
    return [(name, windows_for(conn, cid)) for cid, name in conn.execute(
        "SELECT id, name FROM campaigns WHERE click_window_s IS NOT NULL OR "
        "delivery_window_s IS NOT NULL ORDER BY name_key").fetchall()]
