#!/usr/bin/env python3
"""Check a flashsale fairness receipt with nothing but Python's standard library.

    curl -s 'https://GATEWAY/v1/sales/SALE/fairness?include=order&ticket=TICKET' > receipt.json
    python3 verify_draw.py receipt.json [SEED_SHA256_NOTED_BEFORE_THE_OPENING]

Give the seed_sha256 the queue page showed before the opening, if you noted it: the receipt's
own hash only shows that its seed and hash agree (a draw made again would bring its own).
Exit 0 when the seed matches its commitment and the draw it gives matches the receipt's hash,
its listed order and your ticket's place (whichever it holds); 1 with what differs otherwise.
The algorithm is the one in docs/waiting-room.md ("Fair order").
"""

import hashlib
import json
import sys


def draw(seed, size):
    order, counter = list(range(1, size + 1)), 0
    for i in range(size - 1, 0, -1):
        bound = i + 1
        while True:
            word = hashlib.sha256(seed.encode() + counter.to_bytes(8, "big")).digest()[:8]
            counter += 1
            if int.from_bytes(word, "big") < 2**64 - 2**64 % bound:
                break
        j = int.from_bytes(word, "big") % bound
        order[i], order[j] = order[j], order[i]
    return order


def main(path, noted=None):
    with open(path, encoding="utf-8") as file:
        receipt = json.load(file)
    seed, size = receipt["seed"], receipt["prequeue_size"]
    order = draw(seed, size)
    wrong = []
    if hashlib.sha256(seed.encode()).hexdigest() != receipt["seed_sha256"]:
        wrong.append("the seed does not match the committed seed_sha256")
    if noted and noted.lower() != receipt["seed_sha256"].lower():
        wrong.append("the receipt's seed_sha256 is not the one noted before the opening")
    if hashlib.sha256(",".join(map(str, order)).encode()).hexdigest() != receipt["order_sha256"]:
        wrong.append("the seed and prequeue_size do not give order_sha256")
    listed = receipt.get("order", order)
    wrong += [
        f"place {p}: listed {a}, drawn {b}"
        for p, (a, b) in enumerate(zip(listed, order, strict=False), 1)
        if a != b
    ][:5]
    if len(listed) != len(order):
        wrong.append(f"{len(listed)} tickets listed, {len(order)} drawn")
    mine = receipt.get("ticket")
    if mine:
        place = order.index(mine["number"]) + 1 if mine["number"] <= size else mine["number"]
        if place != mine["place"]:
            wrong.append(f"your ticket: the receipt says place {mine['place']}, drawn {place}")
    done = f"OK: {size} tickets, order_sha256 {receipt['order_sha256']}"
    print("\n".join(wrong) or done + (f", your place {mine['place']}" if mine else ""))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
