"""What every part of the `/kpi` command shares, and imports nothing else of it: the
context a command runs in, its reply, the usage error, and the contract (usage lines,
examples, which subcommands change state)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from metrics import engine
from metrics.errors import KpiBotError
from metrics.store import GOALS, Store

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
    "attribution": "/kpi attribution [<campaign>] [click <dur>] [delivery <dur or off>] "
                   "| attribution [<campaign>] reset",
    "mapping": "/kpi mapping list",
}
STATE_CHANGING = ("goal", "northstar", "alert", "digest", "attribution")
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
