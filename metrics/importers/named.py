"""Named mappings: mapping files kept in ``mappings/`` beside the database, so that an
import (from the command line or from Slack) names one (``--map shopify``) instead of
a path. ``kpibot mapping add NAME FILE`` checks a file and stores it there; ``kpibot
mapping list`` and ``/kpi mapping list`` show them."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import MappingError
from .mapping import Mapping, load_mapping

FOLDER = "mappings"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Named:
    name: str
    path: Path
    format: str | None       # what the mapping reads (events, calls, ...), None: unreadable
    problem: str | None      # why it cannot be read, when it cannot


def folder(db_path: str | os.PathLike) -> Path:
    return Path(db_path).resolve().parent / FOLDER


def check_name(name: str) -> str:
    """A mapping's name: letters, digits, ``-``, ``_`` and ``.``, 64 at most (never a
    path: a name from Slack must not reach outside the folder)."""
    stem = name[:-5] if name.lower().endswith(".toml") else name
    if not _NAME.fullmatch(stem) or ".." in stem:
        raise MappingError(f"'{name[:40]}' is not a mapping name (letters, digits, '-', '_' "
                           "and '.', at most 64, e.g. shopify-orders)")
    return stem


def path_of(db_path: str | os.PathLike, name: str) -> Path:
    return folder(db_path) / f"{check_name(name)}.toml"


def resolve(db_path: str | os.PathLike, given: str | os.PathLike) -> Path:
    """What ``--map`` names: a file that exists as given, else a named mapping."""
    p = Path(given)
    if p.is_file():
        return p
    text = str(given)
    if os.sep in text or (os.altsep and os.altsep in text):
        raise MappingError(f"mapping file {text} not found")
    named = path_of(db_path, text)
    if not named.is_file():
        known = [m.name for m in listing(db_path)]
        hint = (f" (named mappings: {', '.join(known[:20])})" if known else
                f" (there are no named mappings yet: `kpibot mapping add {check_name(text)} "
                "FILE.toml` adds one)")
        raise MappingError(f"no mapping file {text} and no named mapping '{check_name(text)}'"
                           + hint)
    return named


def load(db_path: str | os.PathLike, given: str | os.PathLike) -> Mapping:
    return load_mapping(resolve(db_path, given))


def add(db_path: str | os.PathLike, name: str, source: str | os.PathLike,
        replace: bool = False) -> Named:
    """Check the mapping file ``source`` and keep a copy as ``name``; an existing one is
    replaced only with ``replace``."""
    target = path_of(db_path, name)
    mapping = load_mapping(source)            # a broken file is refused, nothing stored
    if target.exists() and not replace:
        raise MappingError(f"a mapping named '{target.stem}' exists already (replace it with "
                           "--replace)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".new-", suffix=".toml")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return Named(target.stem, target, mapping.format, None)


def listing(db_path: str | os.PathLike) -> list[Named]:
    """The named mappings, by name, each with what it reads or why it cannot be read."""
    out = []
    d = folder(db_path)
    if not d.is_dir():
        return out
    for p in sorted(d.glob("*.toml"), key=lambda p: p.stem.casefold()):
        if p.name.startswith(".") or not _NAME.fullmatch(p.stem):
            continue
        try:
            m = load_mapping(p)
        except MappingError as exc:
            out.append(Named(p.stem, p, None, str(exc)))
        else:
            out.append(Named(p.stem, p, m.format or "events", None))
    return out
