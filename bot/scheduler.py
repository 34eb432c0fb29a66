"""The one place scheduled jobs are wired to APScheduler (3.x): alert evaluation and
digest delivery on intervals. Job functions live in ``bot.jobs`` and take (store, client,
now)."""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from slack_sdk import WebClient

from metrics.store import Store

from . import jobs

log = logging.getLogger(__name__)
ALERT_INTERVAL_S = 60
DIGEST_INTERVAL_S = 30


def _job(name: str, run: Callable) -> Callable:
    """A scheduled job: its own Store for the run, errors logged (the next run retries)."""
    def job(store_factory: Callable[[], Store], client: WebClient) -> None:
        store = store_factory()
        try:
            sent = run(store, client, int(time.time()))
            if sent:
                log.info("%s: %d post(s) sent", name, sent)
        except Exception:
            log.exception("%s failed; the next run tries again", name)
        finally:
            store.close()
    return job


_alerts_job = _job("alerts", jobs.check_alerts)
_digests_job = _job("digests", jobs.run_digests)


def build(store_factory: Callable[[], Store], client: WebClient,
          alert_interval_s: int = ALERT_INTERVAL_S,
          digest_interval_s: int = DIGEST_INTERVAL_S,
          twilio: tuple[str, str] | None = None,
          wake: Callable[[], None] | None = None) -> BackgroundScheduler:
    """A scheduler (not started) with every job; with Twilio credentials (account SID,
    auth token), the hourly sync too. Runs that pile up are merged, never run
    twice at once; a second bot on the same database is kept in step by the database."""
    sched = BackgroundScheduler(timezone=dt.timezone.utc, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 300})
    sched.add_job(_alerts_job, "interval", seconds=alert_interval_s, id="alerts",
                  args=[store_factory, client], next_run_time=dt.datetime.now(dt.timezone.utc))
    # Digests: each subscription's cron schedule, in its own zone, is read from the
    # database on every tick (bot.jobs.last_fire), so new, removed and missed digests need
    # no rescheduling and a second bot claims nothing twice.
    sched.add_job(_digests_job, "interval", seconds=digest_interval_s, id="digests",
                  args=[store_factory, client], next_run_time=dt.datetime.now(dt.timezone.utc))
    if twilio:
        sched.add_job(_sync_job, "interval", seconds=SYNC_INTERVAL_S, id="twilio-sync",
                      args=[store_factory, twilio, wake],
                      next_run_time=dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1))
    return sched


SYNC_INTERVAL_S = 3600
SYNC_OVERLAP_S = 2 * 3600      # each hourly run reads back this far before the last one
SYNC_FIRST_S = 48 * 3600


def _sync_job(store_factory: Callable[[], Store], twilio: tuple[str, str],
              wake: Callable[[], None] | None) -> None:
    """The hourly reconciliation with Twilio (``kpibot sync twilio`` on a schedule): from
    a little before the last run (48 hours back the first time); the records go to the
    inbox, which the applier thread applies."""
    from metrics.live.sync import SYNC_SETTING, SyncError, sync_twilio, twilio_client
    store = store_factory()
    try:
        last = store.get_setting(SYNC_SETTING)
        start = int(last) - SYNC_OVERLAP_S if last else int(time.time()) - SYNC_FIRST_S
        result = sync_twilio(store, twilio_client(*twilio),
                             dt.datetime.fromtimestamp(start, dt.timezone.utc))
        log.info("twilio-sync: %s", result.summary())
        if wake:
            wake()
    except SyncError as exc:
        log.warning("twilio-sync: %s; the next run tries again", exc)
    except Exception:
        log.exception("twilio-sync failed; the next run tries again")
    finally:
        store.close()


NUDGE_EVERY_S = 15
# A check counts whole seconds up to the one it starts in, that one excluded (alerts
# measure [now - window, now)): events applied this second are seen by a check that
# starts in the next one.
NUDGE_DELAY_S = 1.0


def nudge_alerts(sched: BackgroundScheduler) -> None:
    """Live events changed some campaigns: have the alert rules checked soon rather than
    at the next tick, so an opt-out spike posts while it happens.

    A nudge makes sure a check starts after it, in a later second (a check measures up to
    the second it starts in, that one excluded): a check that is asked for and starts in
    a later second than now sees these events too, so nothing more is asked; otherwise a
    check is asked for NUDGE_DELAY_S from now, or NUDGE_EVERY_S after the last one asked
    for (at most one every NUDGE_EVERY_S). Moving the regular job instead lost nudges:
    one that came while that job was due, or running, was taken as already served, and
    the events it carried waited for the next tick."""
    state = getattr(sched, "_kpibot_nudge", None)
    if state is None:
        state = sched._kpibot_nudge = {"lock": threading.Lock(), "asked": None,
                                       "last": float("-inf")}
    now = time.time()
    with state["lock"]:
        asked = state["asked"]
        if asked is not None and int(asked) > int(now):
            return
        at = max(now + NUDGE_DELAY_S, state["last"] + NUDGE_EVERY_S)
        state["last"] = state["asked"] = at
    try:
        regular = sched.get_job("alerts")
        sched.add_job(_nudged_alerts_job, "date", id="alerts-nudge", replace_existing=True,
                      run_date=dt.datetime.fromtimestamp(at, dt.timezone.utc),
                      args=[state, *regular.args], max_instances=2)
    except Exception:      # stopping: nothing to nudge
        with state["lock"]:
            state["asked"] = None
        log.debug("alerts not nudged", exc_info=True)


def _nudged_alerts_job(state: dict, store_factory: Callable[[], Store],
                       client: WebClient) -> None:
    with state["lock"]:
        state["asked"] = None         # events from now on need a check after this one
    _alerts_job(store_factory, client)
