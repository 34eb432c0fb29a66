"""Command text to tokens: quotes (typographic ones too), Slack's ``<#C123|name>``
escapes, HTML entities, and the invisible characters copied text can carry."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

from .base import UsageError


@dataclass
class Token:
    text: str
    quoted: bool = False
    kind: str = "word"      # word, channel, user, group


_QUOTES = {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u00ab": '"',
           "\u00bb": '"', "\u201e": '"'}
_ESCAPE = re.compile(r"<([#@!])([^>|]*)(?:\|([^>]*))?>")
# control characters, and the zero-width space that copied Slack text can carry
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\u202a-\u202e"
                        "\u2066-\u2069\ufeff\ufdd0-\ufdef\ufffe\uffff]")


def tokenize(raw: str) -> list[Token]:
    """Split command text into tokens: "quoted words" stay together (typographic quotes
    too, as phones type them), Slack's escapes become channel/user/group tokens, and
    ``&amp;`` style entities are decoded."""
    s = _INVISIBLE.sub("", raw or "").strip()
    for q, plain in _QUOTES.items():
        s = s.replace(q, plain)
    tokens: list[Token] = []
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "\"'":
            j = s.find(ch, i + 1)
            if j < 0:
                raise UsageError(f"unclosed quote: {s[i:i + 40]}")
            tokens.append(Token(html.unescape(s[i + 1:j]).strip(), quoted=True))
            i = j + 1
            continue
        m = _ESCAPE.match(s, i)
        if m:
            sigil, ident, label = m.groups()
            if sigil == "#":
                tokens.append(Token(ident, kind="channel"))
            elif sigil == "@":
                tokens.append(Token(ident, kind="user"))
            else:   # <!subteam^S123|@group>, <!here>
                tokens.append(Token(ident.split("^")[-1], kind="group"))
            i = m.end()
            continue
        j = i
        while j < n and not s[j].isspace():
            j += 1
        tokens.append(Token(html.unescape(s[i:j])))
        i = j
    if tokens and tokens[0].text.lower() == "/kpi" and not tokens[0].quoted:
        tokens = tokens[1:]
    return tokens
