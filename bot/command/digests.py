"""``/kpi digest``: list, preview, add and remove the scheduled KPI digests."""
from __future__ import annotations

import datetime as dt

from metrics.errors import KpiBotError
from metrics.times import zone

from .. import mrkdwn
from .args import channel_arg, links, require_admin, whole
from .base import USAGE, Context, Reply, UsageError
from .tokens import Token


def cmd_digest(ctx: Context, args: list[Token]) -> Reply:
    from metrics import digests
    sub = args[0].text.lower() if args else "list"
    toks = args[1:]
    rest = [t.text for t in toks]
    tz_name = ctx.store.timezone()
    if sub == "list":
        subs = digests.subscriptions(ctx.store)
        data = [{"id": d.id, "frequency": d.frequency, "weekday": d.weekday, "at": d.at,
                 "tz": d.tz, "channel": d.channel, "schedule": d.describe()} for d in subs]
        body = "\n".join(f"#{d.id} {d.describe()}"
                         + (f" → {mrkdwn.channel(d.channel)}" if d.channel else "")
                         for d in subs) or ("No digests yet. Add one, e.g. `/kpi digest add "
                                            "weekly monday 09:00 Europe/Berlin`.")
        return Reply(body, {"digests": data}, links=links(d.channel for d in subs))
    if sub == "preview":
        from ..text import digest_text
        daily = bool(rest) and rest[0].lower() == "daily"
        tz = zone(tz_name)
        local_now = dt.datetime.fromtimestamp(ctx.now_ts(), tz)
        start, end, ps, pe = digests.period_for("daily" if daily else "weekly", local_now)
        d = digests.build(ctx.store, start, end, ps, pe, tz_name)
        body = digest_text(d)
        return Reply(body, d.as_json())
    require_admin(ctx, f"digest {sub}")
    if sub == "add":
        words = [w.lower() for w in rest]
        if not words or words[0] not in ("daily", "weekly"):
            raise UsageError("daily or weekly?", USAGE["digest"])
        frequency, i, weekday = words[0], 1, None
        if frequency == "weekly":
            day = words[1] if len(words) > 1 else ""
            match = [n for n, name in enumerate(digests.WEEKDAYS) if day and name.startswith(day[:3])]
            if len(day) < 3 or not match:
                raise UsageError(f"'{day}' is not a day of the week", USAGE["digest"])
            weekday, i = match[0], 2
        if i >= len(rest):
            raise UsageError("at what time? e.g. 09:00", USAGE["digest"])
        at, i = rest[i], i + 1
        tz_arg, channel = tz_name, ctx.channel
        while i < len(rest):
            if rest[i].lower() == "in" and i + 1 < len(rest):
                channel, i = channel_arg(toks[i + 1]), i + 2
            elif "/" in rest[i] or rest[i].upper() == "UTC":
                tz_arg, i = rest[i], i + 1
            else:
                raise UsageError(f"'{rest[i]}' is not a time zone (like Europe/Berlin) or "
                                 "`in #channel`", USAGE["digest"])
        try:
            d = digests.add(ctx.store, frequency, at, tz_arg, weekday=weekday, channel=channel,
                            created_by=ctx.user)
        except (digests.DigestError, KpiBotError) as exc:
            raise UsageError(str(exc), USAGE["digest"]) from None
        where = f" in {mrkdwn.channel(d.channel)}" if d.channel else \
            " (no channel yet: add `in #channel`)"
        return Reply(f"Digest #{d.id} added: {d.describe()}{where}.",
                     {"id": d.id, "schedule": d.describe()}, links=links([d.channel]))
    if sub == "remove":
        did = whole(rest[0].lstrip("#") if rest else "",
                    "which digest? (its number from `/kpi digest list`)", USAGE["digest"])
        try:
            d = digests.remove(ctx.store, did)
        except digests.DigestError as exc:
            raise UsageError(str(exc)) from None
        return Reply(f"Digest #{d.id} removed ({d.describe()}).", {"removed": d.id})
    raise UsageError(f"'{sub}' is not a digest command", USAGE["digest"])
