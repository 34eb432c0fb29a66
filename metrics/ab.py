"""A/B comparisons: a campaign's variants, or two campaigns, on one rate.

Each arm gets its rate with a 95% Wilson interval. The leader (the best rate, lower being
better for opt-outs, complaints and abandoned calls) is tested against every other arm
with a two-proportion z-test (pooled, two-sided); with more than two arms the p-value is
the largest of those tests times their number (Bonferroni), so three or four variants do
not make a chance lead look real. A winner is named only when that p-value is under 5%
*and* every arm has enough volume: at least ``MIN_ARM`` in the denominator, and at least
``MIN_EVENTS`` successes and as many failures *expected* in each arm at the pooled rate
(below that the normal approximation the test rests on does not hold). An arm with no
trials at all blocks a winner too: it is part of the test that was asked for. Until then the verdict says who leads and
about how much more volume each arm needs (a two-proportion sample size at 95% and 80%
power, for the difference seen so far).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from scipy.stats import binomtest, norm

from . import kpis
from .engine import CODE_KEY, DAILY_KEY, Campaign, find_campaign, report
from .errors import KpiBotError
from .periods import Period
from .store import Store

ALPHA = 0.05
POWER = 0.80
MIN_ARM = 100
MIN_EVENTS = 5
NO_VARIANT = "(none)"

# what the denominator counts, for "about N more ... per arm"
NOUNS = {"delivered": "deliveries", "sent": "sends", "dialed": "dialed calls",
         "answered": "answered calls", "answered+abandoned": "picked-up calls"}
# the rate an A/B test is about when none is named and the goal leads with none
FALLBACK = {"sms": ["conversion_rate", "ctr", "delivery_rate"],
            "call": ["conversion_rate", "answer_rate"]}


class NotComparable(KpiBotError):
    """The request cannot be answered as an A/B comparison; the message says why."""


def proportions(channel: str) -> list[kpis.Kpi]:
    """The channel's KPIs that are a share of something: successes over trials, each
    trial a success or not (ROI and list growth are rates, but not of that kind)."""
    return [k for k in kpis.REGISTRY[channel].values() if k.proportion]


def rate_for(channel: str, goal: str | None, name: str | None = None) -> kpis.Kpi:
    """The named rate, or the first one the goal leads with, or a sensible default."""
    props = {k.name: k for k in proportions(channel)}
    if name is not None:
        if name in props:
            return props[name]
        raise NotComparable(
            f"an A/B test compares rates, and '{name}' is not one for "
            f"{'SMS' if channel == 'sms' else 'calls'}. Rates: {', '.join(props)}.")
    # a goal's headline rate; with no goal set, what a message or script is written to
    # move (conversions, then clicks), rather than the card's delivery rate
    for n in (kpis.GOAL_ORDER[goal] if goal in kpis.GOAL_ORDER and goal else []) + FALLBACK[channel]:
        if n in props:
            return props[n]
    return next(iter(props.values()))


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval (scipy's implementation)."""
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def z_test(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (equal to the chi-square
    test of the 2x2 table without continuity correction)."""
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return float(2 * norm.sf(abs(k1 / n1 - k2 / n2) / se))


def sample_size(p1: float, p2: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Trials per arm for a two-sided two-proportion test to tell p1 from p2 (normal
    approximation, no continuity correction); None when they are equal."""
    if p1 == p2:
        return None
    bar = (p1 + p2) / 2
    za, zb = norm.isf(alpha / 2), norm.isf(1 - power)
    n = (za * math.sqrt(2 * bar * (1 - bar))
         + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p1 - p2) ** 2
    return math.ceil(n)


@dataclass
class Arm:
    label: str
    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None

    @property
    def interval(self) -> tuple[float | None, float | None]:
        if not self.denominator:
            return None, None
        return wilson(self.numerator, self.denominator)

    def as_json(self, key: str) -> dict:
        lo, hi = self.interval
        return {key: self.label, "value": self.value, "numerator": self.numerator,
                "denominator": self.denominator, "ci_low": lo, "ci_high": hi}


@dataclass
class Comparison:
    kind: str                      # "variants" (one campaign) or "campaigns"
    subject: str                   # the campaign, or "a vs b"
    metric: kpis.Kpi
    period: Period | None          # None: each campaign's whole life
    arms: list[Arm]                # biggest first (variants), or as asked (campaigns)
    leader: str | None = None
    p_value: float | None = None
    winner: str | None = None
    needed_per_arm: int | None = None   # more trials per arm, about (None: not estimable)
    verdict: str = ""
    left_out: list[str] = field(default_factory=list)

    @property
    def noun(self) -> str:
        return _noun(self.metric)

    def as_json(self) -> dict:
        key = "variant"   # the contract's key; for compare, the campaign's name
        out = {"metric": self.metric.name, "definition": self.metric.definition,
               "better": {"up": "higher", "down": "lower"}.get(self.metric.good),
               "variants": [a.as_json(key) for a in self.arms],
               "p_value": self.p_value, "winner": self.winner, "verdict": self.verdict,
               "leader": self.leader, "more_per_arm_needed": self.needed_per_arm,
               "period": None if self.period is None else {
                   "start": self.period.start, "end": self.period.end,
                   "label": self.period.label}}
        if self.kind == "variants":
            out["campaign"] = self.subject
            out["left_out"] = self.left_out
        else:
            out["campaigns"] = [a.label for a in self.arms]
        return out


def _noun(k: kpis.Kpi) -> str:
    probe = {"delivered": 1 << 40, "sent": 1 << 41, "dialed": 1 << 42, "answered": 1 << 43,
             "abandoned": 1 << 44}
    den = k.denominator(probe) if k.denominator else 0
    if den == probe["answered"] + probe["abandoned"]:
        return NOUNS["answered+abandoned"]
    for name, v in probe.items():
        if den == v:
            return NOUNS.get(name, name)
    return "trials"


def judge(c: Comparison) -> Comparison:
    """Fill in the leader, p-value, winner, volume needed and the verdict."""
    arms = [a for a in c.arms if a.denominator]
    down = c.metric.good == "down"
    pct = lambda v: f"{v * 100:.2f}%"   # noqa: E731
    empty = [a.label for a in c.arms if not a.denominator]
    where = " in this period" if c.period is not None else ""
    no_data = (f"{', '.join(empty)} {'has' if len(empty) == 1 else 'have'} no {c.noun}{where}"
               if empty else "")
    if len(arms) < 2:
        c.verdict = "Nothing to compare: " + (no_data or "only one arm has data") + "."
        return c
    ranked = sorted(arms, key=lambda a: (a.value if not down else -a.value, a.denominator),
                    reverse=True)
    lead, others = ranked[0], ranked[1:]
    tests = len(others)
    ps = [z_test(lead.numerator, lead.denominator, o.numerator, o.denominator) for o in others]
    c.p_value = min(1.0, max(ps) * tests)
    runner = others[0]
    if lead.value == runner.value:
        c.verdict = (f"No difference so far: {lead.label} and {runner.label} both at "
                     f"{pct(lead.value)}.")
        return c
    c.leader = lead.label
    n = sample_size(lead.value, runner.value, ALPHA / tests)
    have = min(lead.denominator, runner.denominator)
    c.needed_per_arm = None if n is None else max(0, n - have)
    pooled = sum(a.numerator for a in arms) / sum(a.denominator for a in arms)
    small = [a for a in arms if a.denominator < MIN_ARM
             or min(pooled, 1 - pooled) * a.denominator < MIN_EVENTS]
    p_txt = f"p = {c.p_value:.3f}" if c.p_value >= 0.001 else "p < 0.001"
    vs = f"{pct(lead.value)} against {pct(runner.value)} for {runner.label}"
    notes = p_txt + ("; lower is better" if down else "")
    if c.p_value < ALPHA and not small and not empty:
        c.winner = lead.label
        c.verdict = f"{lead.label} wins: {vs} ({notes}" + (
            f"; {tests} comparisons accounted for" if tests > 1 else "") + ")."
        return c
    more = ""
    if c.needed_per_arm:
        more = f": about {c.needed_per_arm:,} more {c.noun} per arm needed"
    if c.p_value < ALPHA and empty:
        c.verdict = (f"{lead.label} leads, {vs} ({notes}), but {no_data}: a winner needs "
                     f"every arm compared.")
    elif c.p_value < ALPHA:
        few = small[0]
        c.verdict = (f"{lead.label} leads, {vs} ({notes}), but {few.label} has too little "
                     f"volume to call it ({few.numerator:,} of {few.denominator:,} {c.noun}; "
                     f"a winner needs at least {MIN_ARM} {c.noun} per arm, and enough of them "
                     f"that {MIN_EVENTS} of each outcome are expected at the overall rate).")
    else:
        c.verdict = (f"{lead.label} leads, not yet significant ({vs}, {notes}){more}."
                     + (f" ({no_data[0].upper()}{no_data[1:]}.)" if empty else ""))
    return c


def _counts(k: kpis.Kpi, counters: dict) -> tuple[int, int]:
    num, den = int(k.numerator(counters)), int(k.denominator(counters))
    if not 0 <= num <= den:
        raise NotComparable(f"{k.label} is not a share of {_noun(k)} in this data "
                            f"({num:,} out of {den:,}), so it cannot be tested as one.")
    return num, den


def variants(store: Store, campaign: str | Campaign, metric: str | None = None,
             period: Period | None = None, *, now: int | None = None) -> Comparison:
    """`/kpi ab <campaign> [metric]`: the campaign's variants on one rate."""
    camp = campaign if isinstance(campaign, Campaign) else find_campaign(store, campaign)
    rep = report(store, camp, period, "variant", now=now, with_benchmarks=False)
    # a campaign with SMS and calls: the channel the named rate belongs to, and of those
    # the first with two variants or more
    candidates = [ch for ch in rep.channels
                  if metric is None or metric in {k.name for k in proportions(ch)}] \
        or rep.channels[:1]
    split = {ch: _arms(rep, ch) for ch in candidates}
    channel = next((ch for ch in candidates if len(split[ch][0]) >= 2), candidates[0])
    k = rate_for(channel, camp.goal, metric)
    rows, left = split[channel]
    arms = [Arm(label, *_counts(k, counters)) for label, counters in rows]
    if len(arms) < 2:
        have = f"only variant {arms[0].label}" if arms else "no variants"
        raise NotComparable(
            f"'{camp.name}' has {have}{' in this period' if period else ''}: an A/B test "
            "needs rows with at least two values in the variant column (A, B, ...).")
    return judge(Comparison("variants", camp.name, k, None if rep.whole else rep.period,
                            arms, left_out=left))


def _arms(rep, channel: str) -> tuple[list[tuple[str, dict]], list[str]]:
    """A variant breakdown's arms in one channel (label, counters), and what is left out."""
    arms, left = [], []
    for label, sections in rep.breakdown:
        sec = sections.get(channel)
        if sec is None:
            continue
        if label in (NO_VARIANT, DAILY_KEY, CODE_KEY):
            left.append(label)
        else:
            arms.append((label, sec.counters))
    return arms, left


def campaigns(store: Store, a: str | Campaign, b: str | Campaign, metric: str | None = None,
              period: Period | None = None, *, now: int | None = None) -> Comparison:
    """`/kpi compare a b [metric]`: two campaigns on one rate."""
    ca = a if isinstance(a, Campaign) else find_campaign(store, a)
    cb = b if isinstance(b, Campaign) else find_campaign(store, b)
    if ca.id == cb.id:
        raise NotComparable(f"both names are '{ca.name}': name two different campaigns.")
    ra = report(store, ca, period, now=now, with_benchmarks=False)
    rb = report(store, cb, period, now=now, with_benchmarks=False)
    shared = [ch for ch in ra.channels if ch in rb.channels]
    if not shared:
        raise NotComparable(f"'{ca.name}' ({', '.join(ra.channels)}) and '{cb.name}' "
                            f"({', '.join(rb.channels)}) share no channel to compare on.")
    channel = _channel(shared, ca, metric)
    k = rate_for(channel, ca.goal if ca.goal == cb.goal else None, metric)
    arms = [Arm(ca.name, *_counts(k, ra.current[channel].counters)),
            Arm(cb.name, *_counts(k, rb.current[channel].counters))]
    return judge(Comparison("campaigns", f"{ca.name} vs {cb.name}", k, period, arms))


def _channel(channels: list[str], camp: Campaign, metric: str | None) -> str:
    """The channel the comparison is about: the one the named rate belongs to."""
    if metric is not None:
        own = [ch for ch in channels if metric in {k.name for k in proportions(ch)}]
        if own:
            return own[0]
    return channels[0]
