"""Reading the arguments the subcommands share: who may change settings, metric names,
whole numbers, durations, channels, periods, and whether words name a campaign."""
from __future__ import annotations

import difflib
import re

from metrics import engine, kpis
from metrics.periods import Period, resolve
from metrics.times import zone

from .. import mrkdwn
from .base import Context, UsageError
from .tokens import Token


def require_admin(ctx: Context, what: str) -> None:
    if not ctx.is_admin:
        raise UsageError(f"only admins can change settings (`/kpi {what}`): ask one of the "
                         "people listed in KPIBOT_ADMINS.")


def metric_name(name: str) -> str:
    """The metric ``name`` names, or a UsageError with the closest names."""
    names = kpis.all_names()
    if name.lower() in names:
        return name.lower()
    close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.5)
    raise UsageError(f"no metric called '{name}'." + (
        f" Did you mean: {', '.join(close)}?" if close else "")
        + f" Metrics: {', '.join(names)}.")


def is_campaign(ctx: Context, name: str) -> bool:
    return engine.lookup_campaign(ctx.store, name) is not None


def period_of(ctx: Context, words: list[str]) -> Period | None:
    """The period ``[since] [until]`` words name, in the team's time zone; None (the
    whole life) for no words."""
    if not words:
        return None
    return resolve(words[0], words[1] if len(words) > 1 else None, ctx.now_ts(),
                   zone(ctx.store.timezone()))


_DURATION = re.compile(r"^(\d{1,5})([mhdw])$")


def duration(word: str) -> int:
    m = _DURATION.match(word.lower())
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"'{word}' is not a duration (like 30m, 24h, 7d, 2w)")
    return int(m.group(1)) * {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[m.group(2)]


_WHOLE = re.compile(r"[0-9]{1,15}")


def whole(word: str, problem: str, usage: str | None = None) -> int:
    """A whole number as typed (ASCII digits, at most 15 of them), or a UsageError."""
    if not _WHOLE.fullmatch(word):
        raise UsageError(f"{problem}, not '{word[:40]}'" if word else problem, usage)
    return int(word)


_CHANNEL_NAME = re.compile(r"^#?(\w[\w.\-]{0,79})$")


def channel_arg(tok: Token) -> str:
    """The channel of ``in #channel``: the id Slack puts in the command (``<#C123|name>``),
    or a name typed on the command line (``#marketing``)."""
    if tok.kind == "channel" and mrkdwn.is_channel_id(tok.text):
        return tok.text
    m = _CHANNEL_NAME.match(tok.text) if tok.kind == "word" and not tok.quoted else None
    if m is None:
        raise UsageError(f"'{tok.text[:40]}' is not a channel: type # and pick one from the "
                         "list Slack offers, e.g. `in #campaign-alerts`")
    return "#" + m.group(1)


def links(channels) -> frozenset[str]:
    """The channel ids a reply may link to."""
    return frozenset(c for c in channels if mrkdwn.is_channel_id(c))
