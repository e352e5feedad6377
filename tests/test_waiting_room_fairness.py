"""The fairness receipt over real HTTP and `flashsale verify-draw`: 10,000 pre-queue tickets drawn,
admitted, published and checked; every tampering found; refusals that change nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from flashsale.engine import Code, Engine, keys
from flashsale.engine.connection import RedisClient
from flashsale.engine.waiting_room import WaitingRoom
from flashsale.gateway.room.tokens import KeyRing, Tickets
from flashsale.loadtests.gateway_process import Gateway, gateway
from flashsale.verify_draw import differences
from tests.gateway_helpers import ADMIN, assert_problem, new_sale_id
from tests.helpers import eventually
from tests.waiting_room_helpers import (
    CREATED,
    ROOM_ENV,
    close_created,
    join,
    poll_until,
    room_body,
    room_snapshot,
)

CROWD = 10_000
FUTURE = "2096-01-01T00:00:00Z"
SCRIPT = Path(__file__).parent.parent / "docs" / "verify_draw.py"
RING = KeyRing("k2", {"k2": ROOM_ENV["FLASHSALE_TOKEN_SECRET"]})


@pytest.fixture(scope="module")
def gw(service_urls: dict[str, str]) -> Iterator[Gateway]:
    # Nobody picks an admission up until all 10,000 are in: none may be taken back meanwhile.
    env = {**service_urls, **ROOM_ENV, "FLASHSALE_QUEUE_CLAIM_MS": "0"}
    with gateway(env, workers=2) as running:
        yield running
        close_created(running.url)


async def scheduled_sale(http: httpx.AsyncClient, prefix: str, units: int) -> str:
    """A sale with a waiting room opening in 2096: everyone who joins is in the pre-queue."""
    sale = new_sale_id(prefix)
    CREATED.append(sale)
    body = room_body(units, rate=1_000_000, max_active=units, starts_at=FUTURE)
    body["waiting_room"]["token_ttl_s"] = 3600
    put = await http.put(f"/v1/admin/sales/{sale}", json=body, headers=ADMIN)
    assert put.status_code == 201, put.text
    return sale


def verify_draw(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "flashsale.cli", "verify-draw", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def script(receipt: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    command = [sys.executable, str(SCRIPT), str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


async def join_crowd(engine: Engine, sale: str) -> list[str]:
    """Joins through queue_join.lua itself (10,000 HTTP joins cost a minute of this client's
    time; the HTTP join is tested elsewhere); the ids are the ones the gateway signs."""
    room = WaitingRoom(engine)
    joins = await asyncio.gather(*(room.queue_join(sale, f"fair-{i}") for i in range(CROWD)))
    assert all(j.code is Code.OK and j.new for j in joins)
    return [Tickets(RING).make(sale, j.ticket) for j in joins]


async def admitted_places(http: httpx.AsyncClient, sale: str, tickets: list[str]) -> list[int]:
    """The place each ticket was really admitted at: its admission token's jti."""
    gate = asyncio.Semaphore(64)

    async def place(ticket: str) -> int:
        async with gate:
            doc = await poll_until(http, sale, ticket, "admitted")  # a worker's cache may lag
        claims = jwt.decode(doc["token"], options={"verify_signature": False})
        return int(claims["jti"])

    return list(await asyncio.gather(*(place(t) for t in tickets)))


async def test_the_receipt_is_refused_until_the_draw_and_bad_asks_change_nothing(
    http: httpx.AsyncClient, redis_client: RedisClient
) -> None:
    assert_problem(await http.get(f"/v1/sales/{new_sale_id('nope')}/fairness"), 404, "NOT_FOUND")
    sale = await scheduled_sale(http, "fair-early", 10)
    ticket = (await join(http, sale, "early"))["ticket"]
    before = await room_snapshot(redis_client, sale)
    url = f"/v1/sales/{sale}/fairness"
    doc = assert_problem(await http.get(url), 409, "DRAW_NOT_REVEALED")
    assert "2096-01-01" in doc["detail"]
    assert_problem(await http.get(url, params={"ticket": ticket}), 409, "DRAW_NOT_REVEALED")
    for params in ({"include": "all"}, {"ticket": "bad/id"}, {"seed": "x"}):
        assert_problem(await http.get(url, params=params), 422, "INVALID_REQUEST")
    assert await room_snapshot(redis_client, sale) == before
    opened = await http.post(f"/v1/admin/sales/{sale}/open", headers=ADMIN)
    assert opened.status_code == 200

    async def revealed() -> dict[str, Any]:
        reply = await http.get(url, params={"ticket": ticket})
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    receipt = await eventually(revealed, timeout_s=5, interval_s=0.1)
    assert receipt["prequeue_size"] == 1 and receipt["ticket"]["place"] == 1
    forged = Tickets(KeyRing("k9", {"k9": "not-ours"})).make(sale, 1)
    assert_problem(await http.get(url, params={"ticket": forged}), 404, "NOT_FOUND")
    unissued = Tickets(RING).make(sale, 2)
    assert_problem(await http.get(url, params={"ticket": unissued}), 404, "NOT_FOUND")


async def test_10000_prequeue_tickets_receipt_and_verify_draw_match_the_admissions(
    gw: Gateway,
    http: httpx.AsyncClient,
    redis_client: RedisClient,
    live_engine: Engine,
    tmp_path: Path,
) -> None:
    sale = await scheduled_sale(http, "fair-10k", CROWD)
    tickets = await join_crowd(live_engine, sale)
    assert sorted(int(t.split("-")[0]) for t in tickets) == list(range(1, CROWD + 1))
    assert (await http.post(f"/v1/admin/sales/{sale}/open", headers=ADMIN)).status_code == 200

    async def all_admitted() -> None:
        assert await redis_client.hlen(keys.room_admitted(sale)) == CROWD

    await eventually(all_admitted, timeout_s=20, interval_s=0.2)
    places = await admitted_places(http, sale, tickets)
    admitted_order = [0] * CROWD  # the ticket number at place 1, 2, ...
    for ticket, place in zip(tickets, places, strict=True):
        admitted_order[place - 1] = int(ticket.split("-")[0])
    assert sorted(admitted_order) == list(range(1, CROWD + 1))
    assert admitted_order != sorted(admitted_order)

    url = f"/v1/sales/{sale}/fairness"
    receipt = (await http.get(url, params={"include": "order"})).json()
    assert receipt["prequeue_size"] == CROWD and receipt["order"] == admitted_order
    assert receipt["seed_sha256"] == hashlib.sha256(receipt["seed"].encode()).hexdigest()
    digest = hashlib.sha256(",".join(map(str, admitted_order)).encode()).hexdigest()
    assert receipt["order_sha256"] == digest
    short = (await http.get(url)).json()
    assert "order" not in short and short["order_sha256"] == digest
    for i in random.Random(17).sample(range(CROWD), 20):
        mine = (await http.get(url, params={"ticket": tickets[i]})).json()["ticket"]
        assert (mine["place"], mine["prequeue"]) == (places[i], True)

    done = verify_draw("--url", gw.url, "--sale", sale, "--ticket", tickets[0])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{CROWD} pre-queue tickets" in done.stdout and f"place {places[0]}" in done.stdout
    with_ticket = (await http.get(url, params={"include": "order", "ticket": tickets[0]})).json()
    assert script(with_ticket, tmp_path).returncode == 0
    check_tampering(with_ticket, sale, tmp_path)

    await redis_client.hset(keys.room(sale), "seed", "0" * 64)  # a server that lies about it

    async def lying() -> None:
        assert (await http.get(url)).json()["seed"] == "0" * 64

    await eventually(lying, timeout_s=5, interval_s=0.1)
    caught = verify_draw("--url", gw.url, "--sale", sale)
    assert caught.returncode == 1 and "seed: its SHA-256" in caught.stdout, caught.stdout


def tampered(receipt: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return json.loads(json.dumps(receipt)) | changes  # type: ignore[no-any-return]


def check_tampering(receipt: dict[str, Any], sale: str, tmp_path: Path) -> None:
    """Moving any ticket to another place, another seed or count, another hash: all found."""
    assert differences(receipt, sale)[0] == []
    rng = random.Random(1717)
    for a in rng.sample(range(CROWD), 200):
        b = (a + rng.randrange(1, CROWD)) % CROWD
        order = list(receipt["order"])
        order[a], order[b] = order[b], order[a]
        found = differences(tampered(receipt, order=order), sale)[0]
        first, second = sorted((a + 1, b + 1))
        assert found[:2] == [
            f"place {first}: the receipt lists ticket {order[first - 1]}, "
            f"the draw gives ticket {order[second - 1]}",
            f"place {second}: the receipt lists ticket {order[second - 1]}, "
            f"the draw gives ticket {order[first - 1]}",
        ], found
    order = list(receipt["order"])
    order[0], order[-1] = order[-1], order[0]
    mine = receipt["ticket"] | {"place": receipt["ticket"]["place"] % CROWD + 1}
    cases = {
        "place 1: the receipt lists": tampered(receipt, order=order),
        "seed: its SHA-256": tampered(receipt, seed="1" * 64),
        "order_sha256: the seed and prequeue_size 9999": tampered(receipt, prequeue_size=9999),
        "order_sha256: the seed and prequeue_size 10000 give": tampered(receipt, order_sha256="0"),
        "your ticket": tampered(receipt, ticket=mine),
    }
    for said, changed in cases.items():
        path = tmp_path / "tampered.json"
        path.write_text(json.dumps(changed))
        run = verify_draw("--receipt", str(path), "--sale", sale)
        assert run.returncode == 1 and said in run.stdout, (said, run.stdout, run.stderr)
        assert script(changed, tmp_path).returncode == 1, said
    # A draw made again with a new seed would come with that seed's own hash: only the hash the
    # page showed before the opening, noted by the shopper, tells it apart.
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    noted = receipt["seed_sha256"]
    assert verify_draw("--receipt", str(path), "--sale", sale, "--committed", noted).returncode == 0
    other = verify_draw("--receipt", str(path), "--sale", sale, "--committed", "ab" * 32)
    assert other.returncode == 1 and "the hash noted before is abab" in other.stdout, other.stdout
