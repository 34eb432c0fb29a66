"""The `/kpi` command core: one parser for the command text, a dispatch table of
subcommands, and domain errors turned into helpful replies. Slack (``bot.app``) and the
CLI (``kpibot ask``) both call :func:`run`; neither knows how a subcommand works.
"""
from __future__ import annotations

import datetime as dt
import difflib
import math
import html
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from metrics import ab, engine, kpis, leaderboard
from metrics.errors import KpiBotError, UnknownCampaign
from metrics.periods import is_period, resolve
from metrics.store import GOALS, Store
from metrics.times import zone

from . import mrkdwn, text

USAGE = {
    "help": "/kpi help",
    "list": "/kpi list",
    "card": "/kpi <campaign> [since] [until] [by <dimension>]",
    "goal": "/kpi goal <campaign> <" + ", ".join(GOALS) + ">",
    "northstar": "/kpi northstar <metric>",
    "compare": "/kpi compare <campaign-a> <campaign-b> [metric] [since] [until]",
    "ab": "/kpi ab <campaign> [metric] [since] [until]",
    "top": "/kpi top <metric> [since] [until]",
    "alert": "/kpi alert add <campaign or *> <metric> <op> <value> [min <n>] [window <dur>] "
             "[recover <value>] [renotify <dur>] [in #channel] | alert list | "
             "alert remove <id> | alert snooze <id> <dur>",
    "digest": "/kpi digest add <daily or weekly <day>> <HH:MM> [<IANA tz>] [in #channel] | "
              "digest list | digest remove <id> | digest preview [daily]",
}
NOT_YET: tuple[str, ...] = ()   # in the contract, not built yet
STATE_CHANGING = ("goal", "northstar", "alert", "digest", "import")
EXAMPLES = ["/kpi list", "/kpi black-friday", "/kpi black-friday 7d",
            "/kpi ab black-friday", "/kpi compare black-friday cyber-monday ctr",
            "/kpi top conversion_rate 30d",
            "/kpi \"spring sale\" 2026-10-01 2026-10-31 by country",
            "/kpi renewals-q4 last-week by disposition", "/kpi goal black-friday sales"]


class UsageError(KpiBotError):
    def __init__(self, message: str, usage: str | None = None):
        self.usage = usage
        super().__init__(message)


@dataclass
class Token:
    text: str
    quoted: bool = False
    kind: str = "word"      # word, channel, user, group


@dataclass
class Context:
    store: Store
    now: int | None = None
    channel: str | None = None     # where the command was typed (Slack)
    user: str | None = None
    is_admin: bool = True      # the CLI user owns the database; Slack decides per user

    def now_ts(self) -> int:
        return self.now if self.now is not None else int(time.time())


@dataclass
class Reply:
    """What a subcommand answers: text for people, data for scripts, charts to attach."""

    text: str
    data: dict
    ok: bool = True
    report: engine.Report | None = None
    links: frozenset[str] = frozenset()     # channel ids the text may link to (<#C123>)
    # () -> [(name, png)]: the main chart; (every=True) -> all that apply
    charts: Callable[..., list[tuple[str, bytes]]] = field(default=lambda every=False: [])


_QUOTES = {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u00ab": '"',
           "\u00bb": '"', "\u201e": '"'}
_ESCAPE = re.compile(r"<([#@!])([^>|]*)(?:\|([^>]*))?>")
# control characters, and the zero-width space that copied Slack text can carry
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufdd0-\ufdef\ufffe\uffff]")


def tokenize(raw: str) -> list[Token]:
    """Split command text into tokens: "quoted words" stay together (typographic quotes
    too, as phones type them), Slack's escapes become channel/user/group tokens, and
    ``&amp;`` style entities are decoded."""
    s = _INVISIBLE.sub("", raw or "").strip()
    for q, plain in _QUOTES.items():
        s = s.replace(q, plain)
    tokens: list[Token] = []
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "\"'":
            j = s.find(ch, i + 1)
            if j < 0:
                raise UsageError(f"unclosed quote: {s[i:i + 40]}")
            tokens.append(Token(html.unescape(s[i + 1:j]).strip(), quoted=True))
            i = j + 1
            continue
        m = _ESCAPE.match(s, i)
        if m:
            sigil, ident, label = m.groups()
            if sigil == "#":
                tokens.append(Token(ident, kind="channel"))
            elif sigil == "@":
                tokens.append(Token(ident, kind="user"))
            else:   # <!subteam^S123|@group>, <!here>
                tokens.append(Token(ident.split("^")[-1], kind="group"))
            i = m.end()
            continue
        j = i
        while j < n and not s[j].isspace():
            j += 1
        tokens.append(Token(html.unescape(s[i:j])))
        i = j
    if tokens and tokens[0].text.lower() == "/kpi" and not tokens[0].quoted:
        tokens = tokens[1:]
    return tokens


# -- subcommands ------------------------------------------------------------------------------

def cmd_help(ctx: Context, args: list[Token]) -> Reply:
    return Reply(text.help_text(USAGE, EXAMPLES, NOT_YET),
                 {"commands": USAGE, "examples": EXAMPLES, "not_available_yet": list(NOT_YET)})


def cmd_list(ctx: Context, args: list[Token]) -> Reply:
    rows = engine.campaigns(ctx.store)
    return Reply(text.campaign_list(rows), {"campaigns": rows})


def cmd_goal(ctx: Context, args: list[Token]) -> Reply:
    _admin(ctx, "goal")
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
    _admin(ctx, "northstar")
    if len(args) != 1:
        raise UsageError("which metric?", USAGE["northstar"])
    metric = _metric(args[0].text)
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
            if _is_campaign(ctx, " ".join(name_parts[:i])):
                raise UsageError(f"'{name_parts[i]}' is not a period or 'by <dimension>'",
                                 USAGE["card"]) from None
        raise
    tz = zone(ctx.store.timezone())
    period = resolve(periods[0], periods[1] if len(periods) > 1 else None, ctx.now_ts(), tz) \
        if periods else None
    rep = engine.report(ctx.store, camp, period, by, now=ctx.now_ts())

    def charts(every: bool = False) -> list[tuple[str, bytes]]:
        from metrics import charts as ch
        return ch.for_report(rep, every)
    return Reply(text.card(rep), text.card_json(rep), report=rep, charts=charts)


def _readings(args: list[Token]) -> list[tuple[list[Token], list[Token]]]:
    """Ways to read ``... [metric] [since] [until]`` (metric and periods in any order):
    (the words before, the trailing words), the most trailing words first. A campaign may
    be called "holiday revenue"; the caller keeps the first reading whose words name
    campaigns. Quoted words are always names."""
    rest, tail = list(args), []
    periods = metrics = 0
    names = kpis.all_names()
    while rest and not rest[-1].quoted:
        word = rest[-1].text
        if is_period(word) and periods < 2:
            periods += 1
        elif not metrics and word.lower() in names:
            metrics += 1
        else:
            break
        tail.insert(0, rest.pop())
    n = len(args)
    return [(list(args[:n - j]), list(args[n - j:])) for j in range(len(tail), -1, -1)
            if n - j > 0]


def _options(ctx: Context, tail: list[Token]) -> tuple[str | None, object]:
    """The metric (None: the goal's) and the period (None: the whole life) in ``tail``."""
    metric = next((t.text.lower() for t in tail if not is_period(t.text)), None)
    periods = [t.text for t in tail if is_period(t.text)]
    period = resolve(periods[0], periods[1] if len(periods) > 1 else None, ctx.now_ts(),
                     zone(ctx.store.timezone())) if periods else None
    return metric, period


def _is_campaign(ctx: Context, name: str) -> bool:
    return engine.lookup_campaign(ctx.store, name) is not None


def _comparison_reply(c: ab.Comparison) -> Reply:
    def charts(every: bool = False) -> list[tuple[str, bytes]]:
        from metrics import charts as ch
        return [("ab", ch.comparison(c))]
    return Reply(text.comparison(c), c.as_json(), charts=charts)


def cmd_ab(ctx: Context, args: list[Token]) -> Reply:
    readings = _readings(args)
    if not readings:
        raise UsageError("which campaign?", USAGE["ab"])
    names, tail = next((r for r in readings
                        if _is_campaign(ctx, " ".join(t.text for t in r[0]))), readings[0])
    metric, period = _options(ctx, tail)
    return _comparison_reply(ab.variants(ctx.store, " ".join(t.text for t in names), metric,
                                         period, now=ctx.now_ts()))


def _two_campaigns(ctx: Context, names: list[Token]) -> tuple[str, str] | None:
    """The one way to cut ``names`` into two campaign names, or None."""
    splits = []
    for i in range(1, len(names)):
        left = " ".join(t.text for t in names[:i])
        right = " ".join(t.text for t in names[i:])
        if _is_campaign(ctx, left) and _is_campaign(ctx, right):
            splits.append((left, right))
    return splits[0] if len(splits) == 1 else None


def cmd_compare(ctx: Context, args: list[Token]) -> Reply:
    readings = [r for r in _readings(args) if len(r[0]) >= 2]
    if not readings:
        raise UsageError("compare needs two campaigns", USAGE["compare"])
    for names, tail in readings:
        pair = _two_campaigns(ctx, names)
        if pair is not None:
            break
    else:
        names, tail = readings[0]
        if len(names) != 2:   # two words: let the unknown one be named, with suggestions
            raise UsageError("which two campaigns? Put a name with spaces in quotes, e.g. "
                             '/kpi compare "spring sale" "autumn sale"', USAGE["compare"])
        pair = (names[0].text, names[1].text)
    metric, period = _options(ctx, tail)
    return _comparison_reply(ab.campaigns(ctx.store, *pair, metric, period, now=ctx.now_ts()))


def cmd_top(ctx: Context, args: list[Token]) -> Reply:
    if not args:
        raise UsageError("which metric?", USAGE["top"])
    metric = _metric(args[0].text)
    words = [t.text for t in args[1:]]
    bad = [w for w in words if not is_period(w)]
    if bad or len(words) > 2:
        raise UsageError(f"'{bad[0] if bad else words[2]}' is not a period", USAGE["top"])
    period = resolve(words[0], words[1] if len(words) > 1 else None, ctx.now_ts(),
                     zone(ctx.store.timezone())) if words else None
    board = leaderboard.top(ctx.store, metric, period, now=ctx.now_ts())

    def charts(every: bool = False) -> list[tuple[str, bytes]]:
        from metrics import charts as ch
        return [("top", ch.leaderboard(board))]
    return Reply(text.leaderboard(board), board.as_json(), charts=charts)


_DURATION = re.compile(r"^(\d{1,5})([mhdw])$")


def duration(word: str) -> int:
    m = _DURATION.match(word.lower())
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"'{word}' is not a duration (like 30m, 24h, 7d, 2w)")
    return int(m.group(1)) * {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[m.group(2)]


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
                     {"alerts": data}, links=_links(r.channel for r in rules))
    _admin(ctx, f"alert {sub}")
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
                opts["min_volume"] = _whole(arg.text, "min needs a whole number")
            elif word == "window":
                opts["window_s"] = duration(arg.text)
            elif word == "renotify":
                opts["renotify_s"] = duration(arg.text)
            elif word == "recover":
                opts["recovery"] = _threshold(arg.text, metric)
            elif word == "in":
                opts["channel"] = _channel_arg(arg)
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
                     {"id": rule.id, "rule": rule.describe()}, links=_links([rule.channel]))
    if sub in ("remove", "snooze"):
        rid = _whole(rest[0].text.lstrip("#") if rest else "",
                     "which alert? (its number from `/kpi alert list`)", USAGE["alert"])
        try:
            if sub == "remove":
                rule = alerts.remove_rule(ctx.store, rid)
                return Reply(f"Alert #{rid} removed ({rule.describe()}).", {"removed": rid})
            if len(rest) < 2:
                raise UsageError("snooze for how long? e.g. `/kpi alert snooze 3 1d`",
                                 USAGE["alert"])
            until = ctx.now_ts() + duration(rest[1].text)
            alerts.snooze(ctx.store, rid, until)
        except alerts.AlertError as exc:
            raise UsageError(str(exc)) from None
        when = dt.datetime.fromtimestamp(until, zone(ctx.store.timezone()))
        return Reply(f"Alert #{rid} snoozed until {when:%Y-%m-%d %H:%M %Z}.",
                     {"snoozed": rid, "until": when.isoformat()})
    raise UsageError(f"'{sub}' is not an alert command", USAGE["alert"])


def cmd_digest(ctx: Context, args: list[Token]) -> Reply:
    from metrics import digests
    sub = args[0].text.lower() if args else "list"
    toks = args[1:]
    rest = [t.text for t in toks]
    tz_name = ctx.store.timezone()
    if sub == "list":
        subs = digests.subscriptions(ctx.store)
        data = [{"id": d.id, "frequency": d.frequency, "weekday": d.weekday, "at": d.at,
                 "tz": d.tz, "channel": d.channel, "schedule": d.describe()} for d in subs]
        body = "\n".join(f"#{d.id} {d.describe()}"
                         + (f" → {mrkdwn.channel(d.channel)}" if d.channel else "")
                         for d in subs) or ("No digests yet. Add one, e.g. `/kpi digest add "
                                            "weekly monday 09:00 Europe/Berlin`.")
        return Reply(body, {"digests": data}, links=_links(d.channel for d in subs))
    if sub == "preview":
        from .text import digest_text
        daily = bool(rest) and rest[0].lower() == "daily"
        tz = zone(tz_name)
        local_now = dt.datetime.fromtimestamp(ctx.now_ts(), tz)
        start, end, ps, pe = digests.period_for("daily" if daily else "weekly", local_now)
        d = digests.build(ctx.store, start, end, ps, pe, tz_name)
        body = digest_text(d)
        return Reply(body, {"start": start, "end": end, "campaigns": [
            {"campaign": ln.campaign, "channel": ln.channel, "volume": ln.volume,
             "metrics": {k.name: {"now": a.as_json(), "before": b.as_json()}
                         for k, a, b in ln.values}} for ln in d.lines],
            "movers": d.movers, "alerts": d.alerts})
    _admin(ctx, f"digest {sub}")
    if sub == "add":
        words = [w.lower() for w in rest]
        if not words or words[0] not in ("daily", "weekly"):
            raise UsageError("daily or weekly?", USAGE["digest"])
        frequency, i, weekday = words[0], 1, None
        if frequency == "weekly":
            day = words[1] if len(words) > 1 else ""
            match = [n for n, name in enumerate(digests.WEEKDAYS) if day and name.startswith(day[:3])]
            if len(day) < 3 or not match:
                raise UsageError(f"'{day}' is not a day of the week", USAGE["digest"])
            weekday, i = match[0], 2
        if i >= len(rest):
            raise UsageError("at what time? e.g. 09:00", USAGE["digest"])
        at, i = rest[i], i + 1
        tz_arg, channel = tz_name, ctx.channel
        while i < len(rest):
            if rest[i].lower() == "in" and i + 1 < len(rest):
                channel, i = _channel_arg(toks[i + 1]), i + 2
            elif "/" in rest[i] or rest[i].upper() == "UTC":
                tz_arg, i = rest[i], i + 1
            else:
                raise UsageError(f"'{rest[i]}' is not a time zone (like Europe/Berlin) or "
                                 "`in #channel`", USAGE["digest"])
        try:
            d = digests.add(ctx.store, frequency, at, tz_arg, weekday=weekday, channel=channel,
                            created_by=ctx.user)
        except (digests.DigestError, KpiBotError) as exc:
            raise UsageError(str(exc), USAGE["digest"]) from None
        where = f" in {mrkdwn.channel(d.channel)}" if d.channel else \
            " (no channel yet: add `in #channel`)"
        return Reply(f"Digest #{d.id} added: {d.describe()}{where}.",
                     {"id": d.id, "schedule": d.describe()}, links=_links([d.channel]))
    if sub == "remove":
        did = _whole(rest[0].lstrip("#") if rest else "",
                     "which digest? (its number from `/kpi digest list`)", USAGE["digest"])
        try:
            d = digests.remove(ctx.store, did)
        except digests.DigestError as exc:
            raise UsageError(str(exc)) from None
        return Reply(f"Digest #{d.id} removed ({d.describe()}).", {"removed": d.id})
    raise UsageError(f"'{sub}' is not a digest command", USAGE["digest"])


def _not_yet(name: str) -> Callable:
    def handler(ctx: Context, args: list[Token]) -> Reply:
        if name in STATE_CHANGING and args and args[0].text.lower() not in ("list", "preview"):
            _admin(ctx, f"{name} {args[0].text}")
        raise UsageError(f"`/kpi {name}` is part of the plan but not available in this "
                         "version yet.", USAGE[name])
    return handler


COMMANDS: dict[str, Callable[[Context, list[Token]], Reply]] = {
    "help": cmd_help,
    "list": cmd_list,
    "goal": cmd_goal,
    "northstar": cmd_northstar,
    "alert": cmd_alert,
    "digest": cmd_digest,
    "ab": cmd_ab,
    "compare": cmd_compare,
    "top": cmd_top,
    **{name: _not_yet(name) for name in NOT_YET},
}


_WHOLE = re.compile(r"[0-9]{1,15}")


def _whole(word: str, problem: str, usage: str | None = None) -> int:
    """A whole number as typed (ASCII digits, at most 15 of them), or a UsageError."""
    if not _WHOLE.fullmatch(word):
        raise UsageError(f"{problem}, not '{word[:40]}'" if word else problem, usage)
    return int(word)


_CHANNEL_NAME = re.compile(r"^#?(\w[\w.\-]{0,79})$")


def _channel_arg(tok: Token) -> str:
    """The channel of ``in #channel``: the id Slack puts in the command (``<#C123|name>``),
    or a name typed on the command line (``#marketing``)."""
    if tok.kind == "channel" and mrkdwn.is_channel_id(tok.text):
        return tok.text
    m = _CHANNEL_NAME.match(tok.text) if tok.kind == "word" and not tok.quoted else None
    if m is None:
        raise UsageError(f"'{tok.text[:40]}' is not a channel: type # and pick one from the "
                         "list Slack offers, e.g. `in #campaign-alerts`")
    return "#" + m.group(1)


def _links(channels) -> frozenset[str]:
    """The channel ids a reply may link to."""
    return frozenset(c for c in channels if mrkdwn.is_channel_id(c))


def _admin(ctx: Context, what: str) -> None:
    if not ctx.is_admin:
        raise UsageError(f"only admins can change settings (`/kpi {what}`): ask one of the "
                         "people listed in KPIBOT_ADMINS.")


def _metric(name: str) -> str:
    names = kpis.all_names()
    if name.lower() in names:
        return name.lower()
    close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.5)
    raise UsageError(f"no metric called '{name}'." + (
        f" Did you mean: {', '.join(close)}?" if close else "")
        + f" Metrics: {', '.join(names)}.")


MAX_TEXT = 1000     # characters of command text read; longer is refused before parsing
MAX_WORDS = 40


def run(text_in: str, ctx: Context) -> Reply:
    """Parse and answer one `/kpi` command. Never raises for bad input: a domain error
    becomes a reply with ``ok=False``, the reason, and the usage line. Its cost is linear
    in the text, which is refused past ``MAX_TEXT`` characters or ``MAX_WORDS`` words."""
    try:
        if len(text_in or "") > MAX_TEXT:
            raise UsageError(f"that command is {len(text_in):,} characters long; /kpi reads at "
                             f"most {MAX_TEXT:,}. Type `/kpi help` for what it understands.")
        tokens = tokenize(text_in)
        if len(tokens) > MAX_WORDS:
            raise UsageError(f"that command has {len(tokens):,} words; /kpi reads at most "
                             f"{MAX_WORDS}. Put a campaign name with spaces in quotes, e.g. "
                             '/kpi "spring sale 2026" 7d')
        if not tokens:
            return cmd_help(ctx, [])
        head = tokens[0].text.lower()
        handler = COMMANDS.get(head) if not tokens[0].quoted else None
        if handler is not None:
            return handler(ctx, tokens[1:])
        return cmd_card(ctx, tokens)
    except UnknownCampaign as exc:
        msg = str(exc) + " Type `/kpi list` to see every campaign."
        return Reply(msg, {"error": msg, "suggestions": exc.suggestions}, ok=False)
    except UsageError as exc:
        msg = str(exc) + (f"\nUsage: {exc.usage}" if exc.usage else "")
        return Reply(msg, {"error": str(exc), "usage": exc.usage}, ok=False)
    except KpiBotError as exc:
        return Reply(str(exc), {"error": str(exc)}, ok=False)
