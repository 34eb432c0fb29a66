"""Mapping files (TOML): any CSV onto the canonical message, call or daily columns."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MappingError
from .fields import FIELDS_BY_FORMAT
from .values import BadValue, campaign_name, sender_key

_SECTIONS = {"source", "constants", "columns", "values", "attributes", "campaign_by_sender"}


@dataclass
class Mapping:
    path: Path
    delimiter: str | None = None
    format: str | None = None                      # events, calls, daily, clicks, conversions
    constants: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)   # attribute name -> source column
    senders: dict[str, str] = field(default_factory=dict)      # sender digits/service -> campaign


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def load_mapping(path: str | os.PathLike) -> Mapping:
    """Read and check a mapping file; every problem names the section and key."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError(f"mapping file {p} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{p.name} is not valid TOML: {exc}") from None
    unknown = set(raw) - _SECTIONS
    if unknown:
        raise MappingError(f"{p.name}: unknown section [{sorted(unknown)[0]}] "
                           f"(known: {', '.join(sorted(_SECTIONS))})")
    m = Mapping(path=p)
    source = raw.get("source", {})
    m.delimiter = source.get("delimiter")
    if m.delimiter is not None and (not isinstance(m.delimiter, str) or len(m.delimiter) != 1):
        raise MappingError(f"{p.name}: [source] delimiter must be one character")
    m.constants = {k: _text(v) for k, v in raw.get("constants", {}).items()}
    channel = m.constants.pop("channel", None)
    fmt = source.get("format")
    if fmt is None:
        if channel in (None, "sms", "text"):
            fmt = "events"
        elif channel in ("call", "voice"):
            fmt = "calls"
        else:
            raise MappingError(f"{p.name}: [constants] channel must be sms or call, not '{channel}'")
    if fmt not in FIELDS_BY_FORMAT:
        raise MappingError(f"{p.name}: [source] format must be one of "
                           f"{', '.join(FIELDS_BY_FORMAT)}, not '{fmt}'")
    m.format = fmt
    if fmt == "daily" and channel:
        m.constants["channel"] = channel
    allowed = FIELDS_BY_FORMAT[fmt]
    for section in ("constants", "columns"):
        for k in (m.constants if section == "constants" else raw.get("columns", {})):
            if k not in allowed:
                raise MappingError(f"{p.name}: [{section}] '{k}' is not a canonical {fmt} field "
                                   f"(known: {', '.join(allowed)})")
    if "campaign" in m.constants:
        m.constants["campaign"] = _campaign(p, "[constants] campaign", m.constants["campaign"])
    m.columns = {k: str(v) for k, v in raw.get("columns", {}).items()}
    for k, table in raw.get("values", {}).items():
        if k not in allowed:
            raise MappingError(f"{p.name}: [values.{k}]: '{k}' is not a canonical {fmt} field")
        if not isinstance(table, dict):
            raise MappingError(f"{p.name}: [values.{k}] must be a table of source = canonical")
        m.values[k] = {str(src): _text(dst) for src, dst in table.items()}
        m.values[k].update({str(src).strip().lower(): _text(dst) for src, dst in table.items()})
    m.attributes = {k: str(v) for k, v in raw.get("attributes", {}).items()}
    for sender, campaign in raw.get("campaign_by_sender", {}).items():
        m.senders[sender_key(sender)] = _campaign(
            p, f"[campaign_by_sender] {sender.strip()[:40]}", _text(campaign))
    return m


def _campaign(p: Path, where: str, raw: str) -> str:
    """A campaign name the mapping gives for every row: cleaned and checked once, here."""
    try:
        return campaign_name(raw)
    except BadValue as exc:
        raise MappingError(f"{p.name}: {where}: {exc}") from None
