"""Files shared with the bot: a file dropped into its direct messages, or shared in a
channel with ``@kpibot import``, is imported (``bot.slack_import``). Bolt acknowledges the
event at once; the work runs after, in its worker threads."""
from __future__ import annotations

from slack_bolt import App
from slack_sdk import WebClient

from .. import slack_import
from ..deps import Deps


def register(app: App, deps: Deps) -> None:
    @app.event({"type": "message", "subtype": "file_share"})
    def file_in_dm(event: dict, client: WebClient) -> None:
        if event.get("channel_type") == "im" and not event.get("bot_id"):
            slack_import.handle(deps, client, event, event.get("text", ""))

    @app.event("app_mention")
    def mention(event: dict, client: WebClient) -> None:
        if event.get("files") and not event.get("bot_id"):
            slack_import.handle(deps, client, event, event.get("text", ""))

    @app.event("message")
    def other_message(event: dict) -> None:
        """Any other message in the bot's direct messages (its own answers among them):
        nothing to do, acknowledged so that Slack does not send it again."""
