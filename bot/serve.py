"""`kpibot serve`: Socket Mode when SLACK_APP_TOKEN is set, otherwise HTTP on
/slack/events behind waitress (a production WSGI server, not Bolt's development one)."""
from __future__ import annotations

import logging
import time
from typing import Callable

from metrics.errors import KpiBotError
from metrics.store import Store

from .app import create_app
from .deps import Settings, StorePerThread
from .live import LiveWorker
from .webhooks import LiveSettings, Webhooks

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


def wsgi_app(settings: Settings, store_factory: Callable[[], Store], client=None,
             live: LiveSettings | None = None, wake: Callable[[], None] | None = None,
             app=None):
    """Slack's /slack/events and the live-data paths (``bot.webhooks``) on one WSGI app."""
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    slack = SlackRequestHandler(app or create_app(settings, store_factory, client), path=PATH)
    return Webhooks(live or LiveSettings.from_env(), StorePerThread(store_factory),
                    fallback=slack, wake=wake)


def http_server(settings: Settings, store_factory: Callable[[], Store], host: str, port: int,
                threads: int = 8, client=None, live: LiveSettings | None = None,
                wake: Callable[[], None] | None = None, app=None):
    """A waitress server (not yet running); ``port=0`` picks a free port."""
    from waitress.server import create_server
    return create_server(wsgi_app(settings, store_factory, client, live, wake, app), host=host,
                         port=port, threads=threads, ident="kpibot")


def webhook_server(live: LiveSettings, store_factory: Callable[[], Store], host: str, port: int,
                   threads: int = 8, wake: Callable[[], None] | None = None):
    """The live-data paths alone (Socket Mode, where Slack needs no port)."""
    from waitress.server import create_server
    return create_server(Webhooks(live, StorePerThread(store_factory), wake=wake), host=host,
                         port=port, threads=threads, ident="kpibot")


def serve(settings: Settings, store_factory: Callable[[], Store], host: str, port: int) -> None:
    check(settings)
    try:
        app = create_app(settings, store_factory)     # checks the token with auth.test
    except Exception as exc:
        raise ServeError(f"Slack did not accept the bot token at {settings.api_url} ({exc}); "
                         "check SLACK_BOT_TOKEN and SLACK_API_URL.") from None
    import os
    import sys

    # Threads take turns on the interpreter every 5 ms by default: an acknowledgement that
    # needs it a few times waited tens of milliseconds behind the applier; 1 ms keeps the
    # acknowledgements quick (measured: bench/bench_webhooks.py)
    sys.setswitchinterval(0.001)
    from .scheduler import build, nudge_alerts
    live = LiveSettings.from_env()
    holder: dict = {}
    worker = LiveWorker(store_factory,
                        on_applied=lambda campaigns: nudge_alerts(holder["scheduler"]))
    try:
        if settings.app_token:      # Slack through Socket Mode: the port has the live paths
            server = webhook_server(live, store_factory, host, port, wake=worker.wake)
        else:
            server = http_server(settings, store_factory, host, port, live=live,
                                 wake=worker.wake, app=app)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose "
                         "another port with --port (or PORT)") from None
    account = os.environ.get("TWILIO_ACCOUNT_SID")
    twilio = (account, live.twilio_token) if account and live.twilio_token else None
    scheduler = holder["scheduler"] = build(store_factory, app.client, twilio=twilio,
                                            wake=worker.wake)
    scheduler.start()
    worker.start()
    log.info("kpibot: alert checks every %s s", int(scheduler.get_job("alerts").trigger
                                                  .interval.total_seconds()))
    _log_live(live)
    log.info("kpibot: hourly Twilio sync %s", "on" if twilio else
             "off (needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)")
    if settings.app_token:
        from slack_bolt.adapter.socket_mode import SocketModeHandler
        log.info("kpibot: connecting to Slack in Socket Mode")
        handler = SocketModeHandler(app, settings.app_token)
        stop_on_signals(lambda: (scheduler.shutdown(wait=False), server.close(),
                                 handler.close()))
        Background(server).thread.start()
        log.info("kpibot: live data on http://%s:%s (Slack through Socket Mode)", host,
                 server.effective_port)
        handler.start()
        return
    stop_on_signals(lambda: (scheduler.shutdown(wait=False), server.close()))
    log.info("kpibot: listening on http://%s:%s%s", host, server.effective_port, PATH)
    try:
        server.run()
    except (OSError, ValueError):   # the socket closed under select() while stopping
        pass


def _log_live(live: LiveSettings) -> None:
    if live.twilio_token:
        where = live.public_url or "the Host header of each request (set KPIBOT_PUBLIC_URL)"
        log.info("kpibot: Twilio webhooks on /twilio/..., signatures checked against %s", where)
    else:
        log.info("kpibot: Twilio webhooks off (no TWILIO_AUTH_TOKEN)")
    log.info("kpibot: /ingest %s", "on" if live.ingest_token else "off (no KPIBOT_INGEST_TOKEN)")


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
