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
