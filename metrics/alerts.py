"""Threshold alerts: rules, the state machine of each rule-and-campaign pair, and posts
claimed in the database before anyone sends them.

``evaluate(store, now)`` is a plain function: for every rule and campaign it computes the
metric over the trailing window (with the KPI engine), moves the pair's state
(ok → firing → resolved → firing ...), and for each transition that should be posted
claims a post keyed by rule, campaign, episode and transition, in the same transaction
as the state change. A second evaluator on the same database (another bot, a retry)
finds the state already moved and the key already taken, so nothing is claimed twice.
The claims go into the outbox (``metrics.outbox``); sending them is the caller's job
(``bot/jobs.py``).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

from . import kpis, outbox
from .engine import Campaign, Reader, campaigns_with_channel, find_campaign
from .errors import KpiBotError
from .store import Store, iso, utcnow
from .times import zone

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
DEFAULT_WINDOW_S = 24 * 3600
DEFAULT_MIN_VOLUME = 100


class AlertError(KpiBotError):
    pass


@dataclass(frozen=True)
class Rule:
    id: int
    campaign: str          # name key, or '*'
    metric: str
    op: str
    threshold: float
    recovery: float | None
    window_s: int
    min_volume: int
    renotify_s: int | None
    channel: str | None
    muted: bool
    snoozed_until: int | None
    created_by: str | None
    created_at: str

    def breached(self, value: float) -> bool:
        return OPS[self.op](value, self.threshold)

    def recovered(self, value: float) -> bool:
        """Back on the good side: of the recovery threshold when there is one (so a value
        hovering at the threshold does not flap), else of the threshold itself."""
        return not OPS[self.op](value, self.threshold if self.recovery is None else self.recovery)

    @property
    def unit(self) -> str:
        for channel in ("sms", "call"):
            if self.metric in kpis.REGISTRY[channel]:
                return kpis.REGISTRY[channel][self.metric].unit
        return "count"

    def fmt(self, x: float) -> str:
        if self.unit == "percent":
            return f"{x * 100:g}%"
        return f"{x:,g}"

    def describe(self) -> str:
        rec = f", recovers at {self.fmt(self.recovery)}" if self.recovery is not None else ""
        return (f"{self.metric} {self.op} {self.fmt(self.threshold)}{rec} over "
                f"{duration_text(self.window_s)}, min {self.min_volume:,}")


def duration_text(s: int) -> str:
    for unit, n in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if s % n == 0 and (unit != "w" or s >= 14 * 86400):
            return f"{s // n}{unit}"
    return f"{s}s"


def _rule(row) -> Rule:
    return Rule(*row[:9], row[9], bool(row[10]), row[11], row[12], row[13])


_COLS = ("id, campaign, metric, op, threshold, recovery, window_s, min_volume, renotify_s, "
         "channel, muted, snoozed_until, created_by, created_at")


def add_rule(store: Store, campaign: str, metric: str, op: str, threshold: float, *,
             recovery: float | None = None, window_s: int = DEFAULT_WINDOW_S,
             min_volume: int = DEFAULT_MIN_VOLUME, renotify_s: int | None = None,
             channel: str | None = None, created_by: str | None = None) -> Rule:
    if metric not in kpis.all_names():
        raise AlertError(f"no metric called '{metric}'")
    if op not in OPS:
        raise AlertError(f"'{op}' is not a comparison (use >, >=, < or <=)")
    if campaign != "*":
        camp = find_campaign(store, campaign)
        campaign = camp.name
        have = Reader(store, camp, zone("UTC")).channels_with_data() or camp.channels
        if not any(metric in kpis.REGISTRY[ch] for ch in have):
            raise AlertError(f"{metric} does not apply to {camp.name} "
                             f"({' and '.join(have)} only)")
    _check_threshold(metric, threshold, "threshold")
    if recovery is not None:
        _check_threshold(metric, recovery, "recovery threshold")
    if not MIN_VOLUME_LIMIT >= min_volume >= 0:
        raise AlertError(f"min {min_volume:,} is beyond any campaign's volume: use a number "
                         f"from 0 to {MIN_VOLUME_LIMIT:,}")
    for what, secs in (("window", window_s), ("re-notify interval", renotify_s)):
        if secs is not None and secs > MAX_WINDOW_S:
            raise AlertError(f"the {what} is at most {MAX_WINDOW_S // 86400} days")
    if recovery is not None and OPS[op](recovery, threshold):
        raise AlertError(f"the recovery threshold {recovery:g} must be on the good side of "
                         f"{threshold:g} (for {op} it is {'lower' if op[0] == '>' else 'higher'})")
    if window_s <= 0 or min_volume < 0 or (renotify_s is not None and renotify_s <= 0):
        raise AlertError("window and re-notify interval must be positive, min volume >= 0")
    with store.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO alert_rules(campaign, metric, op, threshold, recovery, window_s, "
            "min_volume, renotify_s, channel, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (campaign, metric, op, threshold, recovery,
             window_s, min_volume, renotify_s, channel, created_by, iso(utcnow())))
        rid = cur.lastrowid
    return get_rule(store, rid)


def get_rule(store: Store, rule_id: int) -> Rule:
    row = store.conn.execute(f"SELECT {_COLS} FROM alert_rules WHERE id = ?", (rule_id,)).fetchone()
    if row is None:
        raise AlertError(f"there is no alert #{rule_id} (see `/kpi alert list`)")
    return _rule(row)


def rules(store: Store) -> list[Rule]:
    return [_rule(r) for r in store.conn.execute(f"SELECT {_COLS} FROM alert_rules ORDER BY id")]


MIN_VOLUME_LIMIT = 1_000_000_000
MAX_WINDOW_S = 366 * 86400
MAX_AMOUNT = 1_000_000_000_000     # a threshold for a count or an amount of money


def _check_threshold(metric: str, value: float, what: str) -> None:
    """A threshold a metric can cross: a share between 0% and 100%, a count or amount
    from 0 up, any finite ROI or growth rate."""
    ks = kpis.find(metric)
    if not math.isfinite(value):
        raise AlertError(f"the {what} must be a number")
    if any(k.proportion for k in ks) and not 0 <= value <= 1:
        raise AlertError(f"{metric} is a share of its denominator: the {what} must be "
                         f"between 0% and 100%, not {value * 100:g}%")
    if any(k.unit != "percent" for k in ks) and not 0 <= value <= MAX_AMOUNT:
        raise AlertError(f"{metric} cannot be below 0 or above {MAX_AMOUNT:,}: the {what} "
                         f"{value:,g} would never be crossed")
    if abs(value) > MAX_AMOUNT:
        raise AlertError(f"the {what} {value:,g} would never be crossed")
    if 0 < abs(value) < 1e-9:
        raise AlertError(f"the {what} {value:g} is too small to tell from 0: use 0 or a "
                         "larger number")


def remove_rule(store: Store, rule_id: int) -> Rule:
    rule = get_rule(store, rule_id)
    with store.transaction() as conn:
        conn.execute("DELETE FROM alert_states WHERE rule_id = ?", (rule_id,))
        conn.execute("DELETE FROM alert_rules WHERE id = ?", (rule_id,))
    return rule


def snooze(store: Store, rule_id: int, until: int, campaign_id: int | None = None) -> None:
    """Post nothing for the rule (or one of its campaigns) until ``until``; states keep
    being evaluated, so a recovery during the snooze is known when it ends."""
    get_rule(store, rule_id)
    if campaign_id is not None and store.conn.execute(
            "SELECT 1 FROM campaigns WHERE id = ?", (campaign_id,)).fetchone() is None:
        raise AlertError("its campaign no longer exists (remove the rule with "
                         f"`/kpi alert remove {rule_id}` if it is not needed)")
    with store.transaction() as conn:
        if campaign_id is None:
            conn.execute("UPDATE alert_rules SET snoozed_until = ? WHERE id = ?", (until, rule_id))
            conn.execute("UPDATE alert_states SET snoozed_until = ? WHERE rule_id = ?",
                         (until, rule_id))
        else:
            conn.execute("INSERT INTO alert_states(rule_id, campaign_id, state, since, "
                         "snoozed_until) VALUES (?, ?, 'ok', CAST(strftime('%s', 'now') AS "
                         "INTEGER), ?) ON CONFLICT(rule_id, campaign_id) DO UPDATE SET "
                         "snoozed_until = excluded.snoozed_until", (rule_id, campaign_id, until))


def mute(store: Store, rule_id: int, muted: bool = True) -> None:
    get_rule(store, rule_id)
    with store.transaction() as conn:
        conn.execute("UPDATE alert_rules SET muted = ? WHERE id = ?", (int(muted), rule_id))


@dataclass
class Notice:
    """One post to make: an alert starting, still firing, or recovering."""

    key: str
    kind: str                 # 'firing', 'still firing', 'recovered'
    rule: Rule
    campaign: str
    campaign_id: int
    value: kpis.Value
    window: tuple[int, int]
    thread_key: str | None    # the firing post to reply under

    def payload(self) -> dict:
        v = self.value
        return {"kind": self.kind, "rule_id": self.rule.id, "campaign": self.campaign,
                "campaign_id": self.campaign_id, "metric": self.rule.metric,
                "value": v.value, "numerator": v.numerator, "denominator": v.denominator,
                "unit": v.unit, "op": self.rule.op, "threshold": self.rule.threshold,
                "recovery": self.rule.recovery, "window": list(self.window),
                "window_text": duration_text(self.rule.window_s), "thread_key": self.thread_key}


def _targets(store: Store, rule: Rule) -> list[tuple[Campaign, str]]:
    """(campaign, channel) pairs a rule watches."""
    channels = [ch for ch in ("sms", "call") if rule.metric in kpis.REGISTRY[ch]]
    if rule.campaign != "*":
        try:
            camp = find_campaign(store, rule.campaign)
        except KpiBotError:
            return []
        return [(camp, ch) for ch in channels if ch in Reader(store, camp, zone("UTC"))
                .channels_with_data()][:1]
    out, seen = [], set()
    for ch in channels:
        for camp in campaigns_with_channel(store, ch):
            if camp.id not in seen:
                seen.add(camp.id)
                out.append((camp, ch))
    return out


def measure(store: Store, camp: Campaign, channel: str, metric: str, start: int,
            end: int, cache: dict | None = None) -> tuple[kpis.Value, int]:
    """The metric over [start, end) and the volume it rests on (its denominator, or the
    channel's sent/dialed count for a count metric). ``cache`` shares the counters of one
    campaign and window between rules."""
    k = kpis.REGISTRY[channel][metric]
    key = (camp.id, channel, start, end, k.distinct)
    counters = cache.get(key) if cache is not None else None
    if counters is None:
        reader = Reader(store, camp, zone(store.timezone()))
        counters = reader.grouped(channel, start, end, None, reach=k.distinct).get("", {})
        if cache is not None:
            cache[key] = counters
    return k.compute(counters), k.volume(counters)


def evaluate(store: Store, now: int, *, dry_run: bool = False,
             evaluator: str | None = None) -> list[Notice]:
    """Check every rule at ``now``; return the posts this call claimed (or, with
    ``dry_run``, would claim, changing nothing)."""
    measured = []
    cache: dict = {}
    for rule in rules(store):          # the numbers first, outside the write lock
        if rule.muted:
            continue
        start = now - rule.window_s
        for camp, channel in _targets(store, rule):
            value, volume = measure(store, camp, channel, rule.metric, start, now, cache)
            measured.append((rule, camp, value, volume, (start, now)))
    # then every state change and claim in one write transaction: a second evaluator
    # waits for it and then finds the states moved and the keys taken
    notices = []
    with store.transaction(dry_run=dry_run) as conn:
        for rule, camp, value, volume, window in measured:
            notice = _step(conn, rule, camp, value, volume, window, now, evaluator)
            if notice is not None:
                notices.append(notice)
    return notices


def _step(conn, rule: Rule, camp: Campaign, value: kpis.Value, volume: int,
          window: tuple[int, int], now: int, evaluator: str | None):
    """One pair's transition and its claim (inside evaluate's write transaction)."""
    row = conn.execute("SELECT state, episode, since, snoozed_until, last_posted FROM "
                       "alert_states WHERE rule_id = ? AND campaign_id = ?",
                       (rule.id, camp.id)).fetchone()
    state, episode, since, snoozed, last_posted = row or ("ok", 0, now, rule.snoozed_until,
                                                          None)
    note, kind = None, None
    if value.value is None or volume < rule.min_volume:
        note = f"below minimum volume ({volume:,} < {rule.min_volume:,})"
    elif state != "firing" and rule.breached(value.value):
        state, episode, since, kind = "firing", episode + 1, now, "firing"
    elif state == "firing" and rule.recovered(value.value):
        state, since, kind = "resolved", now, "recovered"
    elif state == "firing" and rule.renotify_s and last_posted is not None and \
            now - last_posted >= rule.renotify_s:
        kind = "still firing"
    quiet = snoozed is not None and now < snoozed
    notice = None
    if kind and not quiet:
        suffix = {"firing": "fire", "recovered": "recover",
                  "still firing": f"renotify:{(now - since) // (rule.renotify_s or 1)}"}[kind]
        key = f"alert:{rule.id}:{camp.id}:{episode}:{suffix}"
        thread = None if kind == "firing" else f"alert:{rule.id}:{camp.id}:{episode}:fire"
        notice = Notice(key, kind, rule, camp.name, camp.id, value, window, thread)
    if notice is not None:
        if outbox.claim(conn, notice.key, "alert", rule.channel, notice.payload(), now,
                        evaluator):
            last_posted = now
        else:
            notice = None
    conn.execute(
        "INSERT INTO alert_states(rule_id, campaign_id, state, episode, since, snoozed_until, "
        "last_checked, last_value, last_numerator, last_denominator, last_note, last_posted) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(rule_id, campaign_id) DO "
        "UPDATE SET state = excluded.state, episode = excluded.episode, since = "
        "excluded.since, last_checked = excluded.last_checked, last_value = "
        "excluded.last_value, last_numerator = excluded.last_numerator, last_denominator = "
        "excluded.last_denominator, last_note = excluded.last_note, last_posted = "
        "excluded.last_posted",
        (rule.id, camp.id, state, episode, since, snoozed, now, value.value,
         value.numerator, value.denominator, note, last_posted))
    return notice


def states(store: Store, rule_id: int) -> list[dict]:
    return [dict(zip(("campaign", "state", "since", "snoozed_until", "last_checked",
                      "last_value", "last_numerator", "last_denominator", "last_note"), r))
            for r in store.conn.execute(
                "SELECT c.name, s.state, s.since, s.snoozed_until, s.last_checked, s.last_value, "
                "s.last_numerator, s.last_denominator, s.last_note FROM alert_states s JOIN "
                "campaigns c ON c.id = s.campaign_id WHERE s.rule_id = ? ORDER BY c.name_key",
                (rule_id,))]
