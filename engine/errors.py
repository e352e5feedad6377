"""The engine's two exception types, broken infrastructure and bad input, and the one place that
turns a Redis failure into the first."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError


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


@contextmanager
def redis_errors() -> Iterator[None]:
    """Redis calls made inside raise EngineUnavailable (from the RedisError) instead."""
    try:
        yield
    except RedisError as exc:
        raise EngineUnavailable(f"redis call failed: {exc}") from exc
