"""Log output: the classic text lines, or one JSON object per line for log pipelines.

With ``log_format = "json"`` every record becomes ``{"time", "level", "logger", "message", …}``
plus the fields a call site passed as ``extra`` (``instance``, ``event_id``, ``action``,
``resource``…), so a pipeline can filter on them without parsing messages.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from listener_core.config import ConfigError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: UTC time, level, logger, message, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def handler(fmt: str) -> logging.Handler:
    """A stderr handler writing ``fmt`` ("text" or "json"); raises ConfigError otherwise."""
    if fmt not in FORMATS:
        raise ConfigError(f"config log_format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    out = logging.StreamHandler()
    out.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return out
