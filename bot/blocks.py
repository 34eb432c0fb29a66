"""Block Kit for every reply, built with ``slack_sdk.models.blocks`` and validated against
Slack's limits (at most 50 blocks, section text 3,000 characters, header 150, 10 fields),
with the plain text of ``bot.text`` as the fallback."""
from __future__ import annotations

from slack_sdk.models.blocks import (ActionsBlock, Block, ButtonElement, ContextBlock,
                                     DividerBlock, HeaderBlock, MarkdownTextObject,
                                     PlainTextObject, SectionBlock)

from metrics import kpis

from . import mrkdwn, text
from .command import Reply

MAX_BLOCKS = 50
SECTION_TEXT = 3000
HEADER_TEXT = 150
FIELDS = 10
FALLBACK_TEXT = 3000
SHARE_ACTION = "kpi_share"
SNOOZE_ACTION = "alert_snooze"
MUTE_ACTION = "alert_mute"


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _md(s: str, limit: int, links: frozenset[str] = frozenset()) -> str:
    """Text from data or a request as mrkdwn (``bot.mrkdwn``), within ``limit``."""
    return mrkdwn.cut(mrkdwn.escape(s, links), limit)


def _code_sections(body: str, title: str | None = None) -> list[Block]:
    """Monospaced text in as few sections as Slack's 3,000 characters allow."""
    out: list[Block] = []
    chunk: list[str] = []
    size = 0
    head = f"*{_md(title, 200)}*\n" if title else ""
    for line in body.splitlines():
        line = mrkdwn.cut(mrkdwn.code(line), SECTION_TEXT - 20 - len(head))
        if size + len(line) + 1 > SECTION_TEXT - 10 - len(head):
            out.append(SectionBlock(text=MarkdownTextObject(text=head + "```" + "\n".join(chunk)
                                                             + "```")))
            chunk, size, head = [], 0, ""
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        out.append(SectionBlock(text=MarkdownTextObject(text=head + "```" + "\n".join(chunk)
                                                         + "```")))
    return out


def _metric_field(k: kpis.Kpi, v: kpis.Value, before: kpis.Value | None, currency,
                  headline: bool = False, bench=None) -> MarkdownTextObject:
    lines = [f"{text.fmt_value(v, currency)}"]
    frac = text.fraction(v)
    if frac:
        lines[0] += f"  ({frac})"
    if before is not None:
        ch = text.change(v, before, k.good)
        if ch:
            lines.append(ch)
    if bench is not None:
        lines.append(text.benchmark_cell(bench, v, k))
    return MarkdownTextObject(text=f"{'★ ' if headline else ''}*{k.label}*\n"
                              + _md("\n".join(lines), 1900))


def card_blocks(reply: Reply, command: str, share: bool = True) -> list[Block]:
    rep = reply.report
    c = rep.campaign
    channels = " + ".join(text.CHANNEL_NAME[ch] for ch in rep.channels)
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=_cut(mrkdwn.plain(f"{c.name} · {channels}"),
                                                  HEADER_TEXT))),
        ContextBlock(elements=[MarkdownTextObject(text=_md(
            text.period_text(rep) + (f" · compared with {rep.previous_period.label}"
                                     if rep.previous else "")
            + (f" · goal: {c.goal}" if c.goal else ""), 2000))]),
    ]
    for ch in rep.channels:
        sec = rep.current[ch]
        cur = sec.currency
        shown = text.shown_kpis(rep, ch)
        if len(rep.channels) > 1:
            blocks.append(SectionBlock(text=MarkdownTextObject(text=f"*{text.CHANNEL_NAME[ch]}*")))
        heads = {k.name for k in rep.headline(ch)}
        fields = [_metric_field(k, sec.metrics[k.name],
                                rep.previous[ch].metrics[k.name] if rep.previous else None, cur,
                                k.name in heads, rep.benchmarks.get((ch, k.name)))
                  for k in shown]
        for i in range(0, len(fields), FIELDS):
            blocks.append(SectionBlock(fields=fields[i:i + FIELDS]))
        sources = text.benchmark_sources(rep, ch)
        if sources:
            blocks.append(ContextBlock(elements=[MarkdownTextObject(
                text=_md("Benchmarks: " + sources, 2000))]))
        if sec.dispositions:
            blocks.append(SectionBlock(text=MarkdownTextObject(text="*Dispositions*: " + _md(
                ", ".join(f"{n} {k:,} ({s * 100:.0f}%)" for n, k, s in sec.dispositions[:10]),
                SECTION_TEXT - 20))))
    if rep.attribution is not None:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(
            text=_md(" ".join(text.attribution_lines(rep)), 2000))]))
    if rep.dim:
        blocks.append(DividerBlock())
        blocks += _code_sections(text.breakdown_table(rep), f"By {rep.dim}")
    if share:
        blocks.append(ActionsBlock(elements=[ButtonElement(
            text="Share in channel", action_id=SHARE_ACTION, value=_cut(command, 2000),
            style="primary")]))
    return blocks


def shared_by(user_id: str, command: str) -> dict:
    """The line under a card shared in a channel: who shared it, and the command."""
    return {"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"shared by {mrkdwn.user(user_id)} · "
                                   + _md(f"/kpi {command}", 1900)}]}


def text_blocks(body: str, links: frozenset[str] = frozenset()) -> list[Block]:
    """Help, lists and errors: prose stays prose; tables are monospaced."""
    if "  " in body and "\n" in body:      # an aligned table or usage: keep the columns
        first, _, rest = body.partition("\n")
        if "  " in first:                    # the table starts at once (its header row)
            return _code_sections(body)
        return [SectionBlock(text=MarkdownTextObject(text=_md(first, SECTION_TEXT, links)))] \
            + _code_sections(rest)
    return [SectionBlock(text=MarkdownTextObject(text=_md(body, SECTION_TEXT, links)))]


def message(reply: Reply, command: str, *, share: bool = True) -> dict:
    """The whole message: blocks (validated, within limits) and the fallback text. Should
    the blocks not validate, the text goes alone: an answer is never lost to formatting."""
    try:
        return _message(reply, command, share)
    except Exception:
        import logging
        logging.getLogger(__name__).exception("blocks for /kpi %s failed", command[:200])
        return {"text": fallback(reply.text, reply.links)}


def _message(reply: Reply, command: str, share: bool) -> dict:
    blocks = card_blocks(reply, command, share and reply.ok) if reply.report is not None \
        else text_blocks(reply.text, reply.links)
    if len(blocks) > MAX_BLOCKS:
        blocks = blocks[: MAX_BLOCKS - 1] + [ContextBlock(elements=[MarkdownTextObject(
            text="… more than Slack shows in one message: use `kpibot ask` for all of it")])]
    dicts = []
    for b in blocks:
        b.validate_json()       # raises SlackObjectFormationError past a limit
        dicts.append(b.to_dict())
    return {"text": fallback(reply.text, reply.links), "blocks": dicts}


def fallback(body: str, links: frozenset[str] = frozenset()) -> str:
    """A message's top-level ``text`` (notifications, clients without blocks): Slack reads
    it as mrkdwn too, so it is escaped like every other text."""
    return _md(body, FALLBACK_TEXT, links)


def digest_message(d, late: str | None = None) -> dict:
    """A digest as Block Kit: campaigns packed into sections of up to 3,000 characters;
    past Slack's 50 blocks the rest is counted, not dropped silently."""
    p = text.digest_lines(d)
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text",
                                    "text": _cut(p["title"] + (" (late)" if late else ""),
                                                 HEADER_TEXT)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _md(
            p["context"] + (f" · {late}" if late else ""), 2000)}]}]
    if p["north"]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": "*" + _md(p["north"], 2900) + "*"}})
    tail = []
    if p["movers"]:
        tail.append("*Top movers*\n" + _md("\n".join(p["movers"]), SECTION_TEXT - 20))
    if p["alerts"]:
        tail.append("*Alerts that fired*\n" + _md("\n".join(p["alerts"][:30]), SECTION_TEXT - 30))
    room = MAX_BLOCKS - len(blocks) - len(tail) - 1      # one for "… and N more"
    chunk, shown = "", 0
    lines = [_md(ln, 500) for ln in p["lines"]] or ["No campaign had activity."]
    for ln in lines:
        if len(chunk) + len(ln) + 1 > SECTION_TEXT:
            if room == 0:
                break
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
            room -= 1
            chunk = ""
        chunk += ("\n" if chunk else "") + ln
        shown += 1
    if chunk and room > 0:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
    elif chunk:
        shown -= chunk.count("\n") + 1
    if shown < len(p["lines"]):
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                       f"… and {len(p['lines']) - shown} more campaigns "
                       "(`kpibot digest preview` lists them all)"}]})
    for t in tail:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(t, SECTION_TEXT)}})
    return {"text": fallback(text.digest_text(d, late)), "blocks": blocks}


def alert_message(payload: dict) -> dict:
    """Text and Block Kit for one alert post (a claimed post's payload)."""
    body = text.notice_text(payload)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": _md(body, SECTION_TEXT)}}]
    if payload["kind"] != "recovered":
        value = f"{payload['rule_id']}:{payload['campaign_id']}"
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "action_id": SNOOZE_ACTION, "value": value,
             "text": {"type": "plain_text", "text": "Snooze 1 day"}},
            {"type": "button", "action_id": MUTE_ACTION, "value": str(payload["rule_id"]),
             "style": "danger", "text": {"type": "plain_text", "text": "Mute rule"},
             "confirm": {"title": {"type": "plain_text", "text": "Mute this rule?"},
                         "text": {"type": "plain_text",
                                  "text": "It stops posting for every campaign until unmuted."},
                         "confirm": {"type": "plain_text", "text": "Mute"},
                         "deny": {"type": "plain_text", "text": "Cancel"}}}]})
    return {"text": fallback(body), "blocks": blocks}
