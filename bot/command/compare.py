"""Side by side and ranked: ``/kpi ab`` (a campaign's variants), ``/kpi compare`` (two
campaigns) and ``/kpi top`` (every campaign by one metric)."""
from __future__ import annotations

from metrics import ab, kpis, leaderboard
from metrics.periods import Period, is_period

from .. import text
from .args import is_campaign, metric_name, period_of
from .base import USAGE, Context, Reply, UsageError
from .tokens import Token


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


def _options(ctx: Context, tail: list[Token]) -> tuple[str | None, Period | None]:
    """The metric (None: the goal's) and the period (None: the whole life) in ``tail``."""
    metric = next((t.text.lower() for t in tail if not is_period(t.text)), None)
    return metric, period_of(ctx, [t.text for t in tail if is_period(t.text)])


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
                        if is_campaign(ctx, " ".join(t.text for t in r[0]))), readings[0])
    metric, period = _options(ctx, tail)
    return _comparison_reply(ab.variants(ctx.store, " ".join(t.text for t in names), metric,
                                         period, now=ctx.now_ts()))


def _two_campaigns(ctx: Context, names: list[Token]) -> tuple[str, str] | None:
    """The one way to cut ``names`` into two campaign names, or None."""
    splits = []
    for i in range(1, len(names)):
        left = " ".join(t.text for t in names[:i])
        right = " ".join(t.text for t in names[i:])
        if is_campaign(ctx, left) and is_campaign(ctx, right):
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
    metric = metric_name(args[0].text)
    words = [t.text for t in args[1:]]
    bad = [w for w in words if not is_period(w)]
    if bad or len(words) > 2:
        raise UsageError(f"'{bad[0] if bad else words[2]}' is not a period", USAGE["top"])
    board = leaderboard.top(ctx.store, metric, period_of(ctx, words), now=ctx.now_ts())

    def charts(every: bool = False) -> list[tuple[str, bytes]]:
        from metrics import charts as ch
        return [("top", ch.leaderboard(board))]
    return Reply(text.leaderboard(board), board.as_json(), charts=charts)
