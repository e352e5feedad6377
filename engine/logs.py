"""Structured logs: one JSON object a line, naming the request, sale, hold and order in hand.

Every part logs through the stdlib `logging`; `setup` (or `uvicorn_config`, for the gateway's
workers) sends the records to stderr through `JsonFormatter`. The request's id, sale, hold and
order live in context variables: set once where a request or a saga step starts (`bind`), they
are on every line logged while it runs, and the engine writes the request id on its stream
events (the `rid` field of lua/_shared.lua `emit`).

A line: {"time": "2024-05-01T12:00:00.123Z", "level": "info", "event": "saga.step",
"message": "...", "request_id": "...", "sale": "...", "order": "...", ...extra fields}.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

import orjson

# What a client may send as X-Request-Id; anything else is replaced by a generated id.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

request_id: ContextVar[str] = ContextVar("flashsale_request_id", default="")
sale: ContextVar[str] = ContextVar("flashsale_sale", default="")
hold: ContextVar[str] = ContextVar("flashsale_hold", default="")
order: ContextVar[str] = ContextVar("flashsale_order", default="")
_CONTEXT = (("request_id", request_id), ("sale", sale), ("hold", hold), ("order", order))

# A record's own attributes; anything else on it came in through `extra=` and is a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "event",
}


def iso_utc(epoch_s: float) -> str:
    """ISO-8601 UTC with milliseconds and a Z."""
    whole = int(epoch_s)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        + f".{int((epoch_s - whole) * 1000):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time, level, event (the `event` extra, else the logger's
    name), message, the context's ids that are set, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": iso_utc(record.created),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", record.name),
            "message": record.getMessage(),
        }
        for name, var in _CONTEXT:
            value = var.get()
            if value:
                doc[name] = value
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES:
                doc[name] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup(level: str = "info", stream: TextIO | None = None) -> None:
    """The process's log: JSON lines on stderr from every logger, at `level` and above."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def uvicorn_config(level: str) -> dict[str, Any]:
    """`log_config` of `flashsale serve`: uvicorn applies it in each worker process, so its own
    lines and the app's are JSON too. uvicorn's access log stays off (the gateway writes its own,
    FLASHSALE_ACCESS_LOG)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "flashsale.engine.logs.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
    }


@contextmanager
def bind(
    *, request: str = "", sale_id: str = "", hold_id: str = "", order_id: str = ""
) -> Iterator[None]:
    """The ids given (non-empty) are on every line logged, and the request id on every stream
    event written, until the block ends."""
    tokens = [
        (var, var.set(value))
        for var, value in (
            (request_id, request),
            (sale, sale_id),
            (hold, hold_id),
            (order, order_id),
        )
        if value
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
