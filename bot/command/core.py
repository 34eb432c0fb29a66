"""The dispatcher: the table of subcommands, the help reply, and :func:`run`, which
parses one command and turns domain errors into helpful replies."""
from __future__ import annotations

from typing import Callable

from metrics.errors import KpiBotError, UnknownCampaign

from .. import text
from .alerts import cmd_alert
from .attribution import cmd_attribution
from .base import EXAMPLES, USAGE, Context, Reply, UsageError
from .cards import cmd_card, cmd_goal, cmd_list, cmd_northstar
from .compare import cmd_ab, cmd_compare, cmd_top
from .digests import cmd_digest
from .mappings import cmd_mapping
from .tokens import Token, tokenize

MAX_TEXT = 1000     # characters of command text read; longer is refused before parsing
MAX_WORDS = 40


def cmd_help(ctx: Context, args: list[Token]) -> Reply:
    return Reply(text.help_text(USAGE, EXAMPLES), {"commands": USAGE, "examples": EXAMPLES})


COMMANDS: dict[str, Callable[[Context, list[Token]], Reply]] = {
    "help": cmd_help,
    "list": cmd_list,
    "goal": cmd_goal,
    "northstar": cmd_northstar,
    "alert": cmd_alert,
    "digest": cmd_digest,
    "ab": cmd_ab,
    "compare": cmd_compare,
    "top": cmd_top,
    "attribution": cmd_attribution,
    "mapping": cmd_mapping,
}


def run(text_in: str, ctx: Context) -> Reply:
    """Parse and answer one `/kpi` command. Never raises for bad input: a domain error
    becomes a reply with ``ok=False``, the reason, and the usage line. Its cost is linear
    in the text, which is refused past ``MAX_TEXT`` characters or ``MAX_WORDS`` words."""
    try:
        if len(text_in or "") > MAX_TEXT:
            raise UsageError(f"that command is {len(text_in):,} characters long; /kpi reads at "
                             f"most {MAX_TEXT:,}. Type `/kpi help` for what it understands.")
        tokens = tokenize(text_in)
        if len(tokens) > MAX_WORDS:
            raise UsageError(f"that command has {len(tokens):,} words; /kpi reads at most "
                             f"{MAX_WORDS}. Put a campaign name with spaces in quotes, e.g. "
                             '/kpi "spring sale 2026" 7d')
        if not tokens:
            return cmd_help(ctx, [])
        head = tokens[0].text.lower()
        handler = COMMANDS.get(head) if not tokens[0].quoted else None
        if handler is not None:
            return handler(ctx, tokens[1:])
        return cmd_card(ctx, tokens)
    except UnknownCampaign as exc:
        msg = str(exc) + " Type `/kpi list` to see every campaign."
        return Reply(msg, {"error": msg, "suggestions": exc.suggestions}, ok=False)
    except UsageError as exc:
        msg = str(exc) + (f"\nUsage: {exc.usage}" if exc.usage else "")
        return Reply(msg, {"error": str(exc), "usage": exc.usage}, ok=False)
    except KpiBotError as exc:
        return Reply(str(exc), {"error": str(exc)}, ok=False)
