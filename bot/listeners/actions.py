"""Buttons: "Share in channel" on `/kpi` replies; "Snooze 1 day" and "Mute rule" on
alert posts (admins only, like every change)."""
from __future__ import annotations

import time

from slack_bolt import Ack, App
from slack_sdk import WebClient

from metrics import alerts

from ..app import webhook
from ..blocks import SHARE_ACTION, message
from ..command import Context, run
from ..jobs import MUTE_ACTION, SNOOZE_ACTION
from .commands import is_admin


def register(app: App, deps) -> None:
    @app.action(SHARE_ACTION)
    def share(ack: Ack, body: dict) -> None:
        ack()
        command = body["actions"][0].get("value", "")
        user = body.get("user", {}).get("id", "")
        reply = run(command, Context(deps.store(), user=user, is_admin=False))
        send = webhook(body["response_url"], deps.settings.timeout)
        msg = message(reply, command, share=False)
        shown = command if len(command) < 1900 else command[:1899] + "…"
        shown = shown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        msg.setdefault("blocks", []).append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"shared by <@{user}> · `/kpi {shown}`"}]})
        posted = send.send(response_type="in_channel", replace_original=False, **msg)
        if posted.status_code == 200:
            send.send(delete_original=True)   # the private copy is no longer needed
        else:
            send.send(text="The card could not be shared in this channel "
                      f"({posted.status_code} {posted.body[:100]}).", response_type="ephemeral",
                      replace_original=False)

    @app.action(SNOOZE_ACTION)
    def snooze(ack: Ack, body: dict, client: WebClient) -> None:
        ack()
        _alert_button(deps, body, client, "snooze")

    @app.action(MUTE_ACTION)
    def mute(ack: Ack, body: dict, client: WebClient) -> None:
        ack()
        _alert_button(deps, body, client, "mute")


def _alert_button(deps, body: dict, client: WebClient, what: str) -> None:
    user = body.get("user", {}).get("id", "")
    send = webhook(body["response_url"], deps.settings.timeout)
    if not is_admin(client, deps.settings.admins, user):
        send.send(text="Only admins can snooze or mute alerts (see KPIBOT_ADMINS).",
                  response_type="ephemeral", replace_original=False)
        return
    value = body["actions"][0].get("value", "")
    store = deps.store()
    try:
        if what == "snooze":
            rule_id, campaign_id = (int(x) for x in value.split(":"))
            alerts.snooze(store, rule_id, int(time.time()) + 86400, campaign_id=campaign_id)
            text = f"<@{user}> snoozed alert #{rule_id} for this campaign for a day."
        else:
            rule_id = int(value)
            alerts.mute(store, rule_id)
            text = (f"<@{user}> muted alert #{rule_id}; it posts nothing until it is "
                    "added again.")
    except (ValueError, alerts.AlertError) as exc:
        text = f"That alert cannot be changed: {exc}"
    send.send(text=text, response_type="ephemeral", replace_original=False)
