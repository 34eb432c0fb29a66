"""Benchmarks beside KPIs, from a shipped table (``benchmarks.toml`` here) that a team can
override with its own (``benchmarks.toml`` beside the database, or ``$KPIBOT_BENCHMARKS``).
Every figure carries its source and year."""
from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import kpis
from .errors import KpiBotError

SHIPPED = Path(__file__).with_name("benchmarks.toml")
ENV = "KPIBOT_BENCHMARKS"
FILE = "benchmarks.toml"
_FIELDS = {"metric", "channel", "low", "high", "critical", "source", "url", "year", "note", "off"}


@dataclass(frozen=True)
class Benchmark:
    metric: str
    channel: str
    low: float | None
    high: float | None
    critical: float | None
    source: str
    year: int
    url: str | None = None
    note: str | None = None

    def band(self, unit: str) -> str:
        f = (lambda x: f"{x * 100:g}%") if unit == "percent" else (lambda x: f"{x:g}")  # noqa: E731
        if self.low is not None and self.high is not None:
            return f"{f(self.low)}–{f(self.high)}"
        return f"≥ {f(self.low)}" if self.low is not None else f"≤ {f(self.high)}"

    def status(self, value: float | None, good: str | None) -> str | None:
        """Where ``value`` stands: "good" (in the band), "better" or "worse" (past it on
        the good or the bad side), "critical" (past the critical figure: below it for a
        KPI where higher is better, at or above it where lower is better, as the sources
        word them), or for a KPI with no better side "below" or "above". None: no value."""
        if value is None:
            return None
        c = self.critical
        if c is not None and good is not None and (value < c if good == "up" else value >= c):
            return "critical"
        if self.low is not None and value < self.low:
            return {"up": "worse", "down": "better"}.get(good, "below")
        if self.high is not None and value > self.high:
            return {"up": "better", "down": "worse"}.get(good, "above")
        return "good"

    def as_json(self, value: float | None = None, good: str | None = None) -> dict:
        return {"low": self.low, "high": self.high, "critical": self.critical,
                "source": self.source, "year": self.year, "url": self.url,
                "status": self.status(value, good)}


def _read(path: Path) -> list:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise KpiBotError(f"{path}: cannot read the benchmarks ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise KpiBotError(f"{path}: not valid TOML ({exc})") from None
    other = set(data) - {"benchmark"}
    if other:
        raise KpiBotError(f"{path}: unknown table(s) {', '.join(sorted(other))}: benchmarks "
                          "are [[benchmark]] tables")
    rows = data.get("benchmark", [])
    if not isinstance(rows, list):
        raise KpiBotError(f"{path}: benchmarks are [[benchmark]] tables")
    return rows


def _check(row: dict, path: Path, i: int) -> Benchmark | None:
    where = f"{path}, benchmark {i + 1}"
    unknown = set(row) - _FIELDS
    if unknown:
        raise KpiBotError(f"{where}: unknown field(s) {', '.join(sorted(unknown))} "
                          f"(fields: {', '.join(sorted(_FIELDS))})")
    channel, metric = row.get("channel"), row.get("metric")
    if not isinstance(channel, str) or not isinstance(metric, str) \
            or metric not in kpis.REGISTRY.get(channel, {}):
        raise KpiBotError(f"{where}: no {channel!r} metric called {metric!r} (channel is "
                          "sms or call; `/kpi help` lists the metrics)")
    if row.get("off"):
        return None
    kpi = kpis.REGISTRY[channel][metric]
    nums = {k: row.get(k) for k in ("low", "high", "critical")}
    for k, v in nums.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise KpiBotError(f"{where}: {k} must be a number (a fraction for rates: 0.95)")
        if kpi.proportion and not 0 <= v <= 1:
            raise KpiBotError(f"{where}: {k} = {v} is not a fraction: {metric} is a rate, "
                              "so write 95% as 0.95")
    if nums["low"] is None and nums["high"] is None:
        raise KpiBotError(f"{where}: give low, high or both")
    if nums["low"] is not None and nums["high"] is not None and nums["low"] > nums["high"]:
        raise KpiBotError(f"{where}: low is above high")
    year = row.get("year")
    if not row.get("source") or isinstance(year, bool) or not isinstance(year, int):
        raise KpiBotError(f"{where}: every figure needs its source and year")
    return Benchmark(metric, channel, nums["low"], nums["high"], nums["critical"],
                     str(row["source"]), year, row.get("url"), row.get("note"))


def load(db_path: str | os.PathLike | None = None) -> dict[tuple[str, str], Benchmark]:
    """(channel, metric) -> benchmark: the shipped table, then the team's file over it."""
    table: dict[tuple[str, str], Benchmark | None] = {}
    paths = [SHIPPED]
    own = os.environ.get(ENV) or (str(Path(db_path).resolve().parent / FILE)
                                  if db_path and str(db_path) != ":memory:" else None)
    if own and Path(own).is_file():
        paths.append(Path(own))
    elif os.environ.get(ENV):
        raise KpiBotError(f"{ENV} names {own}, which is not a file")
    for path in paths:
        for i, row in enumerate(_read(path)):
            if not isinstance(row, dict):
                raise KpiBotError(f"{path}, benchmark {i + 1}: not a table")
            checked = _check(row, path, i)
            table[(row["channel"], row["metric"])] = checked
    return {k: v for k, v in table.items() if v is not None}
