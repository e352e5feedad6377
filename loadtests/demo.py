"""`flashsale demo`: a flash sale run straight against the engine, then its stock and invariants."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

from engine import Code, Engine, ItemConfig, SaleConfig, Settings, SupplierStockConfig, services
from engine.connection import connect
from engine.invariants import check_sale
from engine.results import ReserveResult, SaleState

SHOPPERS = 3000


def demo_config(sale_id: str) -> SaleConfig:
    def item(sku: str, price: int, primary: int, alternate: int) -> ItemConfig:
        return ItemConfig(
            sku,
            price,
            (
                SupplierStockConfig("acme", primary, price // 2, 0),
                SupplierStockConfig("globex", alternate, price // 2 + 50, 1),
            ),
        )

    return SaleConfig(
        sale_id,
        int(time.time()),
        0,
        0,
        120_000,
        2,
        (item("sneaker-red", 12_900, 150, 100), item("sneaker-blue", 12_900, 80, 40)),
    )


async def _shopper(engine: Engine, sale_id: str, n: int, rng: random.Random) -> tuple[str, str]:
    sku = rng.choice(["sneaker-red", "sneaker-blue"])
    result: ReserveResult = await engine.reserve(
        sale_id, f"shopper-{n}", [(sku, rng.choice([1, 2]))], f"demo-{n}"
    )
    if not result.ok:
        return str(result.code), ""
    roll = rng.random()
    if roll < 0.7:
        return "confirmed", str((await engine.confirm(sale_id, result.hold_id)).code)
    if roll < 0.85:
        return "released", str((await engine.release(sale_id, result.hold_id)).code)
    return "left on hold", str(Code.OK)


def print_state(state: SaleState) -> None:
    print(f"\nsale {state.sale_id}: status {state.status}, open holds {state.open_holds}")
    head = ("sku", "supplier", "loaded", "avail", "resv", "sold")
    print(f"| {head[0]:<13} | {head[1]:<8} | " + " | ".join(f"{h:>6}" for h in head[2:]) + " |")
    print(f"|{'-' * 15}|{'-' * 10}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 8}|")
    for sku in state.skus:
        for s in sku.suppliers:
            print(
                f"| {sku.sku:<13} | {s.supplier:<8} | {s.loaded:>6} | {s.available:>6} | "
                f"{s.reserved:>6} | {s.sold:>6} |"
            )


async def run(settings: Settings) -> int:
    urls = services.up(settings)
    client = connect(urls["FLASHSALE_REDIS_URL"])
    engine = Engine(client, settings)
    sale_id = f"demo-{int(time.time())}"
    await engine.load_sale(demo_config(sale_id))
    await engine.set_status(sale_id, "open")
    print(f"\n{SHOPPERS} shoppers rush sale {sale_id} (370 units over 2 skus, 2 suppliers each)...")
    rng = random.Random(1)
    start = time.perf_counter()
    outcomes = await asyncio.gather(*(_shopper(engine, sale_id, n, rng) for n in range(SHOPPERS)))
    elapsed = time.perf_counter() - start
    print(f"done in {elapsed:.2f} s; outcomes: {dict(Counter(o for o, _ in outcomes))}")
    state = await engine.stock(sale_id)
    assert state is not None
    print_state(state)
    violations = await check_sale(engine, sale_id)
    print("\ninvariants 1, 2, 4:", "hold" if not violations else f"VIOLATED {violations}")
    await client.aclose()
    return 1 if violations else 0
