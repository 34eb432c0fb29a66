"""The KPI registry: every KPI of the contract, for SMS and for calls, defined once.

Each KPI is a numerator over a denominator of *counters* (see ``rollup`` for what each
counter counts; money counters are in micro-units). A count has no denominator. A rate is
n/a (None), never 0 or an error, when its denominator is 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

Counters = dict   # counter name -> number


@dataclass(frozen=True)
class Kpi:
    name: str
    label: str
    channel: str                       # 'sms' or 'call'
    unit: str                          # 'count', 'percent', 'money', 'seconds'
    numerator: Callable[[Counters], float]
    denominator: Callable[[Counters], float] | None
    good: str | None                   # 'up', 'down' or None (neither)
    definition: str
    proportion: bool = False           # a share of its denominator: between 0% and 100%
    money_ratio: bool = False          # money over money (ROI): both parts are amounts
    distinct: bool = False             # counts distinct recipients: read apart, at a cost

    @property
    def numerator_unit(self) -> str:
        """What the numerator counts: 'money' (an amount) or 'count'."""
        return "money" if self.unit == "money" or self.money_ratio else "count"

    @property
    def denominator_unit(self) -> str:
        return "money" if self.money_ratio else "count"

    def volume(self, c: Counters) -> int:
        """How much this value rests on: its denominator when that is a count, else the
        channel's volume (sent or dialed). Alerts require a minimum of it."""
        if self.denominator is not None and self.denominator_unit == "count":
            return int(self.denominator(c) or 0)
        return volume(self.channel, c)

    def compute(self, c: Counters) -> "Value":
        if self.distinct and "reach" not in c:   # not counted for this group
            return Value(self.name, None, None, None, self.unit)
        num = self.numerator(c)
        numerator = _units(num, self.numerator_unit)
        if self.denominator is None:
            return Value(self.name, numerator, numerator, None, self.unit)
        den = self.denominator(c)
        value = None if not den else num / den
        if value is not None and self.unit == "money":   # micro-units per X -> units per X
            value /= 1_000_000
        return Value(self.name, value, numerator, _units(den, self.denominator_unit), self.unit)


VOLUME = {"sms": "sent", "call": "dialed"}    # what a channel's volume counts


def volume(channel: str, c: Counters) -> int:
    """A channel's volume in ``c``: SMS sent, calls dialed."""
    return c.get(VOLUME[channel], 0)


def _units(x: float, unit: str) -> float:
    if unit == "money":
        return round(x / 1_000_000, 6)
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


@dataclass(frozen=True)
class Value:
    name: str
    value: float | None     # None: n/a (denominator 0, or not counted: reach per group)
    numerator: float | None
    denominator: float | None
    unit: str

    def as_json(self) -> dict:
        return {"value": self.value, "numerator": self.numerator,
                "denominator": self.denominator, "unit": self.unit}


def _c(name: str) -> Callable[[Counters], float]:
    return lambda c: c.get(name, 0)


def _rate(name, label, channel, num, den, good, definition):
    return Kpi(name, label, channel, "percent", _c(num), _c(den), good, definition, True)


_cost = _c("cost_micros")


def _conversions(c: Counters) -> float:
    """Conversions: those imported on the events themselves (their ``converted``
    column) and those credited to them from orders (``metrics.attribution``)."""
    return c.get("converted", 0) + c.get("conversions", 0)


def _revenue(c: Counters) -> float:
    """Revenue on the events themselves and from the conversions credited to them."""
    return c.get("revenue_micros", 0) + c.get("conversion_revenue_micros", 0)


def _subscribers(c: Counters) -> float:
    """New subscribers: those a platform's daily totals report, and the numbers that opted
    in by text (START, YES, UNSTOP)."""
    return c.get("new_subscribers", 0) + c.get("opted_in", 0)


def _revenue_minus_cost(c: Counters) -> float:
    return _revenue(c) - c.get("cost_micros", 0)


SMS = [
    Kpi("sent", "Sent", "sms", "count", _c("sent"), None, "up",
        "outbound messages in status sent, delivered, undelivered, failed or unknown"),
    _rate("delivery_rate", "Delivery rate", "sms", "delivered", "sent", "up", "delivered / sent"),
    _rate("ctr", "Click-through rate", "sms", "clicked", "delivered", "up",
          "messages with at least one click / delivered"),
    Kpi("conversion_rate", "Conversion rate", "sms", "percent", _conversions, _c("delivered"),
        "up", "conversions / delivered", True),
    _rate("opt_out_rate", "Opt-out rate", "sms", "opted_out", "delivered", "down",
          "opt-outs / delivered"),
    _rate("response_rate", "Response rate", "sms", "replied", "delivered", "up",
          "replies that are not keywords / delivered"),
    _rate("spam_complaint_rate", "Spam complaint rate", "sms", "complaints", "delivered", "down",
          "complaints / delivered"),
    Kpi("cost_per_click", "Cost per click", "sms", "money", _cost, _c("clicked"), "down",
        "cost / clicks"),
    Kpi("cost_per_conversion", "Cost per conversion", "sms", "money", _cost, _conversions,
        "down", "cost / conversions"),
    Kpi("roi", "ROI", "sms", "percent", _revenue_minus_cost, _cost, "up",
        "(revenue - cost) / cost", money_ratio=True),
    Kpi("cost", "Cost", "sms", "money", _cost, None, None, "sum of message costs"),
    Kpi("revenue", "Revenue", "sms", "money", _revenue, None, "up",
        "sum of revenue from the campaign's messages and the conversions credited to it"),
    Kpi("reach", "Reach", "sms", "count", _c("reach"), None, "up",
        "distinct recipients with a delivered message", distinct=True),
    Kpi("list_growth_rate", "List growth rate", "sms", "percent",
        lambda c: _subscribers(c) - c.get("opted_out", 0), _c("list_size_start"),
        "up", "(new subscribers and opt-ins - opt-outs) / list size at period start"),
    Kpi("cost_per_subscriber", "Cost per subscriber", "sms", "money", _cost,
        _subscribers, "down", "cost / new subscribers"),
]

CALLS = [
    Kpi("dialed", "Dialed", "call", "count", _c("dialed"), None, "up",
        "calls in any status but queued and canceled"),
    Kpi("answered", "Answered", "call", "count", _c("answered"), None, "up",
        "completed calls answered by a person (answered_by human or empty), not abandoned"),
    _rate("answer_rate", "Answer rate", "call", "answered", "dialed", "up", "answered / dialed"),
    Kpi("avg_call_duration", "Average call duration", "call", "seconds", _c("talk_seconds"),
        _c("answered"), None, "talk seconds of answered calls / answered calls"),
    Kpi("abandonment_rate", "Abandonment rate", "call", "percent", _c("abandoned"),
        lambda c: c.get("answered", 0) + c.get("abandoned", 0), "down",
        "abandoned / (answered + abandoned)", True),
    Kpi("conversion_rate", "Conversion rate", "call", "percent", _conversions, _c("answered"),
        "up", "conversions / answered", True),
    Kpi("leads", "Leads", "call", "count", _c("leads"), None, "up",
        "calls with a lead disposition or a conversion of type lead"),
    _rate("lead_to_sale_rate", "Lead-to-sale rate", "call", "leads_sold", "leads", "up",
          "leads with a sale credited to the same call / leads"),
    Kpi("cost_per_call", "Cost per call", "call", "money", _cost, _c("dialed"), "down",
        "cost / dialed"),
    Kpi("cost_per_conversion", "Cost per conversion", "call", "money", _cost, _conversions,
        "down", "cost / conversions"),
    Kpi("roi", "ROI", "call", "percent", _revenue_minus_cost, _cost, "up",
        "(revenue - cost) / cost", money_ratio=True),
    Kpi("cost", "Cost", "call", "money", _cost, None, None, "sum of call costs"),
    Kpi("revenue", "Revenue", "call", "money", _revenue, None, "up",
        "sum of revenue from the campaign's calls and the conversions credited to it"),
]

REGISTRY: dict[str, dict[str, Kpi]] = {"sms": {k.name: k for k in SMS},
                                       "call": {k.name: k for k in CALLS}}

# What each goal leads with (the contract's "Campaign goal orders the card").
GOAL_ORDER = {
    "lead-gen": ["conversion_rate", "cost_per_conversion", "leads", "lead_to_sale_rate"],
    "sales": ["revenue", "roi"],
    "appointments": ["conversion_rate"],
    "support": ["response_rate", "avg_call_duration"],
    "awareness": ["reach", "delivery_rate"],
    "info": ["delivery_rate", "opt_out_rate"],
    None: ["delivery_rate", "ctr", "answer_rate", "conversion_rate"],
}


def find(name: str) -> list[Kpi]:
    """The KPIs called ``name`` (one per channel that has it)."""
    return [REGISTRY[ch][name] for ch in REGISTRY if name in REGISTRY[ch]]


def all_names() -> list[str]:
    return list(dict.fromkeys([k.name for k in SMS] + [k.name for k in CALLS]))


def ordered(channel: str, goal: str | None) -> list[Kpi]:
    """The channel's KPIs, the goal's headline ones first."""
    kpis = REGISTRY[channel]
    lead = [kpis[n] for n in GOAL_ORDER.get(goal, GOAL_ORDER[None]) if n in kpis]
    return lead + [k for k in kpis.values() if k not in lead]


def headline(channel: str, goal: str | None) -> list[Kpi]:
    """The one or two KPIs a campaign with this goal is judged by."""
    kpis = REGISTRY[channel]
    lead = [kpis[n] for n in GOAL_ORDER.get(goal, GOAL_ORDER[None]) if n in kpis]
    return lead[:2] or [next(iter(kpis.values()))]


def compute(channel: str, counters: Counters) -> dict[str, Value]:
    return {k.name: k.compute(counters) for k in REGISTRY[channel].values()}
