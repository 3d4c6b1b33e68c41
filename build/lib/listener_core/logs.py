"""Log output: the classic text lines, or one JSON object per line for log pipelines.

With ``log_format = "json"`` every record becomes ``{"time", "level", "logger", "message", …}``
plus the fields a call site passed as ``extra`` (``instance``, ``event_id``, ``action``,
``resource``…), so a pipeline can filter on them without parsing messages.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from listener_core.config import ConfigError

FORMATS = ("text", "json")
#: Client libraries (of the bundled plugins) that log request URLs or connection strings, which
#: may carry credentials: httpx logs every request URL at INFO ("HTTP Request: POST …?token=…").
#: Held at WARNING whatever ``log_level`` says.
QUIET_LIBRARIES = ("httpx", "httpcore", "aiokafka", "aio_pika", "aiormq", "nats", "redis")
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)[^\s/@]+@")
_URL_QUERY = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s?#\"']+)\?[^\s\"'#]+")
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


def redact(text: str) -> str:
    """``text`` with URL passwords and query strings replaced by ``***``."""
    return _URL_QUERY.sub(r"\1?***", _URL_PASSWORD.sub(r"\1***@", text))


class RedactUrls(logging.Filter):
    """Takes credentials out of URLs in every record a handler writes: a last line of defence
    for messages (a library's, a plugin's) that name a URL with a token or password in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def quiet_libraries() -> None:
    """Holds :data:`QUIET_LIBRARIES` at WARNING (they may log credentials at INFO and DEBUG)."""
    for name in QUIET_LIBRARIES:
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))


def handler(fmt: str) -> logging.Handler:
    """A stderr handler writing ``fmt`` ("text" or "json"); raises ConfigError otherwise."""
    if fmt not in FORMATS:
        raise ConfigError(f"config log_format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    out = logging.StreamHandler()
    out.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    out.addFilter(RedactUrls())
    return out
