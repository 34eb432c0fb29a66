"""``/kpi attribution``: the windows conversions are credited under, the team's and each
campaign's, shown and set."""
from __future__ import annotations

from metrics import attribution as A
from metrics import engine
from metrics.sources import SourcesFile

from .args import duration, require_admin
from .base import USAGE, Context, Reply, UsageError
from .tokens import Token

_KEYWORDS = ("click", "delivery", "reset")


def _window(word: str) -> int:
    return 0 if word.lower() in ("off", "0") else duration(word)


def cmd_attribution(ctx: Context, args: list[Token]) -> Reply:
    words = [t.text for t in args]
    at = next((i for i, t in enumerate(args) if not t.quoted
               and t.text.lower() in _KEYWORDS), len(args))
    name, rest = " ".join(words[:at]), args[at:]
    camp = engine.find_campaign(ctx.store, name) if name else None
    conn = ctx.store.conn
    if not rest:
        return _show(ctx, camp)
    require_admin(ctx, "attribution")
    click = delivery = None
    reset = False
    while rest:
        key = rest.pop(0).text.lower()
        if key == "reset" and not rest:
            reset = True
            break
        if key not in ("click", "delivery") or not rest:
            raise UsageError(f"expected click <duration>, delivery <duration> or reset, not "
                             f"'{key[:30]}'", USAGE["attribution"])
        value = _window(rest.pop(0).text)
        if value > A.MAX_WINDOW_S:
            raise UsageError(f"a window is at most {A.MAX_WINDOW_S // 86_400} days",
                             USAGE["attribution"])
        if key == "click":
            click = value
        else:
            delivery = value
    done = A.configure(ctx.store, camp.id if camp else None, click, delivery, reset,
                       dict(SourcesFile().get().codes))
    w = A.windows_for(conn, camp.id if camp else None)
    who = f"{camp.name}'s" if camp else "The team's"
    what = "are the team's again" if reset and camp else f"are now: {w.text()}"
    changed = (f" {done.changed:,} conversion{'s' * (done.changed != 1)} moved."
               if done.changed else " No conversion moved.") if done.looked_at else ""
    return Reply(f"{who} attribution windows {what}.{changed}",
                 {"campaign": camp.name if camp else None, **w.as_json(),
                  "conversions_moved": done.changed})


def _show(ctx: Context, camp) -> Reply:
    conn = ctx.store.conn
    if camp is not None:
        w = A.windows_for(conn, camp.id)
        whose = {"campaign": "its own setting", "team": "the team's setting",
                 "default": "the default"}[w.set_by]
        return Reply(f"{camp.name}: conversions are credited by {w.text()} ({whose}).",
                     {"campaign": camp.name, **w.as_json()})
    team = A.team_windows(conn)
    own = A.campaign_windows(conn)
    whose = "the team's setting" if team.set_by == "team" else "the default"
    lines = [f"Conversions are credited by {team.text()} ({whose})."]
    for name, w in own:
        lines.append(f"  {name}: {w.text()}")
    lines.append(f"Change: {USAGE['attribution']}")
    return Reply("\n".join(lines), {**team.as_json(), "campaigns": {
        name: w.as_json() for name, w in own}})
