"""Campaign names: how they are matched, and how a campaign's channel follows its data."""
from __future__ import annotations

import unicodedata


def name_key(name: str) -> str:
    """How campaign names are compared: Unicode-normalised (NFKC) and case-folded, so that
    ``Spring-Sale`` and ``spring-sale`` (or full-width forms) are one campaign."""
    return unicodedata.normalize("NFKC", name).casefold().strip()


def merged_channel(existing: str | None, channel: str | None) -> str | None:
    """A campaign's channel once ``channel`` data is added: the same, or ``mixed``."""
    if not channel or existing == channel or existing == "mixed":
        return existing
    return channel if existing is None else "mixed"


MAX_NAME = 200   # characters in a campaign name

# C0 and C1 control characters and DEL, and the Unicode noncharacters: never part of a
# name or label. Those that are whitespace (tab, line breaks, the separators \x1c-\x1f,
# NEL) are handled by str.split() below, which turns runs of them into one space.
_CONTROL = frozenset(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0), *range(0xFDD0, 0xFDF0)]) \
    | frozenset(chr((plane << 16) | low) for plane in range(17) for low in (0xFFFE, 0xFFFF))
# Kept of the invisible format characters (category Cf): the zero-width joiner and
# non-joiner, which emoji sequences and Persian words need.
_JOINERS = frozenset("\u200c\u200d")


def _hidden(ch: str) -> bool:
    """A control character, a noncharacter, or an invisible format character (Unicode
    category Cf: zero-width spaces, bidi overrides and isolates, soft hyphens, BOMs), so
    that two names that look the same are one name."""
    return ch in _CONTROL or (unicodedata.category(ch) == "Cf" and ch not in _JOINERS)


def clean_label(text: str) -> str:
    """A name or label as stored: stripped, with control characters, noncharacters and
    invisible format characters removed; in a value that had any, each run of whitespace
    becomes one space (``"multi\\nline"`` -> ``"multi line"``). Printable text is only
    stripped, so ordinary names (and their :func:`name_key`) are unchanged."""
    if text.isprintable() or not any(map(_hidden, text)):
        return text.strip()
    return " ".join("".join(ch for ch in text if ch.isspace() or not _hidden(ch)).split())
