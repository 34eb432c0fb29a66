"""The `/kpi` command: one parser for the command text, a dispatch table of subcommands,
and domain errors turned into helpful replies. Slack (``bot.app``) and the CLI
(``kpibot ask``) both call :func:`run`; neither knows how a subcommand works.

The modules, leaves first: ``base`` (Context, Reply, UsageError, the usage contract),
``tokens`` (the command text to tokens), ``args`` (arguments the subcommands share),
``cards``, ``compare``, ``alerts``, ``digests`` (the subcommands), and ``core`` (help,
the dispatch table and :func:`run`), which imports the subcommands; none imports it.
"""
from .args import duration
from .base import EXAMPLES, STATE_CHANGING, USAGE, Context, Reply, UsageError
from .core import COMMANDS, MAX_TEXT, MAX_WORDS, run
from .tokens import Token, tokenize

__all__ = ["COMMANDS", "EXAMPLES", "MAX_TEXT", "MAX_WORDS", "STATE_CHANGING", "USAGE",
           "Context", "Reply", "Token", "UsageError", "duration", "run", "tokenize"]
