"""Token-bucket rate limiting in Redis (lua/rate_limit.lua): several buckets, all or none."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flashsale.engine.results import Code
from flashsale.engine.validation import check_int

if TYPE_CHECKING:
    from flashsale.engine.api import Engine

MAX_RATE = 10**9


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket: `rate_per_s` tokens come back per second, up to `burst`."""

    key: str
    rate_per_s: int
    burst: int


@dataclass(frozen=True, slots=True)
class RateDecision:
    code: Code
    retry_after_ms: int = 0
    bucket: str = ""  # key of the bucket that refused

    @property
    def allowed(self) -> bool:
        return self.code is Code.OK


class RateLimiter:
    """The wrapper of lua/rate_limit.lua; buckets of one call must share a sale (one slot)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def rate_limit(self, buckets: Sequence[Bucket]) -> RateDecision:
        if not buckets:
            return RateDecision(Code.OK)
        args: list[str | int] = [self.engine.offset_ms]
        for bucket in buckets:
            args.append(check_int("rate_per_s", bucket.rate_per_s, 1, MAX_RATE))
            args.append(check_int("burst", bucket.burst, 1, MAX_RATE))
        reply = await self.engine.call(
            self.engine.scripts.rate_limit, [b.key for b in buckets], args
        )
        if reply[0] == "OK":
            return RateDecision(Code.OK)
        return RateDecision(Code.RATE_LIMITED, int(reply[1]), buckets[int(reply[2]) - 1].key)
