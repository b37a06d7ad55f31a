"""One log format for the bot, uvicorn and the access log: JSON lines by default when
stdout is not a terminal (a log shipper reads them), text for a person at a terminal.

Incident, delivery and request ids go on a line when known: from `extra=` on the call,
or from the context variables below, set where the work starts (a request, a delivery).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

incident_id: ContextVar[int | None] = ContextVar("incident_id", default=None)
delivery_id: ContextVar[int | None] = ContextVar("delivery_id", default=None)
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

FIELDS = ("incident_id", "delivery_id", "request_id")
# Attributes of the access log's records (set with extra=), written as fields of their own.
ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "client")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    found: dict[str, object] = {}
    for name, var in zip(FIELDS, (incident_id, delivery_id, request_id), strict=True):
        value = getattr(record, name, None)
        if value is None:
            value = var.get()
        if value is not None:
            found[name] = value
    for name in ACCESS_FIELDS:
        if hasattr(record, name):
            found[name] = getattr(record, name)
    webhook = getattr(record, "webhook", None)  # bot/web/http.py log_webhook: JSON fields
    if isinstance(webhook, dict):
        found.update(webhook)
    return found


def _logger(record: logging.LogRecord) -> str:
    # uvicorn logs its start-up and shutdown on "uvicorn.error", which is no error.
    return "uvicorn" if record.name == "uvicorn.error" else record.name


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": _logger(record),
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.name = _logger(record)
        text = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return f"{text} [{extra}]" if extra else text


def resolve_format(given: str) -> str:
    """`auto`: JSON unless stdout is a terminal."""
    if given == "auto":
        return "text" if sys.stdout.isatty() else "json"
    return given


def configure(level: str, fmt: str) -> None:
    """Route every logger (uvicorn's too: they propagate to the root) through one handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if resolve_format(fmt) == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
