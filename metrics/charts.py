"""Charts as PNG bytes (matplotlib, Agg): trend, breakdown with 95% intervals, a
weekday-by-hour heatmap, call dispositions. Sized for Slack's preview (about 360 px tall
in the channel), in fonts that cover Latin, Cyrillic, Georgian and CJK names: DejaVu Sans
(shipped with matplotlib) with Noto Sans CJK as the fallback for the glyphs it lacks.
"""
from __future__ import annotations

import io
import warnings
from functools import lru_cache

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from scipy.stats import binomtest  # noqa: E402

from . import kpis  # noqa: E402
from .engine import WEEKDAYS, Report  # noqa: E402

SIZE = (8, 4.2)    # inches; at 100 dpi, 800x420 px
DPI = 100
BAR = "#9fb7d9"
LINE = "#c0392b"
PREV = "#7f8c8d"
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


def _figure():
    plt.rcParams["font.family"] = font_family()
    plt.rcParams["font.size"] = 11
    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _png(fig) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)   # a missing glyph is a bug, not a box
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _pct(ax) -> None:
    from matplotlib.ticker import PercentFormatter
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))


def _rate_kpi(channel: str, goal: str | None) -> kpis.Kpi:
    """The rate a chart plots: the goal's first headline rate, else the channel's main."""
    for k in kpis.ordered(channel, goal):
        if k.unit == "percent" and k.name != "roi":
            return k
    return kpis.REGISTRY[channel]["delivery_rate" if channel == "sms" else "answer_rate"]


def trend(rep: Report) -> bytes:
    """Volume bars per day (hour, week) with the headline rate as a line."""
    ch = rep.channels[0]
    rate = _rate_kpi(ch, rep.campaign.goal)
    vol_name = "sent" if ch == "sms" else "dialed"
    labels = [label for label, _ in rep.trend]
    vols = [cs.get(ch, {}).get(vol_name, 0) for _, cs in rep.trend]
    values = [rate.compute(cs.get(ch, {})).value for _, cs in rep.trend]
    fig, ax = _figure()
    x = range(len(labels))
    ax.bar(x, vols, color=BAR, label=vol_name)
    ax.set_ylabel(f"{vol_name} per {rep.trend_unit}")
    ax2 = ax.twinx()
    ax2.spines["top"].set_visible(False)
    ax2.plot(x, [v if v is not None else float("nan") for v in values], color=LINE,
             marker="o", markersize=3, linewidth=2, label=rate.label)
    ax2.set_ylabel(rate.label, color=LINE)
    ax2.set_ylim(bottom=0)
    _pct(ax2)
    step = max(1, len(labels) // 10)
    ax.set_xticks(list(x)[::step])
    ax.set_xticklabels([_short(lb, rep.trend_unit) for lb in labels][::step], rotation=0)
    ax.set_title(f"{rep.campaign.name} · {rep.period.label}", loc="left", fontsize=13)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", frameon=False, fontsize=9, ncols=2,
              bbox_to_anchor=(0, -0.08))
    return _png(fig)


def _short(label: str, unit: str) -> str:
    if unit in ("day", "week") and len(label) == 10:
        return label[5:]          # 2026-11-03 -> 11-03
    return label


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval (scipy's implementation)."""
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def breakdown(rep: Report, limit: int = 12) -> bytes:
    """The headline rate per dimension value, with 95% intervals, biggest groups first."""
    ch = rep.channels[0]
    rate = _rate_kpi(ch, rep.campaign.goal)
    rows = [(key, secs[ch].metrics[rate.name]) for key, secs in rep.breakdown if ch in secs]
    rows = [(k, v) for k, v in rows if v.value is not None][:limit]
    fig, ax = _figure()
    if not rows:
        ax.text(0.5, 0.5, "no data in this period", ha="center", va="center")
        ax.set_axis_off()
        return _png(fig)
    keys = [k for k, _ in rows][::-1]
    vals = [v.value for _, v in rows][::-1]
    lows, highs = zip(*[wilson(v.numerator, v.denominator) for _, v in rows][::-1])
    err = [[v - lo for v, lo in zip(vals, lows)], [hi - v for v, hi in zip(vals, highs)]]
    ax.barh(keys, vals, color=BAR, xerr=err, ecolor="#34495e", capsize=3)
    for y, (v, (_, val)) in enumerate(zip(vals, rows[::-1])):
        ax.text(v, y, f"  {v * 100:.1f}%  (n={val.denominator:,})", va="center", fontsize=9)
    from matplotlib.ticker import PercentFormatter
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlim(0, min(1.0, max(highs) * 1.35) or 1.0)
    ax.set_title(f"{rep.campaign.name} · {rate.label} by {rep.dim} (95% intervals)", loc="left",
                 fontsize=13)
    return _png(fig)


def heatmap(rep: Report) -> bytes:
    """Volume by weekday and hour (team time zone), the headline rate in each cell's color."""
    import numpy as np
    ch = rep.channels[0]
    rate = _rate_kpi(ch, rep.campaign.goal)
    grid = np.full((7, 24), np.nan)
    for key, secs in rep.breakdown:
        if ch not in secs or " " not in key:
            continue
        day, hour = key.split(" ")
        grid[WEEKDAYS.index(day), int(hour)] = secs[ch].metrics[rate.name].value or np.nan
    fig, ax = _figure()
    ax.spines[:].set_visible(False)
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(7), WEEKDAYS)
    ax.set_xticks(range(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)])
    cb = fig.colorbar(im, ax=ax)
    cb.ax.yaxis.set_major_formatter(__import__("matplotlib.ticker").ticker.PercentFormatter(1.0))
    ax.set_title(f"{rep.campaign.name} · {rate.label} by weekday and hour ({rep.tz})", loc="left",
                 fontsize=13)
    return _png(fig)


def dispositions(rep: Report) -> bytes:
    sec = rep.current["call"]
    rows = sec.dispositions[:10][::-1]
    fig, ax = _figure()
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color=BAR)
    for y, (_, n, share) in enumerate(rows):
        ax.text(n, y, f"  {n:,} ({share * 100:.0f}%)", va="center", fontsize=9)
    ax.set_title(f"{rep.campaign.name} · call dispositions · {rep.period.label}", loc="left",
                 fontsize=13)
    return _png(fig)


def for_report(rep: Report) -> list[tuple[str, bytes]]:
    """The charts that go with a card: the main one first."""
    out = []
    if rep.dim == "weekday_hour":
        out.append(("heatmap", heatmap(rep)))
    elif rep.dim:
        out.append((f"by-{rep.dim}", breakdown(rep)))
    if rep.trend:
        out.append(("trend", trend(rep)))
    if "call" in rep.current and rep.current["call"].dispositions:
        out.append(("dispositions", dispositions(rep)))
    return out
