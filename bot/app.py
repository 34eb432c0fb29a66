"""The Slack app: an app factory that registers the listener modules (``bot.listeners``),
as Bolt's starter template does; nothing else.

    app = create_app(Settings.from_env(), store_factory=lambda: Store.open(db))

Everything the listeners need is passed in (``bot.deps``), so tests run the real app
against a local server that plays Slack's Web API.
"""
from __future__ import annotations

from typing import Callable

from slack_bolt import App
from slack_sdk import WebClient

from metrics.store import Store

from . import listeners
from .deps import Deps, Settings, StorePerThread, web_client
from .logs import install_redaction


def create_app(settings: Settings, store_factory: Callable[[], Store],
               client: WebClient | None = None) -> App:
    """A Bolt app with every listener registered. Requests with a bad or stale
    signature are refused by Bolt's request verification before any listener runs."""
    install_redaction()
    # the client carries the bot token (Bolt takes it from there)
    app = App(signing_secret=settings.signing_secret, client=client or web_client(settings),
              name="kpibot")
    listeners.register(app, Deps(settings, StorePerThread(store_factory)))
    return app
