"""The one place scheduled jobs are wired to APScheduler (3.x): alert evaluation and
digest delivery on intervals. Job functions live in ``bot.jobs`` and take (store, client,
now)."""
from __future__ import annotations

import datetime as dt
import logging
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
          digest_interval_s: int = DIGEST_INTERVAL_S) -> BackgroundScheduler:
    """A scheduler (not started) with every job. Runs that pile up are merged, never run
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
    return sched
