"""What the Slack side runs on: settings from the environment, the Web API and
response_url clients (with retries), one store per worker thread, and ``Deps``, what every
listener gets besides Bolt's arguments."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (ConnectionErrorRetryHandler,
                                                   RateLimitErrorRetryHandler,
                                                   ServerErrorRetryHandler)
from slack_sdk.webhook import WebhookClient

from metrics.store import Store

DEFAULT_API_URL = "https://slack.com/api/"
TIMEOUT_S = 10

# Every Web API method the code calls, and the bot scopes it needs (empty: none).
# manifest.yml must ask for exactly these scopes; tests check both ways.
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "apps.connections.open": (),     # Socket Mode, with the app-level token's connections:write
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),          # an import's progress note
    # a file shared with the bot: its details, then its bytes (url_private_download)
    "files.info": ("files:read",),
    "files.getUploadURLExternal": ("files:write",),
    "files.completeUploadExternal": ("files:write",),
    "users.info": ("users:read",),
    "usergroups.users.list": ("usergroups:read",),
    # a post whose sender died mid-send is looked for before it is sent again (bot.jobs):
    # in public and in private channels
    "conversations.history": ("channels:history", "groups:history"),
    "conversations.replies": ("channels:history", "groups:history"),
}
COMMAND_SCOPE = "commands"
# The events the app subscribes to and the scopes each needs (manifest.yml's
# settings.event_subscriptions.bot_events: tests check both ways).
EVENT_SCOPES: dict[str, tuple[str, ...]] = {
    "message.im": ("im:history",),           # a file dropped into a direct message
    "app_mention": ("app_mentions:read",),   # `@kpibot import` with a file in a channel
}


@dataclass(frozen=True)
class Settings:
    bot_token: str | None = None
    signing_secret: str | None = None
    app_token: str | None = None           # Socket Mode when set
    api_url: str = DEFAULT_API_URL
    admins: frozenset[str] = field(default_factory=frozenset)   # user (U…/W…) or group (S…) ids
    timeout: int = TIMEOUT_S

    @classmethod
    def from_env(cls) -> "Settings":
        admins = frozenset(a.strip() for a in os.environ.get("KPIBOT_ADMINS", "").split(",")
                           if a.strip())
        url = os.environ.get("SLACK_API_URL") or DEFAULT_API_URL
        return cls(bot_token=os.environ.get("SLACK_BOT_TOKEN"),
                   signing_secret=os.environ.get("SLACK_SIGNING_SECRET"),
                   app_token=os.environ.get("SLACK_APP_TOKEN"),
                   api_url=url if url.endswith("/") else url + "/", admins=admins)

    def __repr__(self) -> str:   # never print a secret
        return (f"Settings(api_url={self.api_url!r}, admins={sorted(self.admins)}, "
                f"socket_mode={bool(self.app_token)})")


def retry_handlers() -> list:
    """429 (honouring Retry-After), connection errors and 5xx are retried."""
    return [RateLimitErrorRetryHandler(max_retry_count=3),
            ConnectionErrorRetryHandler(max_retry_count=2),
            ServerErrorRetryHandler(max_retry_count=2)]


def web_client(settings: Settings) -> WebClient:
    return WebClient(token=settings.bot_token, base_url=settings.api_url,
                     timeout=settings.timeout, retry_handlers=retry_handlers())


def webhook(url: str, timeout: int = TIMEOUT_S) -> WebhookClient:
    """A response_url client with the same timeout and retries as the Web API client
    (Bolt's own ``respond`` has neither)."""
    return WebhookClient(url=url, timeout=timeout, retry_handlers=retry_handlers())


class StorePerThread:
    """One Store (SQLite connection) per worker thread, opened on first use."""

    def __init__(self, factory: Callable[[], Store]):
        self.factory = factory
        self.local = threading.local()

    def __call__(self) -> Store:
        store = getattr(self.local, "store", None)
        if store is None:
            store = self.local.store = self.factory()
        return store


@dataclass
class Deps:
    """What listeners get besides Bolt's arguments."""

    settings: Settings
    store: Callable[[], Store]
