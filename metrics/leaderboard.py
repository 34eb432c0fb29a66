"""`/kpi top <metric> [since]`: campaigns ranked on one KPI.

SMS and call campaigns are ranked apart where a KPI exists for both (a conversion rate
over deliveries and one over answered calls are not the same thing). A rate ranks a
campaign only when its denominator reaches ``MIN_RANK`` (a campaign with 2 conversions out
of 10 deliveries does not top the board at 20%), a cost or duration per something when
its count reaches ``MIN_PER``; the others are listed as not ranked, with their counts,
rather than dropped. ROI (money over money) has no floor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import kpis
from .engine import Campaign, report
from .errors import KpiBotError, NoData
from .periods import Period
from .store import Store

MIN_RANK = 100     # trials behind a rate
MIN_PER = 10       # conversions, clicks, answered calls behind a cost or duration per one


@dataclass
class Entry:
    campaign: str
    value: kpis.Value
    volume: int

    def as_json(self, rank: int | None) -> dict:
        return {"rank": rank, "campaign": self.campaign, **self.value.as_json(),
                "volume": self.volume}


@dataclass
class Board:
    metric: str
    period: Period | None
    kpi: dict[str, kpis.Kpi]                       # channel -> the KPI's definition there
    ranked: dict[str, list[Entry]] = field(default_factory=dict)
    not_ranked: dict[str, list[Entry]] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"metric": self.metric,
                "period": None if self.period is None else {
                    "start": self.period.start, "end": self.period.end,
                    "label": self.period.label},
                "channels": {ch: {"definition": self.kpi[ch].definition,
                                  "better": {"up": "higher", "down": "lower"}.get(
                                      self.kpi[ch].good),
                                  "ranked": [e.as_json(i + 1) for i, e in enumerate(entries)],
                                  "not_ranked": [e.as_json(None)
                                                 for e in self.not_ranked.get(ch, [])]}
                             for ch, entries in self.ranked.items()}}


def floor(k: kpis.Kpi) -> int:
    """The denominator a campaign needs to be ranked on ``k``."""
    if k.denominator is None or k.denominator_unit == "money":
        return 0
    return MIN_RANK if k.unit == "percent" else MIN_PER


def top(store: Store, metric: str, period: Period | None = None, *,
        now: int | None = None) -> Board:
    """Every campaign with data for ``metric`` (in ``period``, else over its whole life),
    best first, per channel."""
    kpi = {ch: reg[metric] for ch, reg in kpis.REGISTRY.items() if metric in reg}
    if not kpi:
        raise KpiBotError(f"no metric called '{metric}'")
    board = Board(metric, period, kpi)
    camps = [Campaign(*r) for r in store.conn.execute(
        "SELECT id, name, channel, goal FROM campaigns ORDER BY name_key")]
    for camp in camps:
        try:
            rep = report(store, camp, period, now=now, with_benchmarks=False)
        except NoData:           # nothing imported for it yet
            continue
        for ch, sec in rep.current.items():
            if ch not in kpi or not sec.volume:
                continue
            v = sec.metrics[metric]
            small = (v.denominator or 0) < floor(kpi[ch])
            side = board.not_ranked if (v.value is None or small) else board.ranked
            side.setdefault(ch, []).append(Entry(camp.name, v, sec.volume))
    for ch, entries in board.ranked.items():
        down = kpi[ch].good == "down"
        entries.sort(key=lambda e: (e.value.value if down else -e.value.value, -e.volume))
    for ch in board.not_ranked:
        board.ranked.setdefault(ch, [])
    board.ranked = {ch: board.ranked[ch] for ch in kpis.REGISTRY if ch in board.ranked}
    if not board.ranked:
        raise KpiBotError(f"no campaign has data for {metric}"
                          + (f" ({period.label})" if period else "") + ".")
    return board
