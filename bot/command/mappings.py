"""``/kpi mapping list``: the named mappings an import can name (``--map NAME``), kept in
``mappings/`` beside the database (``kpibot mapping add NAME FILE`` adds one)."""
from __future__ import annotations

from metrics.importers import named

from .. import mrkdwn
from .base import USAGE, Context, Reply, UsageError
from .tokens import Token


def cmd_mapping(ctx: Context, args: list[Token]) -> Reply:
    sub = args[0].text.lower() if args else "list"
    if sub != "list" or len(args) > 1:
        raise UsageError("mappings are listed here and added on the server "
                         "(`kpibot mapping add NAME FILE.toml`)", USAGE["mapping"])
    found = named.listing(ctx.store.path)
    data = {"mappings": [{"name": m.name, "format": m.format, "problem": m.problem}
                         for m in found]}
    if not found:
        return Reply("No named mappings yet. On the server, `kpibot mapping add NAME "
                     "FILE.toml` keeps one (beside the database, in `mappings/`); an import "
                     "then names it with `--map NAME`.", data)
    lines = [f"*Named mappings* ({len(found)}), for `import --map NAME`:"]
    for m in found:
        name = mrkdwn.escape(m.name)
        if m.problem:
            lines.append(f"• `{name}`: cannot be read ({mrkdwn.cut(mrkdwn.escape(m.problem), 200)})")
        else:
            lines.append(f"• `{name}`: {m.format} rows")
    return Reply("\n".join(lines), data)
