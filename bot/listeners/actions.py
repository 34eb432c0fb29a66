"""Buttons on `/kpi` replies: "Share in channel" posts the card for everyone."""
from __future__ import annotations

from slack_bolt import Ack, App

from ..app import webhook
from ..blocks import SHARE_ACTION, message
from ..command import Context, run


def register(app: App, deps) -> None:
    @app.action(SHARE_ACTION)
    def share(ack: Ack, body: dict) -> None:
        ack()
        command = body["actions"][0].get("value", "")
        user = body.get("user", {}).get("id", "")
        reply = run(command, Context(deps.store(), user=user, is_admin=False))
        send = webhook(body["response_url"], deps.settings.timeout)
        msg = message(reply, command, share=False)
        msg["blocks"].append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"shared by <@{user}> · `/kpi {command}`"}]})
        send.send(response_type="in_channel", replace_original=False, **msg)
        send.send(delete_original=True)   # the private copy is no longer needed
