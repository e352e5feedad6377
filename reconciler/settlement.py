"""`flashsale settlement --sale S`: the settlement of a sale as a table (or `--json`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints

from flashsale.engine.settings import Settings
from flashsale.store import settlement

_MONEY = (
    ("captured", "captured_minor"),
    ("refunded", "refunded_minor"),
    ("supplier cost", "supplier_cost_minor"),
    ("credits", "credits_minor"),
    ("net", "net_minor"),
    ("planned margin", "planned_margin_minor"),
    ("margin", "margin_minor"),
)


def render(doc: dict[str, Any]) -> str:
    """The settlement document as aligned text, money in minor units."""
    by_status = ", ".join(f"{k} {v}" for k, v in doc["orders"]["by_status"].items())
    units = doc["units"]
    lines = [
        f"sale {doc['sale_id']}: {doc['orders']['total']} orders ({by_status or 'none'})",
        f"units: sold {units['sold']}, cancelled {units['cancelled']}, "
        f"returned {units['returned']}, restocked {units['restocked']}",
        "",
        *(f"{name:<16}{doc[key]:>14}" for name, key in _MONEY),
        "",
        f"{'supplier':<16}{'lines':>8}{'units':>8}{'cost':>14}",
    ]
    lines += [
        f"{s['supplier_id']:<16}{s['lines']:>8}{s['units']:>8}{s['cost_minor']:>14}"
        for s in doc["by_supplier"]
    ]
    lines += ["", f"{'credit':<24}{'sku':<12}{'cause':<12}{'amount':>10}"]
    lines += [
        f"{c['order_id']:<24}{c['sku']:<12}{c['cause']:<12}{c['amount_minor']:>10}"
        for c in doc["credits"]
    ]
    return "\n".join(lines)


async def settlement_main(settings: Settings, args: argparse.Namespace) -> int:
    """0 with the settlement printed; 1 for an unknown sale; 2 when PostgreSQL cannot be asked."""
    try:
        conn = await asyncpg.connect(settings.local_database_url, timeout=10)
        try:
            found = await settlement.exists(conn, args.sale)
            doc = await settlement.settlement(conn, args.sale) if found else None
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"settlement: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if doc is None:
        print(f"settlement: no sale {args.sale}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else render(doc))
    return 0
