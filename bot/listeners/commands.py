"""`/kpi`: acknowledged at once, answered through the response_url.

The subcommands themselves live in ``bot.command`` (the same ones `kpibot ask` runs);
this module only does what is particular to Slack: who may change settings, Block Kit,
ephemeral replies with a Share button, and the chart upload into the channel.
"""
from __future__ import annotations

import logging
import re

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from .. import blocks
from ..app import webhook
from ..command import STATE_CHANGING, Context, Reply, run, tokenize

log = logging.getLogger(__name__)

NO_ACCESS = {"not_in_channel", "channel_not_found", "is_archived", "restricted_action",
             "not_allowed_token_type", "missing_scope"}


def register(app: App, deps) -> None:
    @app.command("/kpi")
    def kpi(ack: Ack, command: dict, client: WebClient) -> None:
        ack()   # within Slack's 3 seconds, before any work
        answer(deps, command, client)


def is_admin(client: WebClient, admins: frozenset[str], user_id: str) -> bool:
    """A user in KPIBOT_ADMINS (directly or through a listed user group); when it is
    unset, a workspace admin or owner."""
    if admins:
        if user_id in admins:
            return True
        for group in sorted(a for a in admins if a.startswith("S")):
            try:
                if user_id in client.usergroups_users_list(usergroup=group).get("users", []):
                    return True
            except SlackApiError as exc:
                log.warning("could not read user group %s: %s", group, exc.response.get("error"))
        return False
    try:
        user = client.users_info(user=user_id)["user"]
    except SlackApiError as exc:
        log.warning("could not check whether %s is an admin: %s", user_id,
                    exc.response.get("error"))
        return False
    return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))


def _head(text: str) -> str:
    try:
        toks = tokenize(text)
    except Exception:   # the core reports it properly
        return ""
    return toks[0].text.lower() if toks and not toks[0].quoted else ""


def answer(deps, command: dict, client: WebClient) -> Reply:
    text_in = command.get("text", "")
    user_id = command.get("user_id", "")
    send = webhook(command["response_url"], deps.settings.timeout)
    ctx = Context(deps.store(), user=user_id, is_admin=False, channel=command.get("channel_id"))
    if _head(text_in) in STATE_CHANGING:
        ctx.is_admin = is_admin(client, deps.settings.admins, user_id)
    try:
        reply = run(text_in, ctx)
    except Exception:   # a bug: the user hears about it, the log has the details
        log.exception("/kpi %s failed", text_in)
        send.send(text="Sorry, something went wrong answering that; it has been logged.",
                  response_type="ephemeral")
        raise
    msg = blocks.message(reply, text_in)
    send.send(response_type="ephemeral", **msg)
    if reply.ok:   # a card or a comparison has a chart; other answers have none
        problem = upload_chart(client, command.get("channel_id", ""), reply, text_in)
        if problem:
            send.send(text=problem, response_type="ephemeral")
    return reply


def _slug(text: str) -> str:
    return re.sub(r"[^\w-]+", "-", text, flags=re.UNICODE).strip("-")[:60] or "kpi"


def upload_chart(client: WebClient, channel_id: str, reply: Reply, text_in: str) -> str | None:
    """Upload the answer's chart (files upload v2) into the channel; a sentence for the
    user when that is not possible (the text answer has already arrived)."""
    try:
        charts = reply.charts()
    except Exception:
        log.exception("chart for /kpi %s failed", text_in)
        return "The chart could not be drawn this time; the numbers above are complete."
    if not charts:
        return None
    name, png = charts[0]
    about = reply.report.campaign.name if reply.report is not None else text_in
    try:
        client.files_upload_v2(channel=channel_id, file=png,
                               filename=f"{_slug(about)}-{name}.png",
                               title=f"/kpi {text_in}".strip())
    except SlackApiError as exc:
        error = exc.response.get("error", "")
        if error in NO_ACCESS:
            return ("I can't post the chart in this channel (it is private or I am not a "
                    "member). Invite me with `/invite @kpibot`, then ask again; the numbers "
                    "above are complete.")
        log.warning("chart upload failed: %s", error)
        return f"The chart could not be uploaded ({error}); the numbers above are complete."
    return None
