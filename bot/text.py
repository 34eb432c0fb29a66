"""What a person reads: the plain-text form of every reply (the CLI prints it; Slack uses it
as the fallback beside Block Kit), and the JSON form for scripts."""
from __future__ import annotations

import datetime as dt
import re
import unicodedata

from metrics import kpis
from metrics.engine import Report
from metrics.times import format_date as day
from metrics.times import zone

from . import mrkdwn

CHANNEL_NAME = {"sms": "SMS", "call": "Calls"}


def file_name(*parts: str, ext: str = "png") -> str:
    """A safe file name from its parts ('Spring sale', 'by-country' -> Spring-sale-by-country.png):
    letters, digits and hyphens only, so that no name from data can leave its folder."""
    slug = "-".join(p for p in (re.sub(r"[^\w]+|-{2,}", "-", part).strip("-_")[:60]
                                for part in parts) if p) or "kpi"
    slug = re.sub(r"-{2,}", "-", slug)
    return f"{slug}.{ext}"


def width(s: str) -> int:
    """Display width: East Asian wide characters take two columns."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def pad(s: str, w: int, right: bool = False) -> str:
    fill = " " * max(0, w - width(s))
    return fill + s if right else s + fill


def table(rows: list[tuple], right: set[int] = frozenset()) -> str:
    widths = [max(width(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(pad(str(c), w, i in right) for i, (c, w) in
                               enumerate(zip(r, widths))).rstrip() for r in rows)


def fmt_value(v: kpis.Value, currency: str | None = None) -> str:
    if v.value is None:
        return "n/a"
    if v.unit == "percent":
        if abs(v.value) >= 10:
            return f"{v.value * 100:,.0f}%"
        return f"{v.value * 100:,.2f}%" if 0 < abs(v.value) < 0.01 else f"{v.value * 100:,.1f}%"
    if v.unit == "money":
        return f"{v.value:,.2f}" + (f" {currency}" if currency else "")
    if v.unit == "seconds":
        m, s = divmod(round(v.value), 60)
        return f"{m}:{s:02d} min" if m else f"{s} s"
    return f"{v.value:,}"


def _num(x: float | None, money: bool) -> str:
    if x is None:
        return ""
    return f"{x:,.2f}" if money else f"{x:,}"


def fraction(v: kpis.Value) -> str:
    """'16,822 / 17,855': the numerator and denominator behind a rate."""
    if v.denominator is None:
        return ""
    k = kpis.find(v.name)[0]
    return (f"{_num(v.numerator, k.numerator_unit == 'money')} / "
            f"{_num(v.denominator, k.denominator_unit == 'money')}")


def change(now: kpis.Value, before: kpis.Value, good: str | None) -> str:
    """The change against the previous period: points for rates, percent for the rest."""
    if now.value is None or before.value is None:
        return ""
    diff = now.value - before.value
    if now.unit == "percent":
        if abs(diff) < 0.0005:
            return "= same"
        text = f"{diff * 100:+,.0f} pts" if abs(diff) >= 1 else f"{diff * 100:+.1f} pts"
    else:
        if before.value == 0:
            return "new" if now.value else "= same"
        rel = diff / abs(before.value)
        if abs(rel) < 0.0005:
            return "= same"
        text = f"{rel * 100:+.1f}%" if abs(rel) < 0.1 else f"{rel * 100:+.0f}%"
    arrow = "▲" if diff > 0 else "▼"
    if good is not None:
        better = (diff > 0) == (good == "up")
        return f"{arrow} {text} ({'better' if better else 'worse'})"
    return f"{arrow} {text}"


def shown_kpis(rep: Report, channel: str) -> list[kpis.Kpi]:
    """The channel's KPIs in goal order, without those that cannot apply (no list data)."""
    sec = rep.current[channel]
    out = []
    for k in kpis.ordered(channel, rep.campaign.goal):
        v = sec.metrics[k.name]
        if v.value is None and k.name in ("list_growth_rate", "cost_per_subscriber") \
                and not sec.counters.get("list_size_start") and not sec.counters.get("new_subscribers") \
                and not sec.counters.get("opted_in"):
            continue
        out.append(k)
    return out


def period_text(rep: Report) -> str:
    tz = zone(rep.tz)
    a = dt.datetime.fromtimestamp(rep.period.start, tz)
    b = dt.datetime.fromtimestamp(rep.period.end - 1, tz)
    span = f"{day(a)} – {day(b)}" if a.date() != b.date() else day(a)
    if rep.period.seconds < 2 * 86400 and not rep.whole:
        span = f"{day(a, '%Y-%m-%d %H:%M')} – {dt.datetime.fromtimestamp(rep.period.end, tz):%H:%M}"
    return f"{rep.period.label}, {span} ({rep.tz})"


def card(rep: Report) -> str:
    c = rep.campaign
    goal = f" · goal: {c.goal}" if c.goal else ""
    lines = [f"{c.name} · {' + '.join(CHANNEL_NAME[ch] for ch in rep.channels)}{goal}",
             period_text(rep)]
    if rep.previous:
        lines.append(f"compared with {rep.previous_period.label}")
    for ch in rep.channels:
        sec = rep.current[ch]
        cur = sec.currency
        rows = []
        heads = {k.name for k in rep.headline(ch)}
        marks = {}
        for k in shown_kpis(rep, ch):
            v = sec.metrics[k.name]
            row = [("★ " if k.name in heads else "  ") + k.label, fmt_value(v, cur), fraction(v)]
            if rep.previous:
                row.append(change(v, rep.previous[ch].metrics[k.name], k.good))
            b = rep.benchmarks.get((ch, k.name))
            marks[k.name] = benchmark_cell(b, v, k) if b else ""
            rows.append(tuple(row))
        if any(marks.values()):
            rows = [r + (m,) for r, m in zip(rows, marks.values())]
        lines.append("")
        if len(rep.channels) > 1:
            lines.append(CHANNEL_NAME[ch])
        if sec.volume == 0 and not any(sec.counters.values()):
            lines.append("  no activity in this period")
            continue
        lines.append(table(rows, right={1}))
        sources = benchmark_sources(rep, ch)
        if sources:
            lines.append("Benchmarks: " + sources)
        if sec.dispositions:
            lines.append("")
            lines.append("Dispositions: " + ", ".join(
                f"{name} {n:,} ({share * 100:.0f}%)" for name, n, share in sec.dispositions[:8]))
    if rep.attribution is not None:
        lines.append("")
        lines.extend(attribution_lines(rep))
    if rep.dim:
        lines.append("")
        lines.append(f"By {rep.dim}:")
        lines.append(breakdown_table(rep))
    return "\n".join(lines)


_HOW = {"named": "named their message or call", "click": "by click", "delivery": "by delivery",
        "code": "by code"}
_SET_BY = {"default": "the default", "team": "the team's setting",
           "campaign": "this campaign's setting"}


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'s' * (n != 1)}"


def attribution_lines(rep: Report) -> list[str]:
    """How the card's conversions were credited, under which windows, what went nowhere."""
    a = rep.attribution
    w = a.windows
    lines = [f"Conversions credited by {w.text()} ({_SET_BY[w.set_by]})"
             + (": " + ", ".join(f"{n:,} {_HOW[h]}" for h, n in a.by_how.items())
                if a.by_how else ": none in this period") + "."]
    costs = {c for sec in rep.current.values() for c in sec.currencies}
    if a.currencies and costs and set(a.currencies) != costs:
        lines.append(f"Revenue is in {', '.join(a.currencies)} and costs in "
                     f"{', '.join(sorted(costs))}: ROI and revenue mix currencies.")
    if a.uncredited:
        kinds = ", ".join(_plural(n, t) for t, n in a.uncredited.items())
        lines.append(f"Not credited to any campaign: {kinds} (see `kpibot list`).")
    return lines


def benchmark_cell(b, v: kpis.Value, k: kpis.Kpi) -> str:
    """'benchmark 0.6%–1.4%: good' (where the value stands against the band)."""
    status = b.status(v.value, k.good)
    return f"benchmark {b.band(k.unit)}" + (f": {status}" if status else "")


def benchmark_sources(rep: Report, ch: str) -> str:
    """Where the figures of a channel's shown benchmarks come from, each source once."""
    seen: dict[tuple[str, int], list[str]] = {}
    for k in shown_kpis(rep, ch):
        b = rep.benchmarks.get((ch, k.name))
        if b is not None:
            seen.setdefault((b.source, b.year), []).append(k.label.lower())
    return "; ".join(f"{', '.join(names)}: {src}, {year}" for (src, year), names in seen.items())


def breakdown_table(rep: Report, limit: int = 25) -> str:
    """The breakdown as an aligned table: volume and the headline KPIs per value."""
    ch = rep.dim_channel or rep.channels[0]
    heads = rep.headline(ch)[:2]
    vol = kpis.VOLUME[ch]
    cur = rep.current[ch].currency
    rows = [(rep.dim, vol) + tuple(k.label for k in heads)]
    for key, secs in rep.breakdown[:limit]:
        s = secs.get(ch)
        if s is not None:
            rows.append((key, f"{s.counters.get(vol, 0):,}") + tuple(
                fmt_value(s.metrics[k.name], cur) for k in heads))
    out = table(rows, right={1, 2, 3})
    if len(rep.breakdown) > limit:
        out += f"\n… and {len(rep.breakdown) - limit} more"
    return out


def campaign_list(rows: list[dict]) -> str:
    if not rows:
        return "No campaigns yet: import a file with `kpibot import FILE`."
    out = [("campaign", "channel", "goal", "volume", "from", "to")]
    for r in rows:
        vol = r["sent"] + r["dialed"]
        out.append((r["campaign"], r["channel"] or "", r["goal"] or "", f"{vol:,}",
                    r["first"] or "—", r["last"] or "—"))
    return table(out, right={3})


_PLURAL = {"message status": "message statuses", "reply": "replies", "call": "calls",
           "click": "clicks", "event": "events", "synced record": "synced records",
           "unreadable event": "unreadable events"}


def uncredited_list(rows: list[dict], waiting_clicks: int) -> str:
    """Conversions nothing could be credited with, and clicks whose message is not stored."""
    lines = []
    if rows:
        total = sum(r["conversions"] for r in rows)
        lines.append(f"Conversions not credited: {total:,} (kept; credited as soon as a "
                     "message, click or code claims them)")
        for r in rows[:10]:
            money = (f", {r['revenue']:,.2f} {'/'.join(r['currencies'])}".rstrip()
                     if r["revenue"] else "")
            lines.append(f"  {_plural(r['conversions'], r['type'])}{money}: {r['reason']}")
        if len(rows) > 10:
            lines.append(f"  … and {len(rows) - 10} more kinds")
    if waiting_clicks:
        lines.append(f"Clicks on messages not stored (yet): {waiting_clicks:,} (they count "
                     "when their message arrives)")
    return "\n".join(lines)


def unassigned_list(held: list[dict]) -> str:
    """Live events kept because nothing says which campaign they belong to."""
    total = sum(h["events"] for h in held)
    lines = [f"Unassigned live events: {total:,} (kept, not counted until they have a "
             "campaign)"]
    for h in held[:10]:
        what = h["what"] if h["events"] == 1 else _PLURAL.get(h["what"], h["what"])
        sender = f" via {h['sender']}" if h["sender"] else ""
        lines.append(f"  {h['events']:,} {what}{sender}: {h['reason']}")
    if len(held) > 10:
        lines.append(f"  … and {len(held) - 10} more kinds")
    lines.append("Give them a campaign with ?campaign=NAME on the webhook URL or a "
                 "[campaign_by_sender] entry in the KPIBOT_SOURCES file; they are applied "
                 "as soon as one is known.")
    return "\n".join(lines)


def help_text(usage: dict, examples: list[str]) -> str:
    lines = ["/kpi: campaign KPIs from your SMS and call exports.", ""]
    lines += [f"  {u}" for u in usage.values()]
    lines += ["", "Periods: 7d, 30d, 24h, today, yesterday, this-week, last-week, this-month, "
              "last-month, 2026-10 (a month), 2026-10-01 (since a date), two dates (a range).",
              "Dimensions: day, week, hour, weekday, segment, variant, country, status, error, "
              "disposition, agent, and any imported attribute column.",
              "", "Examples:"] + [f"  {e}" for e in examples]
    return "\n".join(lines)


def alert_list(rules: list[dict], tz, now: int) -> str:
    if not rules:
        return ("No alerts yet. Add one, e.g. `/kpi alert add * opt_out_rate > 2% min 200 "
                "window 24h`.")
    lines = []
    for r in rules:
        flags = " (muted)" if r["muted"] else ""
        if r["snoozed_until"] and r["snoozed_until"] > now:
            flags += f" (snoozed until {dt.datetime.fromtimestamp(r['snoozed_until'], tz):%Y-%m-%d %H:%M})"
        where = f" → {mrkdwn.channel(r['channel'])}" if r["channel"] else ""
        lines.append(f"#{r['id']} {r['campaign']} {r['rule']}{where}{flags}")
        for st in r["states"]:
            checked = dt.datetime.fromtimestamp(st["last_checked"], tz) if st["last_checked"] else None
            if st["last_note"] or st["last_value"] is None:
                result = st["last_note"] or "no data"
            elif r["unit"] == "percent":
                result = (f"{st['last_value'] * 100:.2f}% "
                          f"({st['last_numerator']:,g} / {st['last_denominator']:,g})")
            else:
                result = f"{st['last_value']:,g}"
            lines.append(f"    {st['campaign']}: {st['state']}, last {result}"
                         + (f" at {checked:%Y-%m-%d %H:%M}" if checked else ""))
    return "\n".join(lines)


def notice_text(p: dict) -> str:
    """One alert post's text, from a claimed post's payload."""
    def fmt(x):
        return f"{x * 100:.2f}%" if p["unit"] == "percent" else f"{x:,g}"
    head = {"firing": "🔴 Alert", "still firing": "🔴 Still firing",
            "recovered": "✅ Recovered"}[p["kind"]]
    frac = (f" ({p['numerator']:,g} / {p['denominator']:,g})"
            if p["denominator"] is not None else "")
    rule = f"{p['op']} {fmt(p['threshold'])}"
    if p["kind"] == "recovered" and p.get("recovery") is not None:
        rule += f", recovery at {fmt(p['recovery'])}"
    return (f"{head}: {p['campaign']} {p['metric']} is {fmt(p['value'])}{frac} over the last "
            f"{p['window_text']} (rule #{p['rule_id']}: {rule})")


def digest_lines(d) -> dict:
    """A digest's parts as text: title, context, north star, one line per campaign,
    movers, alerts."""
    tz = zone(d.tz)
    a = dt.datetime.fromtimestamp(d.start, tz)
    b = dt.datetime.fromtimestamp(d.end - 1, tz)
    days = round((d.end - d.start) / 86400)
    title = ("Daily digest" if days <= 1 else "Weekly digest") + \
        (f" · {day(a)}" if a.date() == b.date() else f" · {day(a)} – {day(b)}")
    lines = []
    for ln in d.lines:
        vol = kpis.VOLUME[ln.channel]
        parts = [f"{ln.volume:,} {vol}"]
        for k, now, before in ln.values:
            ch = change(now, before, k.good)
            parts.append(f"{k.label} {fmt_value(now)}" + (f" {ch}" if ch else ""))
        goal = f", {ln.goal}" if ln.goal else ""
        lines.append(f"{ln.campaign} ({CHANNEL_NAME[ln.channel]}{goal}): " + " · ".join(parts))
    north = None
    if d.northstar:
        name, values = d.northstar
        shown = ", ".join(f"{c} {fmt_value(v)}" for c, v in values[:10]) or "no data"
        north = f"North star, {name}: {shown}"
    movers = [f"{c}: {k} {delta * 100:+.1f} pts" for c, k, delta in d.movers]
    alerts = [f"{p['campaign']} {p['metric']} {p['op']} "
              f"{p['threshold'] * 100 if p['unit'] == 'percent' else p['threshold']:g}"
              f"{'%' if p['unit'] == 'percent' else ''} (rule #{p['rule_id']})" for p in d.alerts]
    return {"title": title, "context": f"{d.tz} · {len(d.lines)} active campaign"
            f"{'s' * (len(d.lines) != 1)}", "north": north, "lines": lines, "movers": movers,
            "alerts": alerts}


def digest_text(d, late: str | None = None) -> str:
    p = digest_lines(d)
    out = [p["title"] + (f" ({late})" if late else ""), p["context"]]
    if p["north"]:
        out += ["", p["north"]]
    out += [""] + (p["lines"] or ["No campaign had activity in this period."])
    if p["movers"]:
        out += ["", "Top movers: " + "; ".join(p["movers"])]
    if p["alerts"]:
        out += ["", "Alerts that fired: " + "; ".join(p["alerts"])]
    return "\n".join(out)


_COUNTED = {"delivery_rate": "delivered", "ctr": "clicked", "conversion_rate": "converted",
            "opt_out_rate": "opted out", "response_rate": "replied",
            "spam_complaint_rate": "complaints", "answer_rate": "answered",
            "abandonment_rate": "abandoned"}


def comparison(c) -> str:
    """An A/B comparison (``metrics.ab.Comparison``): the verdict first, then each arm's
    rate, counts and 95% interval, best first."""
    what = "variant" if c.kind == "variants" else "campaign"
    k = c.metric
    when = c.period.label if c.period is not None else (
        "whole campaign" if c.kind == "variants" else "each campaign's whole life")
    head = (f"A/B test of {c.subject} on {k.label.lower()} ({k.definition}), {when}"
            if c.kind == "variants" else
            f"{c.subject} on {k.label.lower()} ({k.definition}), {when}")
    down = k.good == "down"
    arms = sorted(c.arms, key=lambda a: (a.value is None, (a.value or 0) * (1 if down else -1)))
    counted = _COUNTED.get(k.name, "count")
    rows = [(what, "rate", f"{counted} / {c.noun}", "95% interval")]
    for a in arms:
        lo, hi = a.interval
        rows.append((a.label + (" ★" if a.label == c.winner else ""),
                     "n/a" if a.value is None else f"{a.value * 100:.2f}%",
                     f"{a.numerator:,} / {a.denominator:,}",
                     "" if lo is None else f"{lo * 100:.2f}–{hi * 100:.2f}%"))
    lines = [c.verdict, head, table(rows, right={1})]
    if c.left_out:
        lines.append("Not compared: " + ", ".join(
            "rows without a variant" if x == "(none)" else
            "conversions credited by code (no message, so no variant)" if x.startswith(
                "(credited by code") else "daily totals (no variants)"
            for x in c.left_out) + ".")
    return "\n".join(lines)


def leaderboard(b) -> str:
    """``metrics.leaderboard.Board`` as text: per channel, campaigns best first."""
    when = b.period.label if b.period is not None else "each campaign's whole life"
    out = []
    for ch, entries in b.ranked.items():
        k = b.kpi[ch]
        better = " (lower is better)" if k.good == "down" else ""
        out.append(f"Top {'SMS' if ch == 'sms' else 'call'} campaigns by {k.label.lower()} ({k.definition}), "
                   f"{when}{better}")
        counts = k.denominator is not None
        rows = [("#", "campaign", k.label.lower()) + (("of",) if counts else ())]
        for i, e in enumerate(entries):
            rows.append((str(i + 1), e.campaign, fmt_value(e.value))
                        + ((fraction(e.value),) if counts else ()))
        if entries:
            out.append(table(rows, right={0, 2}))
        small = b.not_ranked.get(ch, [])
        if small:
            from metrics.leaderboard import floor
            of = k.definition.split(" / ")[-1]
            why = f"fewer than {floor(k)} {of}" if floor(k) else f"no {of} recorded"
            out.append(f"Not ranked ({why}): "
                       + ", ".join(f"{e.campaign} ({fmt_value(e.value)}, "
                                   f"{fraction(e.value) or 'no data'})"
                                   for e in small))
        out.append("")
    return "\n".join(out).rstrip()
