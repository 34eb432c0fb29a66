"""Logging: tokens never reach a log, whatever library wrote the record."""
from __future__ import annotations

import logging
import re

_SECRET = re.compile(r"xox[a-z]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+|"
                     r"(?i:(authorization|token|client_secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',&]+")


class RedactSecrets(logging.Filter):
    """Tokens never reach a log: Slack tokens and bearer values are masked in every
    record, whatever library wrote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = _SECRET.sub(lambda m: (m.group(1) or "") + "[redacted]" if m.group(1)
                            else "[redacted]", msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


def install_redaction() -> None:
    flt = RedactSecrets()
    root = logging.getLogger()
    if not any(isinstance(f, RedactSecrets) for f in root.filters):
        root.addFilter(flt)
    for handler in root.handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(flt)
    for name in ("slack_bolt", "slack_sdk", "slack_bolt.App", "waitress"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in lg.filters):
            lg.addFilter(flt)


class AtMostEvery(logging.Filter):
    """One record per ``seconds`` from a chatty logger, saying how many were left out.

    waitress warns "Task queue depth is N" for every request that finds all its threads
    busy: a burst of callbacks wrote thousands of lines, and formatting them cost the
    requests behind them the time they were short of (bench/bench_webhooks.py)."""

    def __init__(self, seconds: float, clock=None):
        super().__init__()
        import time
        self.seconds, self.clock = seconds, clock or time.monotonic
        self._last = float("-inf")
        self._left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        if now - self._last < self.seconds:
            self._left_out += 1
            return False
        if self._left_out:
            record.msg = f"{record.getMessage()} ({self._left_out:,} more such in the last " \
                         f"{now - self._last:.0f} s)"
            record.args = ()
        self._last, self._left_out = now, 0
        return True


def quiet_queue_warnings(seconds: float = 60.0) -> None:
    """waitress's queue-depth warnings: at most one a minute (see AtMostEvery)."""
    lg = logging.getLogger("waitress.queue")
    if not any(isinstance(f, AtMostEvery) for f in lg.filters):
        lg.addFilter(AtMostEvery(seconds))
