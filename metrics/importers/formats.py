"""The import formats, put together: a format bound to one file's header (``binding``)
with the builder of its rows (``rows``) is a :class:`Plan`, which turns a batch of CSV
rows into table rows.

The pieces live in their own modules; their public names are here too, as before:
``fields`` (canonical fields, formats, header detection, table columns), ``binding``
(fields bound to a header, readers, Memo, the builders' Context), ``rows`` (the message,
call and daily row builders), ``values`` (single values, campaign names)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .binding import Context, Fields, Memo, RowProblem, bind_header
from .fields import (CALL_COLUMNS, CALL_FIELDS, DAILY_COLUMNS, DAILY_FIELDS, FORMATS,
                     MESSAGE_COLUMNS, MESSAGE_FIELDS, NULL, Format, detect, normalise_header)
from .mapping import Mapping
from .rows import BUILDERS
from .values import campaign_name

__all__ = ["CALL_COLUMNS", "CALL_FIELDS", "DAILY_COLUMNS", "DAILY_FIELDS", "FORMATS",
           "MESSAGE_COLUMNS", "MESSAGE_FIELDS", "NULL", "Context", "Fields", "Format", "Memo",
           "Plan", "RowProblem", "bind", "campaign_name", "detect", "normalise_header"]


@dataclass
class Plan:
    """A format bound to one file's header: builds one table row from one CSV row."""

    format: str
    kind: str
    build: Callable[[list[list[str]]], list[list]]   # a batch's rows -> its columns
    columns_used: dict[str, str]               # canonical field -> source label
    extras: list[str]
    ignored: list[str]


def bind(fmt: Format, header: list[str], ctx: Context, mapping: Mapping | None = None) -> Plan:
    """Bind a format (or a mapping onto a format) to a header; raises RowProblem-free
    ``ValueError`` with a clear message when a required column is missing."""
    cols, extras, ignored = bind_header(fmt, header, ctx, mapping)
    build = BUILDERS[fmt.kind](fmt, ctx, cols, extras)
    return Plan(fmt.name, fmt.kind, build, cols.labels, [e for e, _ in extras], ignored)
