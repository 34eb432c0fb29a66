"""Charts as PNG bytes (matplotlib, Agg): trend, breakdown with 95% intervals, a
weekday-by-hour heatmap, call dispositions, an A/B comparison. Sized for Slack's preview
(about 360 px tall in the channel), in fonts that cover Latin, Cyrillic, Georgian and CJK names: DejaVu Sans
(shipped with matplotlib) with Noto Sans CJK as the fallback for the glyphs it lacks.
"""
from __future__ import annotations

import io
import re
import warnings
from functools import lru_cache

import matplotlib
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter, StrMethodFormatter

from . import kpis
from .ab import wilson
from .engine import WEEKDAYS, Report

SIZE = (8, 4.2)    # inches; at 100 dpi, 800x420 px
DPI = 100
BAR = "#9fb7d9"
LINE = "#c0392b"
PREV = "#7f8c8d"
WIN = "#2e7d32"     # an A/B winner
LEAD = "#5b7fb5"    # an A/B leader, not significant yet
_CJK_SYSTEM = ["/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
               "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc"]


@lru_cache(maxsize=1)
def font_family() -> list[str]:
    """DejaVu Sans, then a CJK font: the packaged Noto Sans CJK, else a system one."""
    families = ["DejaVu Sans"]
    path = None
    try:
        import cvttf_NotoSansCJK_Regular as noto
        path = noto.get_TTF_path()
    except (ImportError, FileNotFoundError):
        import os
        path = next((p for p in _CJK_SYSTEM if os.path.exists(p)), None)
    if path:
        font_manager.fontManager.addfont(path)
        families.append(font_manager.FontProperties(fname=path).get_name())
    return families


def _figure(title: str, labels: list[str] = (), right: float = 0.97):
    """A figure without pyplot (no global state: safe in a threaded server), its margins
    fixed rather than measured by a second layout pass ("tight" doubles the cost)."""
    matplotlib.rcParams["font.family"] = font_family()
    matplotlib.rcParams["font.size"] = 11
    matplotlib.rcParams["text.parse_math"] = False    # a name with $...$ is text, not TeX
    fig = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # room on the left for the longest category label (CJK characters are twice as wide)
    widest = max((_width(str(lb)) for lb in labels), default=6)
    fig.subplots_adjust(left=min(0.45, 0.035 + 0.0115 * max(widest, 6)), right=right,
                        top=0.87, bottom=0.16)
    fig.text(0.01, 0.95, title, fontsize=13, va="center")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _width(s: str) -> int:
    import unicodedata
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


# The scripts the fonts promise (Latin, Greek, Cyrillic, Georgian, CJK, Hangul, full-width
# forms): a glyph missing from these is a bug. Anything else a name may hold (an emoji, a
# script without a font here) is drawn as a box rather than costing the chart.
_PROMISED = ((0x20, 0x24F), (0x370, 0x4FF), (0x10A0, 0x10FF), (0x2E80, 0x9FFF),
             (0xAC00, 0xD7AF), (0xFF00, 0xFFEF))
_GLYPH = re.compile(r"Glyph (\d+)")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})
    for w in caught:
        m = _GLYPH.search(str(w.message))
        if m is None or any(lo <= int(m.group(1)) <= hi for lo, hi in _PROMISED):
            raise RuntimeError(f"chart drawn wrongly: {w.message}")
    return buf.getvalue()


def _empty(fig, ax, message: str) -> bytes:
    """A chart with nothing to draw says so, rather than showing empty axes."""
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    return _png(fig)


def _pct(axis, top: float | None = None) -> None:
    """Percent ticks, whole percents unless the values are all small."""
    axis.set_major_formatter(PercentFormatter(1.0, decimals=0 if top is None or top >= 0.05
                                              else 1))


def _rate_kpi(channel: str, goal: str | None) -> kpis.Kpi:
    """The rate a chart plots: the goal's first headline rate, else the channel's main."""
    for k in kpis.ordered(channel, goal):
        if k.proportion:
            return k
    return kpis.REGISTRY[channel]["delivery_rate" if channel == "sms" else "answer_rate"]


def _line_kpi(channel: str, goal: str | None) -> kpis.Kpi:
    """What a trend's line shows: the goal's first headline when it is an amount (revenue,
    for a sales campaign), else the rate :func:`_rate_kpi` picks."""
    first = kpis.headline(channel, goal)[0]
    return first if first.unit == "money" and goal else _rate_kpi(channel, goal)


def trend(rep: Report, metric: str | None = None, threshold: float | None = None) -> bytes:
    """Volume bars per day (hour, week) with the headline rate (or amount, or ``metric``) as
    a line, and an alert's threshold as a dashed line."""
    ch = next((c for c in rep.channels if metric in kpis.REGISTRY[c]), rep.channels[0]) \
        if metric else rep.channels[0]
    rate = kpis.REGISTRY[ch][metric] if metric else _line_kpi(ch, rep.campaign.goal)
    labels = [label for label, _ in rep.trend]
    vols = [kpis.volume(ch, cs.get(ch, {})) for _, cs in rep.trend]
    values = [rate.compute(cs.get(ch, {})).value for _, cs in rep.trend]
    fig, ax = _figure(f"{rep.campaign.name} · {rep.period.label}", right=0.9)
    x = range(len(labels))
    ax.bar(x, vols, color=BAR, label=kpis.VOLUME[ch])
    ax.set_ylim(0, max(vols, default=0) * 1.6 or 1)       # bars low, the line above them
    ax.set_ylabel(f"{kpis.VOLUME[ch]} per {rep.trend_unit} (bars)", color="#4a6fa5")
    ax.yaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax2 = ax.twinx()
    ax2.spines["top"].set_visible(False)
    ax2.plot(x, [v if v is not None else float("nan") for v in values], color=LINE,
             marker="o", markersize=3, linewidth=2, label=rate.label)
    currency = rep.current[ch].currency if ch in rep.current else None
    money = f", {currency}" if rate.unit == "money" and currency else ""
    ax2.set_ylabel(f"{rate.label}{money} (line)", color=LINE)
    if threshold is not None:
        ax2.axhline(threshold, color=LINE, linestyle="--", linewidth=1)
    ax2.xaxis.set_visible(False)
    top = max([v for v in values if v is not None] + [threshold or 0], default=0)
    ax2.set_ylim(0, top * 1.1 if top > 0 else 1)
    ax2.yaxis.set_major_locator(MaxNLocator(5))
    if rate.unit == "percent":
        _pct(ax2.yaxis, max((v for v in values if v is not None), default=None))
    else:
        ax2.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    step = max(1, -(-len(labels) // 7))
    ax.set_xticks(list(x)[::step], [_short(lb, rep.trend_unit) for lb in labels][::step])
    return _png(fig)


def _short(label: str, unit: str) -> str:
    if unit in ("day", "week") and len(label) == 10:
        return label[5:]          # 2026-11-03 -> 11-03
    return label


def breakdown(rep: Report, limit: int = 12) -> bytes:
    """The headline rate per dimension value, with 95% intervals, biggest groups first."""
    ch = rep.dim_channel or rep.channels[0]
    rate = _rate_kpi(ch, rep.campaign.goal)
    rows = [(key, secs[ch].metrics[rate.name]) for key, secs in rep.breakdown if ch in secs]
    rows = [(k, v) for k, v in rows if v.value is not None][:limit]
    title = f"{rep.campaign.name} · {rate.label} by {rep.dim} (95% intervals)"
    fig, ax = _figure(title, [k for k, _ in rows], right=0.85)
    if not rows:
        return _empty(fig, ax, "no data in this period")
    keys = [k for k, _ in rows][::-1]
    vals = [v.value for _, v in rows][::-1]
    lows, highs = zip(*[wilson(v.numerator, v.denominator) for _, v in rows][::-1])
    err = [[v - lo for v, lo in zip(vals, lows)], [hi - v for v, hi in zip(vals, highs)]]
    ax.barh(keys, vals, color=BAR, xerr=err, ecolor="#34495e", capsize=3)
    for y, (v, (_, val)) in enumerate(zip(vals, rows[::-1])):
        ax.text(v, y, f"  {v * 100:.1f}%  (n={val.denominator:,})", va="center", fontsize=9)
    _pct(ax.xaxis, max(highs))
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlim(0, min(1.0, max(highs) * 1.35) or 1.0)
    return _png(fig)


def heatmap(rep: Report) -> bytes:
    """The headline rate for each weekday and hour (team time zone) as a colour grid;
    cells with no volume stay blank."""
    import numpy as np
    ch = rep.dim_channel or rep.channels[0]
    rate = _rate_kpi(ch, rep.campaign.goal)
    grid = np.full((7, 24), np.nan)
    for key, secs in rep.breakdown:
        if ch not in secs or " " not in key:
            continue
        day, hour = key.split(" ")
        value = secs[ch].metrics[rate.name].value
        grid[WEEKDAYS.index(day), int(hour)] = np.nan if value is None else value
    fig, ax = _figure(f"{rep.campaign.name} · {rate.label} by weekday and hour ({rep.tz})",
                      WEEKDAYS, right=0.98)
    ax.spines[:].set_visible(False)
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(7), WEEKDAYS)
    ax.set_xticks(range(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)])
    cb = fig.colorbar(im, ax=ax)
    _pct(cb.ax.yaxis, float(np.nanmax(grid)) if np.isfinite(grid).any() else None)
    return _png(fig)


def dispositions(rep: Report) -> bytes:
    sec = rep.current["call"]
    rows = sec.dispositions[:10][::-1]
    fig, ax = _figure(f"{rep.campaign.name} · call dispositions · {rep.period.label}",
                      [r[0] for r in rows], right=0.88)
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color=BAR)
    for y, (_, n, share) in enumerate(rows):
        ax.text(n, y, f"  {n:,} ({share * 100:.0f}%)", va="center", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    return _png(fig)


def for_report(rep: Report, every: bool = False) -> list[tuple[str, bytes]]:
    """The chart that goes with a card (the breakdown when one was asked for, else the
    trend), or with ``every`` all that apply, the main one first. Rendering costs about
    0.1 s a chart, so a reply draws one unless more are asked for."""
    makers = []
    if rep.dim == "weekday_hour":
        makers.append(("heatmap", heatmap))
    elif rep.dim:
        makers.append((f"by-{rep.dim}", breakdown))
    if rep.trend:
        makers.append(("trend", trend))
    if "call" in rep.current and rep.current["call"].dispositions:
        makers.append(("dispositions", dispositions))
    return [(name, make(rep)) for name, make in (makers if every else makers[:1])]


def digest_volume(title: str, rows: list[tuple[str, int, str]], limit: int = 12) -> bytes:
    """A digest's chart: volume per campaign (the biggest ``limit``), SMS and calls in two
    colours. ``rows`` are (campaign, volume, channel)."""
    rows = rows[:limit][::-1]
    fig, ax = _figure(title, [r[0] for r in rows], right=0.88)
    colours = [BAR if ch == "sms" else "#e0a96d" for _, _, ch in rows]
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color=colours)
    for y, (_, n, ch) in enumerate(rows):
        ax.text(n, y, f"  {n:,} {'sent' if ch == 'sms' else 'dialed'}", va="center", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    return _png(fig)


def comparison(c) -> bytes:
    """An A/B comparison (``metrics.ab.Comparison``): each arm's rate with its 95% interval,
    the leader (or winner) in a stronger colour, the verdict's gist in the title."""
    arms = [a for a in c.arms if a.denominator][:12]
    state = (f"{c.winner} wins" if c.winner else f"{c.leader} leads, not significant yet"
             if c.leader else "no difference yet")
    title = f"{c.subject} · {c.metric.label} (95% intervals) · {state}"
    fig, ax = _figure(title, [a.label for a in arms], right=0.8)
    if not arms:
        return _empty(fig, ax, "no data to compare")
    arms = arms[::-1]
    vals = [a.value for a in arms]
    lows, highs = zip(*[a.interval for a in arms])
    err = [[v - lo for v, lo in zip(vals, lows)], [hi - v for v, hi in zip(vals, highs)]]
    colours = [WIN if a.label == c.winner else LEAD if a.label == c.leader else BAR for a in arms]
    ax.barh([a.label for a in arms], vals, color=colours, xerr=err, ecolor="#34495e", capsize=4)
    for y, a in enumerate(arms):
        ax.text(a.interval[1], y, f"  {a.value * 100:.2f}%  ({a.numerator:,} / {a.denominator:,})",
                va="center", fontsize=9)
    _pct(ax.xaxis, max(highs))
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlim(0, min(1.0, max(highs) * 1.45) or 1.0)
    return _png(fig)


def leaderboard(board, limit: int = 12) -> bytes:
    """``metrics.leaderboard.Board``: the first channel's ranked campaigns, best on top."""
    ch = next(iter(board.ranked))
    k = board.kpi[ch]
    entries = board.ranked[ch][:limit]
    when = board.period.label if board.period is not None else "whole life"
    title = (f"Top {'SMS' if ch == 'sms' else 'call'} campaigns · {k.label} · {when}"
             + (" (lower is better)" if k.good == "down" else ""))
    fig, ax = _figure(title, [e.campaign for e in entries], right=0.85)
    if not entries:
        return _empty(fig, ax, "no campaign has enough volume to rank")
    entries = entries[::-1]
    vals = [e.value.value for e in entries]
    colours = [WIN if i == len(entries) - 1 else BAR for i in range(len(entries))]
    ax.barh([e.campaign for e in entries], vals, color=colours)
    for y, e in enumerate(entries):
        label = _fmt(e.value)
        ax.text(e.value.value, y, f"  {label}", va="center", fontsize=9)
    if k.unit == "percent":
        _pct(ax.xaxis, max(vals))
    else:
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}" if k.unit == "count" else "{x:,.2f}"))
    ax.xaxis.set_major_locator(MaxNLocator(5))
    lo = min(0, min(vals))
    ax.set_xlim(lo * 1.3 if lo < 0 else 0, max(vals) * 1.3 if max(vals) > 0 else 1)
    return _png(fig)


def _fmt(v: kpis.Value) -> str:
    if v.unit == "percent":
        return f"{v.value * 100:.2f}%"
    if v.unit == "money":
        return f"{v.value:,.2f}"
    if v.unit == "seconds":
        return f"{v.value:,.0f} s"
    return f"{v.value:,.0f}"
