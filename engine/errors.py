"""The engine's two exception types: broken infrastructure and bad input. (Turning a Redis
failure into the first happens in one place, engine/connection.py's `redis_errors`.)"""

from __future__ import annotations


class FlashsaleError(Exception):
    """Base of every exception the project raises on purpose."""


class EngineUnavailable(FlashsaleError):
    """Redis could not be reached or answered with an error; always raised `from` the cause."""


class InvalidInput(FlashsaleError, ValueError):
    """A caller passed a value the engine refuses before touching Redis."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
