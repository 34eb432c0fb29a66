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
