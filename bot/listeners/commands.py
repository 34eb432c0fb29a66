"""`/kpi`: acknowledged at once, answered through the response_url.

The subcommands themselves live in ``bot.command`` (the same ones `kpibot ask` runs);
this module only does what is particular to Slack: who may change settings, Block Kit,
ephemeral replies with a Share button, and the chart upload into the channel.
"""
from __future__ import annotations

import logging

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from .. import blocks, mrkdwn
from ..command import MAX_TEXT, STATE_CHANGING, Context, Reply, run, tokenize
from ..deps import Deps, webhook
from ..permissions import is_admin
from ..text import file_name

log = logging.getLogger(__name__)

NO_ACCESS = {"not_in_channel", "channel_not_found", "is_archived", "restricted_action",
             "not_allowed_token_type", "missing_scope"}


def register(app: App, deps: Deps) -> None:
    @app.command("/kpi")
    def kpi(ack: Ack, command: dict, client: WebClient) -> None:
        ack()   # within Slack's 3 seconds, before any work
        answer(deps, command, client)


def head(text: str) -> str:
    """The subcommand a command text starts with ('' for a card or a bad text)."""
    if len(text) > MAX_TEXT:
        return ""
    try:
        toks = tokenize(text)
    except Exception:   # the core reports it properly
        return ""
    return toks[0].text.lower() if toks and not toks[0].quoted else ""


def answer(deps: Deps, command: dict, client: WebClient) -> Reply:
    text_in = command.get("text", "")
    user_id = command.get("user_id", "")
    send = webhook(command["response_url"], deps.settings.timeout)
    channel = command.get("channel_id")
    ctx = Context(deps.store(), user=user_id, is_admin=False,
                  channel=channel if mrkdwn.is_channel_id(channel) else None)
    if head(text_in) in STATE_CHANGING:
        ctx.is_admin = is_admin(client, deps.settings.admins, user_id)
    reply = run(text_in, ctx)
    send.send(response_type="ephemeral", **blocks.message(reply, text_in))
    if reply.ok:   # a card or a comparison has a chart; other answers have none
        problem = upload_chart(client, command.get("channel_id", ""), reply, text_in)
        if problem:
            send.send(text=problem, response_type="ephemeral")
    return reply


def upload_chart(client: WebClient, channel_id: str, reply: Reply, text_in: str) -> str | None:
    """Upload the answer's chart (files upload v2) into the channel; a sentence for the
    user when that is not possible (the text answer has already arrived)."""
    try:
        charts = reply.charts()
    except Exception:
        log.exception("chart for /kpi %s failed", text_in[:200])
        return "The chart could not be drawn this time; the numbers above are complete."
    if not charts:
        return None
    name, png = charts[0]
    about = reply.report.campaign.name if reply.report is not None else ""
    try:
        client.files_upload_v2(channel=channel_id, file=png, filename=file_name(about, name),
                               title=mrkdwn.plain(f"/kpi {text_in}".strip())[:250])
    except SlackApiError as exc:
        error = exc.response.get("error", "")
        if error in NO_ACCESS:
            return ("I can't post the chart in this channel (it is private or I am not a "
                    "member). Invite me with `/invite @kpibot`, then ask again; the numbers "
                    "above are complete.")
        log.warning("chart upload failed: %s", error)
        return (f"The chart could not be uploaded ({mrkdwn.cut(mrkdwn.escape(str(error)), 60)});"
                " the numbers above are complete.")
    return None
