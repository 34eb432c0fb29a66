"""The one way text reaches Slack: everything that comes from data or from a request (a
campaign name, a segment, a command typed, an error naming either) is escaped here before
it is put into a ``mrkdwn`` text or a message's ``text``.

Slack reads ``<...>`` as a mention, a channel link or a URL (``<!channel>`` pings a whole
channel), ``&`` starts an entity, and ``*``, ``_``, ``~`` and a backtick format text. So:

- ``&``, ``<`` and ``>`` become ``&amp;``, ``&lt;`` and ``&gt;`` (Slack's own escaping);
- a formatting character that could open or close formatting (one at the edge of a word)
  is written as a date token whose format is invalid, ``<!date^00000000^{_}|*>``: Slack shows its
  fallback text, the character, as plain text (jsx-slack escapes the same way); one
  inside a word (``opt_out_rate``) cannot format and is left alone;
- a ``>`` that starts a line (a quote) gets a soft hyphen in front of it.

Inside code blocks formatting does not apply; :func:`code` escapes the three control
characters and breaks runs of backticks so that data cannot close the block.

Mentions the bot makes on purpose take an id that is checked first (:func:`user`,
:func:`channel`); :func:`escape` keeps the channel links named in ``links`` and nothing
else.
"""
from __future__ import annotations

import re

_ENTITY = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_FORMAT = re.compile(r"[*_~`]")
_INNER = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_DATE = "<!date^00000000^{{_}}|{}>"
_QUOTE = re.compile(r"^(&gt;)", re.M)
_USER_ID = re.compile(r"^[UW][A-Z0-9]{1,30}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{1,30}$")
_TOKEN = re.compile(r"<!date\^00000000\^\{_\}\|.>|&(?:amp|lt|gt);|<#[CGD][A-Z0-9]{1,30}>")
ESCAPE_TOKEN = re.compile(r"<!date\^00000000\^\{_\}\|[*_~`]>")   # what escape() writes, for tests
# control characters, noncharacters and bidi overrides never reach a message
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
                        "\ufdd0-\ufdef\ufffe\uffff]")


def escape(text: str, links: frozenset[str] | set[str] = frozenset()) -> str:
    """``text`` as mrkdwn that shows exactly these characters and pings no one. Channel
    links ``<#C123>`` are kept for the checked ids in ``links`` (channels the bot itself
    names, e.g. where an alert posts); any other ``<...>`` is shown, not followed."""
    text = _INVISIBLE.sub("", text)
    if not links:
        return _escape(text)
    keep = re.compile("<#(" + "|".join(re.escape(i) for i in sorted(links)
                                          if _CHANNEL_ID.match(i)) + ")>")
    out, at = [], 0
    for m in keep.finditer(text) if keep.pattern != "<#()>" else ():
        out.append(_escape(text[at:m.start()]))
        out.append(m.group(0))
        at = m.end()
    out.append(_escape(text[at:]))
    return "".join(out)


def _escape(text: str) -> str:
    text = text.translate(_ENTITY)
    if any(c in text for c in "*_~`"):
        text = _FORMAT.sub(lambda m: _inert(m, text), text)
    return _QUOTE.sub("\u00ad\\1", text)


def _inert(m: re.Match, text: str) -> str:
    """A formatting character between two ASCII letters or digits cannot format (Slack
    formats only at the edge of a word): it stays; any other becomes a date token."""
    i = m.start()
    if 0 < i < len(text) - 1 and text[i - 1] in _INNER and text[i + 1] in _INNER:
        return m.group(0)
    return _DATE.format(m.group(0))


def plain(text: str) -> str:
    """Text for a ``plain_text`` object (headers, button labels): Slack formats nothing
    and mentions no one there; only invisible characters are dropped."""
    return _INVISIBLE.sub("", text)


def code(text: str) -> str:
    """Text for inside a ``` block: entities escaped, backtick runs broken up."""
    return _INVISIBLE.sub("", text).translate(_ENTITY).replace("`", "\u02cb")


def user(user_id: str | None) -> str:
    """A mention of a Slack user, or "someone" when the id is not one."""
    return f"<@{user_id}>" if user_id and _USER_ID.match(user_id) else "someone"


def is_channel_id(value: str | None) -> bool:
    return bool(value and _CHANNEL_ID.match(value))


def channel(value: str | None) -> str:
    """How a reply names a channel: a link for a channel id, else the name as typed."""
    if is_channel_id(value):
        return f"<#{value}>"
    return value or ""


def cut(text: str, limit: int) -> str:
    """Escaped text cut to at most ``limit`` characters, never inside an entity or a
    token, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    end = limit - 1
    for m in _TOKEN.finditer(text, max(0, end - 40), end + 40):
        if m.start() < end < m.end():
            end = m.start()
            break
    return text[:end] + "…"
