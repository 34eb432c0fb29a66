"""The campaign card (``/kpi <campaign> [since] [until] [by <dimension>]``), the campaign
list, and the two settings that shape cards and digests: a campaign's goal and the team's
north-star metric."""
from __future__ import annotations

import difflib

from metrics import attribution, engine, kpis
from metrics.errors import UnknownCampaign
from metrics.live.apply import held_summary
from metrics.periods import is_period
from metrics.store import GOALS

from .. import text
from .args import is_campaign, metric_name, period_of, require_admin
from .base import USAGE, Context, Reply, UsageError
from .tokens import Token


def cmd_list(ctx: Context, args: list[Token]) -> Reply:
    rows = engine.campaigns(ctx.store)
    held = held_summary(ctx.store)
    out = text.campaign_list(rows)
    if held:
        out += "\n\n" + text.unassigned_list(held)
    conn = ctx.store.conn
    uncredited = attribution.uncredited(conn)
    waiting = attribution.waiting_clicks(conn)
    if uncredited or waiting:
        out += "\n\n" + text.uncredited_list(uncredited, waiting)
    return Reply(out, {"campaigns": rows, "unassigned": held, "uncredited": uncredited,
                       "clicks_waiting_for_their_message": waiting})


def cmd_goal(ctx: Context, args: list[Token]) -> Reply:
    require_admin(ctx, "goal")
    if len(args) < 2:
        raise UsageError("which campaign, and which goal?", USAGE["goal"])
    goal = args[-1].text.lower()
    if goal not in GOALS:
        close = difflib.get_close_matches(goal, GOALS, n=1)
        raise UsageError(f"'{args[-1].text}' is not a goal" +
                         (f" (did you mean {close[0]}?)" if close else ""), USAGE["goal"])
    camp = engine.find_campaign(ctx.store, " ".join(t.text for t in args[:-1]))
    ctx.store.set_goal(camp.id, goal)
    lead = ", ".join(k.label for k in kpis.headline(camp.channels[0], goal))
    return Reply(f"Goal of {camp.name} is now {goal}: its card leads with {lead}.",
                 {"campaign": camp.name, "goal": goal})


def cmd_northstar(ctx: Context, args: list[Token]) -> Reply:
    require_admin(ctx, "northstar")
    if len(args) != 1:
        raise UsageError("which metric?", USAGE["northstar"])
    metric = metric_name(args[0].text)
    ctx.store.set_setting("northstar", metric)
    return Reply(f"The team's north-star metric is now {metric}; digests will show it first.",
                 {"northstar": metric})


def cmd_card(ctx: Context, args: list[Token]) -> Reply:
    name_parts: list[str] = []
    rest = list(args)
    while rest and not (not rest[0].quoted and (is_period(rest[0].text)
                                                 or rest[0].text.lower() == "by")):
        name_parts.append(rest.pop(0).text)
    if not name_parts:
        raise UsageError("which campaign?", USAGE["card"])
    periods, by = [], None
    while rest:
        t = rest.pop(0)
        if t.text.lower() == "by" and not t.quoted:
            if not rest:
                raise UsageError("'by' needs a dimension, e.g. by day, by country", USAGE["card"])
            by = rest.pop(0).text
            if rest:
                raise UsageError(f"unexpected '{rest[0].text}' after 'by {by}'", USAGE["card"])
        elif is_period(t.text) and len(periods) < 2:
            periods.append(t.text)
        else:
            raise UsageError(f"'{t.text}' is not a period or 'by <dimension>'", USAGE["card"])
    try:
        camp = engine.find_campaign(ctx.store, " ".join(name_parts))
    except UnknownCampaign:
        # "/kpi spring-sale 7x": the name is a campaign, the rest is what is wrong
        for i in range(len(name_parts) - 1, 0, -1):
            if is_campaign(ctx, " ".join(name_parts[:i])):
                raise UsageError(f"'{name_parts[i]}' is not a period or 'by <dimension>'",
                                 USAGE["card"]) from None
        raise
    rep = engine.report(ctx.store, camp, period_of(ctx, periods), by, now=ctx.now_ts())

    def charts(every: bool = False) -> list[tuple[str, bytes]]:
        from metrics import charts as ch
        return ch.for_report(rep, every)
    return Reply(text.card(rep), rep.as_json(), report=rep, charts=charts)
