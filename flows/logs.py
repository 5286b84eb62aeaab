"""Log lines of the ``cityvitals`` and ``flows`` loggers: JSON objects or plain text.

Structured fields go in ``extra``; JSON lines carry them as keys, text lines
append them as ``key=value``:

>>> import io, json
>>> stream = io.StringIO()
>>> setup(LoggingConfig(format="json", level="INFO"), stream)
>>> logging.getLogger("cityvitals.flow").info("partition assigned", extra={"partition": 3})
>>> record = json.loads(stream.getvalue())
>>> record["message"], record["partition"], record["level"]
('partition assigned', 3, 'INFO')
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

from flows.config import LoggingConfig

__all__ = ["LOGGERS", "setup"]

#: The loggers this configures; everything the project logs goes through them.
LOGGERS = ("cityvitals", "flows")

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class _TextFormatter(logging.Formatter):
    """``time level logger message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        return " ".join([line, *(f"{k}={v}" for k, v in extra.items())])


def setup(config: LoggingConfig, stream: TextIO | None = None) -> None:
    """Send the project's loggers to ``stream`` (stderr), formatted and filtered as configured."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if config.format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                json_default=str,
            )
        )
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(config.level)
        logger.propagate = False
