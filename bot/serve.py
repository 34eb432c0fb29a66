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
from .live import ApplierProcess, LiveWorker
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


# Request threads of the server. Slack's listeners run in Bolt's own pool after the
# acknowledgement, and a webhook needs the interpreter for all but its commit: more
# threads only take turns on it. With 4, callbacks at 1,000/s were answered with a p99
# 1.2-10x lower than with 8, in each of three runs (bench/bench_webhooks.py).
THREADS = 4


def wsgi_app(settings: Settings, store_factory: Callable[[], Store], client=None,
             live: LiveSettings | None = None, wake: Callable[[], None] | None = None,
             app=None):
    """Slack's /slack/events and the live-data paths (``bot.webhooks``) on one WSGI app."""
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    slack = SlackRequestHandler(app or create_app(settings, store_factory, client), path=PATH)
    return Webhooks(live or LiveSettings.from_env(), StorePerThread(store_factory),
                    fallback=slack, wake=wake)


def http_server(settings: Settings, store_factory: Callable[[], Store], host: str, port: int,
                threads: int = THREADS, client=None, live: LiveSettings | None = None,
                wake: Callable[[], None] | None = None, app=None):
    """A waitress server (not yet running); ``port=0`` picks a free port."""
    from waitress.server import create_server
    return create_server(wsgi_app(settings, store_factory, client, live, wake, app), host=host,
                         port=port, threads=threads, ident="kpibot")


def webhook_server(live: LiveSettings, store_factory: Callable[[], Store], host: str, port: int,
                   threads: int = THREADS, wake: Callable[[], None] | None = None):
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

    # The first chart imports matplotlib: half a second that holds the interpreter, and
    # every acknowledgement with it. Made now, before the port opens, not in the first
    # digest or alert while callbacks arrive.
    import importlib
    for module in ("metrics.charts", "metrics.engine"):
        importlib.import_module(module)
    from .logs import quiet_queue_warnings
    quiet_queue_warnings()
    from .scheduler import build, nudge_alerts
    live = LiveSettings.from_env()
    holder: dict = {}
    on_applied = lambda campaigns: nudge_alerts(holder["scheduler"])  # noqa: E731
    db = _file_of(store_factory)
    # the applier in a process of its own (a file to share), else a thread of this one
    worker = ApplierProcess(db, on_applied) if db else LiveWorker(store_factory, on_applied)
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
                                 handler.close(), worker.stop()))
        Background(server).thread.start()
        log.info("kpibot: live data on http://%s:%s (Slack through Socket Mode)", host,
                 server.effective_port)
        handler.start()
        return
    stop_on_signals(lambda: (scheduler.shutdown(wait=False), server.close(), worker.stop()))
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


def _file_of(store_factory: Callable[[], Store]) -> str | None:
    """The database file the stores of ``store_factory`` open (None: in memory)."""
    store = store_factory()
    try:
        return None if str(store.path) == ":memory:" else str(store.path.resolve())
    finally:
        store.close()


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
