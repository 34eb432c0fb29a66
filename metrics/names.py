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
_NONCHARACTERS = "".join(chr(c) for c in range(0xFDD0, 0xFDF0)) + "".join(
    chr((plane << 16) | low) for plane in range(17) for low in (0xFFFE, 0xFFFF))
_DROP = dict.fromkeys(map(ord, "".join(
    chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)] if not chr(c).isspace())
    + _NONCHARACTERS))
# Invisible format characters (Unicode category Cf): zero-width spaces, bidi overrides
# and isolates (U+202E turns the rest of a line around), soft hyphens, BOMs. Two names
# that look the same are then one name. Kept: the zero-width joiner and non-joiner, which
# emoji sequences and Persian words need.
_FORMAT = "".join(chr(c) for c in range(0x10000) if unicodedata.category(chr(c)) == "Cf"
                  and c not in (0x200C, 0x200D))
_DROP.update(dict.fromkeys(map(ord, _FORMAT)))
_ALL_BAD = frozenset(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]) \
    | frozenset(_NONCHARACTERS) | frozenset(_FORMAT)


def clean_label(text: str) -> str:
    """A name or label as stored: stripped, with control characters (C0, C1, DEL) and
    Unicode noncharacters removed; in a value that had any, each run of whitespace
    becomes one space (``"multi\\nline"`` -> ``"multi line"``). Printable text is only
    stripped, so ordinary names (and their :func:`name_key`) are unchanged."""
    if text.isprintable() or _ALL_BAD.isdisjoint(text):
        return text.strip()
    return " ".join(text.translate(_DROP).split())
