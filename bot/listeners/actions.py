"""Buttons: "Share in channel" on `/kpi` replies; "Snooze 1 day" and "Mute rule" on
alert posts (admins only, like every change)."""
from __future__ import annotations

import re
import time

from slack_bolt import Ack, App
from slack_sdk import WebClient

from metrics import alerts

from .. import blocks, mrkdwn
from ..blocks import MUTE_ACTION, SHARE_ACTION, SNOOZE_ACTION
from ..command import STATE_CHANGING, Context, run
from ..deps import Deps, webhook
from ..permissions import is_admin
from .commands import head

_SNOOZE_VALUE = re.compile(r"([0-9]{1,15}):([0-9]{1,15})")
_MUTE_VALUE = re.compile(r"[0-9]{1,15}")


def register(app: App, deps: Deps) -> None:
    @app.action(SHARE_ACTION)
    def share(ack: Ack, body: dict) -> None:
        ack()
        _share(deps, body)

    @app.action(SNOOZE_ACTION)
    def snooze(ack: Ack, body: dict, client: WebClient) -> None:
        ack()
        _alert_button(deps, body, client, "snooze")

    @app.action(MUTE_ACTION)
    def mute(ack: Ack, body: dict, client: WebClient) -> None:
        ack()
        _alert_button(deps, body, client, "mute")


def _share(deps: Deps, body: dict) -> None:
    """Post the card in the channel for everyone. Only answers that read (a card, a
    comparison, a list) are shared; a command that changes settings, or any answer that
    is an error, stays with the person who pressed the button."""
    command = str(body["actions"][0].get("value", ""))
    user = body.get("user", {}).get("id", "")
    send = webhook(body["response_url"], deps.settings.timeout)
    if head(command) in STATE_CHANGING:
        send.send(text="Only answers can be shared, not changes to settings.",
                  response_type="ephemeral", replace_original=False)
        return
    reply = run(command, Context(deps.store(), user=user, is_admin=False))
    msg = blocks.message(reply, command, share=False)
    if not reply.ok:
        send.send(response_type="ephemeral", replace_original=False, **msg)
        return
    msg.setdefault("blocks", []).append(blocks.shared_by(user, command))
    posted = send.send(response_type="in_channel", replace_original=False, **msg)
    if posted.status_code == 200:
        send.send(delete_original=True)   # the private copy is no longer needed
    else:
        send.send(text="The card could not be shared in this channel "
                  f"({posted.status_code} {mrkdwn.cut(mrkdwn.escape(posted.body), 100)}).",
                  response_type="ephemeral", replace_original=False)


def _alert_button(deps: Deps, body: dict, client: WebClient, what: str) -> None:
    user = body.get("user", {}).get("id", "")
    send = webhook(body["response_url"], deps.settings.timeout)
    if not is_admin(client, deps.settings.admins, user):
        send.send(text="Only admins can snooze or mute alerts (see KPIBOT_ADMINS).",
                  response_type="ephemeral", replace_original=False)
        return
    value = str(body["actions"][0].get("value", ""))
    store = deps.store()
    try:
        if what == "snooze":
            m = _SNOOZE_VALUE.fullmatch(value)
            if m is None:
                raise ValueError
            rule_id, campaign_id = int(m.group(1)), int(m.group(2))
            alerts.snooze(store, rule_id, int(time.time()) + 86400, campaign_id=campaign_id)
            text = f"{mrkdwn.user(user)} snoozed alert #{rule_id} for this campaign for a day."
        else:
            if not _MUTE_VALUE.fullmatch(value):
                raise ValueError
            rule_id = int(value)
            alerts.mute(store, rule_id)
            text = (f"{mrkdwn.user(user)} muted alert #{rule_id}; it posts nothing until it is "
                    "added again.")
    except ValueError:
        text = ("That button does not name an alert any more; use `/kpi alert list` and "
                "`/kpi alert snooze <id> <duration>` instead.")
    except alerts.AlertError as exc:
        text = f"That alert cannot be changed: {mrkdwn.escape(str(exc))}"
    send.send(text=text, response_type="ephemeral", replace_original=False)
