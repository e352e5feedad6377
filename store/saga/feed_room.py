"""The room a supplier's newest stock feed level leaves, taken atomically by the allocation step
before it asks the supplier: concurrent orders cannot all count the same units, and a line the
level has no room for goes on to the next supplier without a call.

`allocated_since` (feed_levels) counts units taken since the level was accepted; a newer level
resets it (the supplier's on_hand no longer counts them). A claim is given back when the
supplier refuses or cannot be reached, except for OUT_OF_STOCK, which closes the level's room
(the supplier knows better than its last level) until a newer level comes; a claim lost in a
crash only makes the room smaller (the safe side) until the next level."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

_LEVEL = """
SELECT on_hand - allocated_since AS room, accepted_at FROM feed_levels
WHERE supplier_id = $1 AND sku = $2 FOR UPDATE
"""
_TAKE = """
UPDATE feed_levels SET allocated_since = allocated_since + $3
WHERE supplier_id = $1 AND sku = $2
"""
# Only from the level it was taken from: a newer level has already forgotten the claim.
_GIVE_BACK = """
UPDATE feed_levels SET allocated_since = greatest(0, allocated_since - $3)
WHERE supplier_id = $1 AND sku = $2 AND accepted_at = $4
"""
_CLOSE = """
UPDATE feed_levels SET allocated_since = greatest(on_hand, allocated_since)
WHERE supplier_id = $1 AND sku = $2 AND accepted_at = $3
"""


@dataclass(frozen=True, slots=True)
class RoomClaim:
    supplier_id: str
    sku: str
    qty: int
    level_at: dt.datetime  # accepted_at of the level it was taken from


@dataclass(frozen=True, slots=True)
class RoomAnswer:
    ask: bool  # False: the level has no room for the line (FEED_SHORT)
    claim: RoomClaim | None  # None: the supplier has no feed level for the sku


NO_LEVEL = RoomAnswer(True, None)


class FeedRoom:
    def __init__(self, pool: Any) -> None:
        self._pool = pool  # asyncpg.Pool

    async def claim(self, supplier_id: str, sku: str, qty: int) -> RoomAnswer:
        async with self._pool.acquire() as conn, conn.transaction():
            level = await conn.fetchrow(_LEVEL, supplier_id, sku)
            if level is None:
                return NO_LEVEL
            if level["room"] < qty:
                return RoomAnswer(False, None)
            await conn.execute(_TAKE, supplier_id, sku, qty)
        return RoomAnswer(True, RoomClaim(supplier_id, sku, qty, level["accepted_at"]))

    async def give_back(self, claim: RoomClaim) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(_GIVE_BACK, claim.supplier_id, claim.sku, claim.qty, claim.level_at)

    async def close(self, claim: RoomClaim) -> None:
        """No room left in the level the claim came from (the supplier said OUT_OF_STOCK)."""
        async with self._pool.acquire() as conn:
            await conn.execute(_CLOSE, claim.supplier_id, claim.sku, claim.level_at)
