"""`flashsale verify-draw`: recomputes a sale's pre-queue draw from its public fairness receipt.

Written again from docs/waiting-room.md ("Fair order", "Fairness receipt"), sharing no code with
engine/shuffle.py (an import-linter contract keeps it away from the engine), so a bug in the
reference does not vouch for itself. It reads the receipt over HTTP from a gateway, as any
shopper can: what it checks is what was published, not what the server says about its own state.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

EXIT_OK, EXIT_DIFFERS, EXIT_UNREADABLE = 0, 1, 2
SHOWN_DIFFERENCES = 5


class Unreadable(Exception):
    """No receipt to check: the gateway refused or was unreachable, or the file is not one."""


def _words(seed: str) -> Iterator[int]:
    """64-bit big-endian words: the first 8 bytes of SHA-256(seed || counter), counter 0, 1, ..."""
    counter = 0
    while True:
        digest = hashlib.sha256(seed.encode() + counter.to_bytes(8, "big")).digest()
        yield int.from_bytes(digest[:8], "big")
        counter += 1


def draw_order(seed: str, size: int) -> list[int]:
    """The ticket at place 1, 2, ..., size."""
    tickets = list(range(1, size + 1))
    words = _words(seed)
    for i in reversed(range(1, size)):
        bound = i + 1
        ceiling = (2**64 // bound) * bound  # words at or past it would favour small values
        word = next(words)
        while word >= ceiling:
            word = next(words)
        j = word % bound
        tickets[i], tickets[j] = tickets[j], tickets[i]
    return tickets


def fingerprint(order: list[int]) -> str:
    return hashlib.sha256(",".join(str(t) for t in order).encode()).hexdigest()


def _field(receipt: dict[str, Any], name: str, kind: type) -> Any:
    value = receipt.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise Unreadable(f"the receipt has no valid {name!r}")
    return value


def _order_differences(listed: Any, drawn: list[int]) -> list[str]:
    if not isinstance(listed, list):
        return ["order: not a list"]
    found = [f"order: {len(listed)} tickets listed, {len(drawn)} drawn"]
    found = found if len(listed) != len(drawn) else []
    places = [p for p, (a, b) in enumerate(zip(listed, drawn, strict=False), 1) if a != b]
    for place in places[:SHOWN_DIFFERENCES]:
        found.append(
            f"place {place}: the receipt lists ticket {listed[place - 1]}, "
            f"the draw gives ticket {drawn[place - 1]}"
        )
    if len(places) > SHOWN_DIFFERENCES:
        found.append(f"... {len(places)} places differ in all")
    return found


def _ticket_difference(mine: Any, drawn: list[int]) -> list[str]:
    if not isinstance(mine, dict) or not isinstance(mine.get("number"), int):
        return ["ticket: not a ticket's place"]
    number = mine["number"]
    if number < 1:
        return [f"ticket: number {number} is not a ticket number"]
    drawn_place = drawn.index(number) + 1 if number <= len(drawn) else number
    if mine.get("place") != drawn_place:
        return [
            f"your ticket {mine.get('ticket')}: the receipt says place {mine.get('place')}, "
            f"the draw gives place {drawn_place}"
        ]
    return []


MAX_PREQUEUE = 10_000_000  # a saved receipt claiming more is not drawn again (memory)


def differences(
    receipt: dict[str, Any], sale: str, noted: str | None = None
) -> tuple[list[str], list[int]]:
    """Every way the receipt disagrees with itself, with the commitment the shopper noted before
    the opening (`noted`), and with the draw its seed gives; the draw. The receipt's own
    `seed_sha256` only shows the seed and the hash agree: a server that drew again with a new
    seed would publish its hash too. The hash shown before the opening is what binds it."""
    found: list[str] = []
    if receipt.get("sale_id") != sale:
        found.append(f"sale_id: the receipt is for {receipt.get('sale_id')!r}, not {sale!r}")
    seed = _field(receipt, "seed", str)
    committed = _field(receipt, "seed_sha256", str)
    if noted is not None and noted.lower() != committed.lower():
        found.append(f"seed_sha256: the receipt says {committed}, the hash noted before is {noted}")
    size = _field(receipt, "prequeue_size", int)
    if not 0 <= size <= MAX_PREQUEUE:
        raise Unreadable(f"the receipt's prequeue_size {size} is out of range")
    revealed = hashlib.sha256(seed.encode()).hexdigest()
    if revealed != committed:
        found.append(f"seed: its SHA-256 is {revealed}, the committed hash is {committed}")
    drawn = draw_order(seed, size)
    claimed = _field(receipt, "order_sha256", str)
    if fingerprint(drawn) != claimed:
        found.append(
            f"order_sha256: the seed and prequeue_size {size} give {fingerprint(drawn)}, "
            f"the receipt says {claimed}"
        )
    if "order" in receipt:
        found += _order_differences(receipt["order"], drawn)
    if "ticket" in receipt:
        found += _ticket_difference(receipt["ticket"], drawn)
    return found, drawn


def fetch(url: str, sale: str, ticket: str | None) -> dict[str, Any]:
    params = {"include": "order", **({"ticket": ticket} if ticket else {})}
    try:
        reply = httpx.get(f"{url.rstrip('/')}/v1/sales/{sale}/fairness", params=params, timeout=30)
    except httpx.HTTPError as exc:
        raise Unreadable(f"cannot reach {url}: {exc}") from exc
    if reply.status_code != 200:
        try:
            problem = reply.json()
            said = f"{problem.get('code')}: {problem.get('detail')}"
        except ValueError:
            said = reply.text[:200]
        raise Unreadable(f"the gateway answered {reply.status_code} {said}")
    return _object(reply.text)


def _object(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise Unreadable(f"the receipt is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise Unreadable("the receipt is not a JSON object")
    return doc


def run(args: argparse.Namespace) -> int:
    try:
        if args.receipt:
            receipt = _object(Path(args.receipt).read_text("utf-8"))
        else:
            receipt = fetch(args.url, args.sale, args.ticket)
        found, drawn = differences(receipt, args.sale, args.committed)
    except (Unreadable, OSError) as exc:
        print(f"verify-draw: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    if args.ticket and "ticket" not in receipt:
        found.append(f"ticket: the receipt says nothing of ticket {args.ticket}")
    if found:
        print(f"FAILED: the draw of sale {args.sale} does not match its receipt:")
        print("\n".join(f"  {line}" for line in found))
        return EXIT_DIFFERS
    noted = " (the one noted before the opening)" if args.committed else ""
    print(
        f"OK: sale {args.sale}: the seed matches its commitment {receipt['seed_sha256']}{noted}; "
        f"{len(drawn)} pre-queue tickets drawn again give order_sha256 {receipt['order_sha256']}"
        + (", and the listed order" if "order" in receipt else "")
    )
    if "ticket" in receipt:
        print(f"  your ticket {receipt['ticket']['ticket']}: place {receipt['ticket']['place']}")
    return EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sale", required=True)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="a gateway of the sale")
    parser.add_argument("--ticket", help="also check this ticket's place (its id)")
    parser.add_argument("--receipt", help="check this saved receipt (JSON) instead of fetching")
    parser.add_argument(
        "--committed",
        help="the seed_sha256 the queue page showed before the opening (noted then): the receipt "
        "must carry the same one",
    )
