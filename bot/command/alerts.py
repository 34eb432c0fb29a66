"""``/kpi alert``: list, add, remove and snooze the rules that watch a metric."""
from __future__ import annotations

import datetime as dt
import math

from metrics import kpis
from metrics.times import zone

from .. import mrkdwn, text
from .args import channel_arg, duration, links, require_admin, whole
from .base import USAGE, Context, Reply, UsageError
from .tokens import Token


def _threshold(word: str, metric: str) -> float:
    percent = any(metric in kpis.REGISTRY[ch] and kpis.REGISTRY[ch][metric].unit == "percent"
                  for ch in kpis.REGISTRY)
    w = word.replace(",", "")
    try:
        if w.endswith("%"):
            if not percent:
                raise UsageError(f"{metric} is not a rate: write a plain number, not '{word}'")
            value = float(w[:-1]) / 100
            if not math.isfinite(value):
                raise ValueError
            return value
        value = float(w)
        if not math.isfinite(value):
            raise ValueError
    except ValueError:
        raise UsageError(f"'{word}' is not a number") from None
    if percent:
        raise UsageError(f"{metric} is a rate: write the threshold as a percentage, e.g. "
                         f"{word}%")
    return value


def cmd_alert(ctx: Context, args: list[Token]) -> Reply:
    from metrics import alerts
    sub = args[0].text.lower() if args else "list"
    rest = args[1:]
    if sub == "list":
        rules = alerts.rules(ctx.store)
        data = [{"id": r.id, "rule": r.describe(), "campaign": r.campaign, "metric": r.metric,
                 "op": r.op, "threshold": r.threshold, "recovery": r.recovery, "unit": r.unit,
                 "window_s": r.window_s, "min_volume": r.min_volume, "channel": r.channel,
                 "muted": r.muted, "snoozed_until": r.snoozed_until,
                 "states": alerts.states(ctx.store, r.id)} for r in rules]
        return Reply(text.alert_list(data, zone(ctx.store.timezone()), ctx.now_ts()),
                     {"alerts": data}, links=links(r.channel for r in rules))
    require_admin(ctx, f"alert {sub}")
    if sub == "add":
        names = kpis.all_names()
        i = next((j for j, t in enumerate(rest) if t.text.lower() in names), None)
        if i is None or i == 0 or len(rest) < i + 3:
            raise UsageError("an alert needs a campaign (or *), a metric, a comparison and a "
                             "value, e.g. `/kpi alert add spring-sale opt_out_rate > 2%`",
                             USAGE["alert"])
        campaign = " ".join(t.text for t in rest[:i])
        metric, op, value = rest[i].text.lower(), rest[i + 1].text, rest[i + 2].text
        if op not in alerts.OPS:
            raise UsageError(f"'{op}' is not a comparison (use >, >=, < or <=)", USAGE["alert"])
        opts: dict = {"channel": ctx.channel}
        j = i + 3
        while j < len(rest):
            word = rest[j].text.lower()
            arg = rest[j + 1] if j + 1 < len(rest) else None
            if arg is None:
                raise UsageError(f"'{word}' needs a value", USAGE["alert"])
            if word == "min":
                opts["min_volume"] = whole(arg.text, "min needs a whole number")
            elif word == "window":
                opts["window_s"] = duration(arg.text)
            elif word == "renotify":
                opts["renotify_s"] = duration(arg.text)
            elif word == "recover":
                opts["recovery"] = _threshold(arg.text, metric)
            elif word == "in":
                opts["channel"] = channel_arg(arg)
            else:
                raise UsageError(f"'{rest[j].text}' is not an alert option (min, window, "
                                 "recover, renotify, in)", USAGE["alert"])
            j += 2
        try:
            rule = alerts.add_rule(ctx.store, campaign, metric, op, _threshold(value, metric),
                                   created_by=ctx.user, **opts)
        except alerts.AlertError as exc:
            raise UsageError(str(exc), USAGE["alert"]) from None
        where = f" in {mrkdwn.channel(rule.channel)}" if rule.channel else ""
        who = "every campaign:" if rule.campaign == "*" else rule.campaign
        return Reply(f"Alert #{rule.id} added: {who} {rule.describe()}{where}.",
                     {"id": rule.id, "rule": rule.describe()}, links=links([rule.channel]))
    if sub in ("remove", "snooze"):
        rid = whole(rest[0].text.lstrip("#") if rest else "",
                    "which alert? (its number from `/kpi alert list`)", USAGE["alert"])
        try:
            if sub == "remove":
                rule = alerts.remove_rule(ctx.store, rid)
                return Reply(f"Alert #{rid} removed ({rule.describe()}).", {"removed": rid})
            if len(rest) < 2:
                raise UsageError("snooze for how long? e.g. `/kpi alert snooze 3 1d`",
                                 USAGE["alert"])
            length = duration(rest[1].text)
            if length > alerts.MAX_WINDOW_S:
                raise UsageError(f"snooze for at most {alerts.MAX_WINDOW_S // 86400} days, or "
                                 f"remove the rule: `/kpi alert remove {rid}`")
            until = ctx.now_ts() + length
            alerts.snooze(ctx.store, rid, until)
        except alerts.AlertError as exc:
            raise UsageError(str(exc)) from None
        when = dt.datetime.fromtimestamp(until, zone(ctx.store.timezone()))
        return Reply(f"Alert #{rid} snoozed until {when:%Y-%m-%d %H:%M %Z}.",
                     {"snoozed": rid, "until": when.isoformat()})
    raise UsageError(f"'{sub}' is not an alert command", USAGE["alert"])
