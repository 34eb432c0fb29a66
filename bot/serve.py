"""`kpibot serve`: Socket Mode when SLACK_APP_TOKEN is set, otherwise HTTP on
/slack/events behind waitress (a production WSGI server, not Bolt's development one)."""
from __future__ import annotations

import logging
import time
from typing import Callable

from metrics.errors import KpiBotError
from metrics.store import Store

from .app import create_app
from .deps import Settings

log = logging.getLogger("kpibot")
PATH = "/slack/events"


class ServeError(KpiBotError):
    pass


def check(settings: Settings) -> None:
    """Say what is missing before anything starts."""
    missing = []
    if not settings.bot_token:
        missing.append("SLACK_BOT_TOKEN (the app's Bot User OAuth Token, xoxb-...)")
    if not settings.app_token and not settings.signing_secret:
        missing.append("SLACK_SIGNING_SECRET (Basic Information > App Credentials), or "
                       "SLACK_APP_TOKEN (xapp-...) for Socket Mode")
    if missing:
        raise ServeError("kpibot serve needs " + " and ".join(missing) + ".")


def wsgi_app(settings: Settings, store_factory: Callable[[], Store], client=None):
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    return SlackRequestHandler(create_app(settings, store_factory, client), path=PATH)


def http_server(settings: Settings, store_factory: Callable[[], Store], host: str, port: int,
                threads: int = 8, client=None):
    """A waitress server (not yet running); ``port=0`` picks a free port."""
    from waitress.server import create_server
    return create_server(wsgi_app(settings, store_factory, client), host=host, port=port,
                         threads=threads, ident="kpibot")


def serve(settings: Settings, store_factory: Callable[[], Store], host: str, port: int) -> None:
    check(settings)
    try:
        app = create_app(settings, store_factory)     # checks the token with auth.test
    except Exception as exc:
        raise ServeError(f"Slack did not accept the bot token at {settings.api_url} ({exc}); "
                         "check SLACK_BOT_TOKEN and SLACK_API_URL.") from None
    from .scheduler import build
    scheduler = build(store_factory, app.client)
    scheduler.start()
    log.info("kpibot: alert checks every %s s", int(scheduler.get_job("alerts").trigger
                                                  .interval.total_seconds()))
    if settings.app_token:
        from slack_bolt.adapter.socket_mode import SocketModeHandler
        log.info("kpibot: connecting to Slack in Socket Mode")
        handler = SocketModeHandler(app, settings.app_token)
        stop_on_signals(lambda: (scheduler.shutdown(wait=False), handler.close()))
        handler.start()
        return
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    from waitress.server import create_server
    server = create_server(SlackRequestHandler(app, path=PATH), host=host, port=port, threads=8,
                           ident="kpibot")
    stop_on_signals(lambda: (scheduler.shutdown(wait=False), server.close()))
    log.info("kpibot: listening on http://%s:%s%s", host, server.effective_port, PATH)
    try:
        server.run()
    except (OSError, ValueError):   # the socket closed under select() while stopping
        pass


STOP_GRACE_S = 3.0


def stop_on_signals(close: Callable[[], object]) -> None:
    """SIGTERM and SIGINT stop the bot promptly, even while a request is being worked on:
    no new requests are taken, the scheduler stops, work in flight gets ``STOP_GRACE_S``
    to finish, then the process ends. Nothing acknowledged is lost by this: every write
    is a transaction that either committed or leaves nothing behind."""
    import os
    import signal
    import threading

    def stop(signum, frame) -> None:
        log.info("kpibot: stopping (signal %s)", signum)

        def finish() -> None:
            try:
                close()
            except Exception:
                log.exception("while stopping")
            deadline = time.monotonic() + STOP_GRACE_S
            for t in threading.enumerate():
                if t is not threading.current_thread() and not t.daemon and t.is_alive():
                    t.join(max(0.0, deadline - time.monotonic()))
            logging.shutdown()
            os._exit(0)
        threading.Thread(target=finish, name="kpibot-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


class Background:
    """An HTTP server run in a thread (tests, benchmarks): ``with Background(server):``."""

    def __init__(self, server):
        import threading
        self.server = server
        self.closing = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.server.run()
        except (OSError, ValueError):   # the socket closed under select() while stopping
            if not self.closing:
                raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.effective_port}{PATH}"

    def __enter__(self) -> "Background":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing = True
        self.server.close()
        self.thread.join(timeout=5)
