"""Every key a script touches maps to the sale's one cluster slot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.commands.core import AsyncScript
from redis.crc import key_slot

from flashsale.engine import Engine, keys
from flashsale.engine.connection import RedisClient
from flashsale.engine.feeds import FeedRef, FeedRow
from flashsale.engine.settings import Settings
from tests.helpers import open_sale, sale_config, snapshot


class RecordingEngine(Engine):
    """Remembers the KEYS of every script call it makes."""

    calls: list[tuple[str, list[str]]]

    async def _run(self, script: AsyncScript, keys_: Sequence[str], args: Sequence[Any]) -> Any:
        self.calls.append((script.sha, list(keys_)))
        return await super()._run(script, keys_, args)


def test_key_builders_share_the_sale_slot() -> None:
    sale = "summer-drop"
    built = [
        keys.sale(sale),
        keys.skus(sale),
        keys.stock(sale, "A"),
        keys.holds(sale),
        keys.hold(sale, "h1"),
        keys.user(sale, "c1"),
        keys.idem(sale, "c1", "k"),
        keys.events(sale),
    ]
    assert {key_slot(k.encode()) for k in built} == {key_slot(b"{summer-drop}")}


async def test_every_script_call_stays_in_one_slot(
    redis_client: RedisClient, settings: Settings, sale_id: str
) -> None:
    engine = RecordingEngine(redis_client, settings)
    engine.calls = []
    await open_sale(engine, sale_config(sale_id, {"A": [("p", 5)], "B": [("p", 5), ("q", 5)]}))
    held = await engine.reserve(sale_id, "c1", [("A", 1), ("B", 2)], "idem-1")
    other = await engine.reserve(sale_id, "c2", [("B", 1)])
    await engine.confirm(sale_id, held.hold_id, "pay")
    await engine.extend(sale_id, other.hold_id)
    await engine.release(sale_id, other.hold_id)
    await engine.compensate(sale_id, held.hold_id, "declined")
    await engine.adjust(sale_id, "A", "p", -1)
    rows = [FeedRow("A", "p", 2, 0), FeedRow("B", "q", 1, 0)]
    await engine.apply_feed(sale_id, rows, FeedRef("webhook", "d1", 0))
    await engine.sweep(sale_id)
    await engine.stock(sale_id)
    assert len(engine.calls) == 12
    slot = key_slot(f"{{{sale_id}}}".encode())
    for script, script_keys in engine.calls:
        assert {key_slot(k.encode()) for k in script_keys} == {slot}, script
    # Keys the scripts build from the prefix (expired holds, a hold's stock) land there too.
    written = await snapshot(redis_client, sale_id)
    assert len(written) >= 8
    assert {key_slot(k.encode()) for k in written} == {slot}
