"""The waiting room over real HTTP (a 2-worker gateway with its admission loops): the whole
journey, token abuse, ghosts and sold out, rate limits, bad input, the page and the metrics."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from flashsale.engine import Engine, keys
from flashsale.engine.connection import RedisClient, hgetall
from flashsale.gateway.room.tokens import KeyRing, Tickets, Tokens
from flashsale.loadtests.gateway_process import Gateway, gateway
from tests.gateway_helpers import (
    ADMIN,
    admin_view,
    assert_problem,
    checkout_body,
    new_sale_id,
    raw_request,
    sku_view,
)
from tests.helpers import eventually
from tests.metrics_helpers import Scrape, parse_metrics, series, value
from tests.waiting_room_helpers import (
    CREATED,
    ROOM_ENV,
    assert_room_sound,
    close_created,
    create_room_sale,
    join,
    poll_until,
    room_body,
    room_info,
    room_info_when,
    room_snapshot,
    status,
)

RING = KeyRing("k2", {"k2": ROOM_ENV["FLASHSALE_TOKEN_SECRET"]})
OLD_RING = KeyRing("k1", {"k1": "room-test-secret-k1"})


@pytest.fixture(scope="module")
def gw(service_urls: dict[str, str]) -> Iterator[Gateway]:
    with gateway({**service_urls, **ROOM_ENV}, workers=2) as running:
        yield running
        close_created(running.url)


async def admitted_token(http: httpx.AsyncClient, sale: str, customer: str) -> str:
    ticket = (await join(http, sale, customer))["ticket"]
    doc = await poll_until(http, sale, ticket, "admitted")
    token: str = doc["token"]
    return token


async def hold(
    http: httpx.AsyncClient, sale: str, customer: str, token: str | None, key: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if key is not None:
        headers["Idempotency-Key"] = key
    return await http.post(f"/v1/sales/{sale}/holds", json=checkout_body(customer), headers=headers)


async def test_join_wait_admit_and_check_out(http: httpx.AsyncClient, live_engine: Engine) -> None:
    sale = await create_room_sale(http, "wr-journey", room_body(rate=5))
    first = await join(http, sale, "alice")
    again = await http.post(f"/v1/sales/{sale}/queue", json={"customer_id": "alice"})
    assert again.status_code == 200 and again.json()["ticket"] == first["ticket"]
    assert first["status"] == "waiting" and first["seed_sha256"] is not None
    admitted = await poll_until(http, sale, first["ticket"], "admitted")
    assert (await status(http, sale, first["ticket"]))["token"] == admitted["token"]
    claims = jwt.decode(admitted["token"], options={"verify_signature": False})
    assert (claims["aud"], claims["sub"]) == (f"sale:{sale}", "alice")
    assert jwt.get_unverified_header(admitted["token"])["kid"] == "k2"
    reply = await hold(http, sale, "alice", admitted["token"])
    assert reply.status_code == 201, reply.text
    info = await room_info_when(http, sale, {"admitted": 1, "tickets": 1, "active": 0})
    assert hashlib.sha256(info["seed"].encode()).hexdigest() == info["seed_sha256"]
    await assert_room_sound(live_engine, sale)


async def test_a_prequeue_ticket_waits_for_the_draw(http: httpx.AsyncClient) -> None:
    sale = new_sale_id("wr-pre")
    CREATED.append(sale)
    put = await http.put(
        f"/v1/admin/sales/{sale}", json=room_body(starts_at="2096-01-01T00:00:00Z"), headers=ADMIN
    )
    assert put.status_code == 201, put.text
    doc = await join(http, sale, "early")
    assert (doc["status"], doc["prequeue"], doc["position"]) == ("waiting", True, None)
    assert doc["eta_p50_s"] > 2_000_000_000 and doc["opens_at"].startswith("2096-01-01")
    info = await room_info(http, sale)
    assert info["seed"] is None and len(info["seed_sha256"]) == 64


# --- token abuse -------------------------------------------------------------------------------


def craft(sale: str, customer: str, *, ends_ms: int | None = None, ring: KeyRing = RING) -> str:
    now = int(time.time() * 1000)
    return Tokens(ring).issue(sale, customer, 999, now, ends_ms or now + 60_000)


def alg_none(token: str) -> str:
    payload = token.split(".")[1]
    none = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT","kid":"k2"}').decode()
    return f"{none}.{payload}."


ABUSE: dict[str, tuple[Any, str, int, str]] = {
    # name: (token from (real token, sale), customer, status, code)
    "no token": (lambda t, s: None, "alice", 403, "NOT_ADMITTED"),
    "expired": (lambda t, s: craft(s, "alice", ends_ms=1_000_000), "alice", 401, "TOKEN_EXPIRED"),
    "wrong sale": (lambda t, s: craft(s + "x", "alice"), "alice", 403, "TOKEN_WRONG_SALE"),
    "wrong customer": (lambda t, s: t, "mallory", 403, "TOKEN_WRONG_CUSTOMER"),
    "bad signature": (lambda t, s: t[:-6] + "AAAAAA", "alice", 401, "TOKEN_INVALID"),
    "alg none": (lambda t, s: alg_none(t), "alice", 401, "TOKEN_INVALID"),
    "unknown key id": (
        lambda t, s: craft(s, "alice", ring=KeyRing("k9", {"k9": "x"})),
        "alice",
        401,
        "TOKEN_INVALID",
    ),
    "garbage": (lambda t, s: "garbage", "alice", 401, "TOKEN_INVALID"),
}


async def test_abused_tokens_are_refused_with_their_code_and_reserve_nothing(
    http: httpx.AsyncClient, redis_client: RedisClient, live_engine: Engine
) -> None:
    sale = await create_room_sale(http, "wr-abuse", room_body(per_user_limit=1))
    token = await admitted_token(http, sale, "alice")
    for name, (make, customer, code_status, code) in ABUSE.items():
        before = await room_snapshot(redis_client, sale)
        reply = await hold(http, sale, customer, make(token, sale))
        assert_problem(reply, code_status, code)
        assert await room_snapshot(redis_client, sale) == before, name
    # Replay: 3 attempts per token (ROOM_ENV), refused attempts count, an idempotent retry not.
    assert (await hold(http, sale, "alice", token, key="k1")).status_code == 201
    assert_problem(await hold(http, sale, "alice", token), 409, "LIMIT_EXCEEDED")
    assert (await hold(http, sale, "alice", token, key="k1")).status_code == 201  # replay
    assert_problem(await hold(http, sale, "alice", token), 409, "LIMIT_EXCEEDED")
    before = await room_snapshot(redis_client, sale)
    assert_problem(await hold(http, sale, "alice", token, key="k2"), 403, "TOKEN_EXHAUSTED")
    assert await room_snapshot(redis_client, sale) == before
    assert sku_view(await admin_view(http, sale))["reserved"] == 1
    # A token signed with the previous key (k1) still works after the rotation to k2.
    rotated = craft(sale, "bob", ring=OLD_RING)
    assert (await hold(http, sale, "bob", rotated)).status_code == 201
    await assert_room_sound(live_engine, sale)


# --- ghosts and sold out -----------------------------------------------------------------------


async def test_sold_out_reaches_the_tail_at_once_and_ghosts_lose_their_turn_till_they_poll(
    http: httpx.AsyncClient, live_engine: Engine
) -> None:
    """One unit, taken by the first admitted: everyone behind is told sold out without being
    admitted. Three of them keep polling, three go silent. When stock is added, the pollers are
    admitted and the silent ones skipped: told to poll every 1.5 s while sold out (5 x
    FLASHSALE_QUEUE_POLL_MS), they missed 3 of those polls and a heartbeat flush (4.7 s). Once
    they poll again they are let in first."""
    sale = await create_room_sale(http, "wr-ghosts", room_body(1))
    await admitted_token(http, sale, "first")
    docs = {name: await join(http, sale, name) for name in ("p1", "g1", "p2", "g2", "p3", "g3")}
    assert {d["status"] for d in docs.values()} == {"sold_out"}

    async def keep_polling(name: str) -> None:
        for _ in range(24):
            doc = await status(http, sale, docs[name]["ticket"])
            assert (doc["status"], doc["poll_after_ms"]) == ("sold_out", 1500)
            # Kept: pollers spaced out on purpose; 24 of them outlast the ghosts' 4.7 s limit.
            await asyncio.sleep(0.25)

    await asyncio.gather(*(keep_polling(p) for p in ("p1", "p2", "p3")))
    assert (await room_info_when(http, sale, {"tickets": 7}))["admitted"] == 1
    put = await http.put(f"/v1/admin/sales/{sale}", json=room_body(10), headers=ADMIN)
    assert put.status_code == 200, put.text
    for name in ("p1", "p2", "p3"):
        await poll_until(http, sale, docs[name]["ticket"], "admitted")
    await room_info_when(
        http, sale, {"admitted": 4, "abandoned": 3, "passed_unadmitted": 3, "waiting": 0}
    )
    # A ghost that polls again (its phone slept) comes back: let in first, at the next tick.
    for name in ("g1", "g2", "g3"):
        doc = await status(http, sale, docs[name]["ticket"])
        assert (doc["status"], doc["came_back"], doc["poll_after_ms"]) == ("waiting", True, 300)
        await poll_until(http, sale, docs[name]["ticket"], "admitted")
    info = await room_info_when(
        http, sale, {"admitted": 7, "abandoned": 3, "passed_unadmitted": 0, "returned": 3}
    )
    assert info["released"] == info["coming_back"] == 0
    await assert_room_sound(live_engine, sale)


# --- rate limits -------------------------------------------------------------------------------


async def test_joins_are_rate_limited_per_customer_address_and_sale(
    http: httpx.AsyncClient, redis_client: RedisClient
) -> None:
    limits = {"per_client_per_s": 1, "burst": 2}
    sale = await create_room_sale(http, "wr-rl", room_body(rate_limit=limits))
    await join(http, sale, "c1")
    await join(http, sale, "c1")
    url = f"/v1/sales/{sale}/queue"
    replies = await asyncio.gather(  # at once: the buckets refill a token a second
        http.post(url, json={"customer_id": "c1"}),
        http.post(url, json={"customer_id": "c2"}),  # the address's bucket is empty too
        http.post(  # the peer is no trusted proxy: its X-Forwarded-For is not believed
            url, json={"customer_id": "c3"}, headers={"X-Forwarded-For": "203.0.113.7"}
        ),
    )
    for reply in replies:
        assert_problem(reply, 429, "RATE_LIMITED")
        assert reply.headers["retry-after"] == "1"
    # A refused request writes nothing: no ticket, and no bucket of its own.
    assert await hgetall(redis_client, keys.room_tickets(sale)) == {"c1": "1"}
    for kind, client_id in (("c", "c2"), ("c", "c3"), ("a", "203.0.113.7")):
        assert not await redis_client.exists(keys.rate_bucket(sale, kind, client_id))
    per_sale = {"per_client_per_s": 0, "per_sale_per_s": 2}
    busy = await create_room_sale(http, "wr-rl-sale", room_body(rate_limit=per_sale))
    statuses = [
        (await http.post(f"/v1/sales/{busy}/queue", json={"customer_id": f"d{i}"})).status_code
        for i in range(3)
    ]
    assert statuses == [201, 201, 429]


async def test_checkouts_are_rate_limited_too(http: httpx.AsyncClient) -> None:
    limits = {"per_client_per_s": 1, "burst": 1}
    sale = await create_room_sale(http, "wr-rl-hold", room_body(room=False, rate_limit=limits))
    assert (await hold(http, sale, "c1", None)).status_code == 201
    assert_problem(await hold(http, sale, "c1", None), 429, "RATE_LIMITED")
    assert sku_view(await admin_view(http, sale))["reserved"] == 1


# --- bad input ---------------------------------------------------------------------------------

JOIN = "/v1/sales/{sale}/queue"
STATUS = JOIN + "/{ticket}"
PAGE = "/sales/{sale}/waiting-room"
BAD_IDS = {"space": "bad%20id", "65 chars": "x" * 65, "dot": "a.b", "brace": "a%7Bb%7D"}
NO_BODY = object()


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # {sale}: a sale with a room and one ticket; {plain}: a sale without a room
    status: int
    code: str
    json: Any = NO_BODY
    content: bytes | None = None
    lying_length: bool = False


def _post(body: Any, status: int = 422, code: str = "INVALID_REQUEST", path: str = JOIN) -> Case:
    return Case("POST", path, status, code, body)


def _raw(content: bytes) -> Case:
    return Case("POST", JOIN, 400, "MALFORMED_JSON", content=content)


def _join_cases() -> dict[str, Case]:
    body = {"customer_id": "c9"}
    cases = {
        "malformed json": _raw(b'{"customer_id": '),
        # No body at all reads as {}: nobody is named (the customer token says who).
        "empty body": Case("POST", JOIN, 401, "CUSTOMER_UNAUTHENTICATED", content=b""),
        "not utf-8": _raw(b'{"customer_id": "\xff"}'),
        "array body": _post([body]),
        "missing customer_id": _post({}, 401, "CUSTOMER_UNAUTHENTICATED"),  # nobody named
        "unknown field": _post({**body, "vip": True}),
        "customer_id a number": _post({"customer_id": 9}),
        "customer_id malformed": _post({"customer_id": "c 9"}),
        "customer_id 65 chars": _post({"customer_id": "c" * 65}),
        "customer_id null": _post({"customer_id": None}),
        "body over the limit": _post({**body, "pad": "x" * 20_000}, 413, "PAYLOAD_TOO_LARGE"),
        "lying Content-Length": Case(
            "POST", JOIN, 413, "PAYLOAD_TOO_LARGE", content=b"{}", lying_length=True
        ),
        "unknown sale": _post(body, 404, "NOT_FOUND", JOIN.replace("{sale}", "{sale}-nope")),
        "sale without a room": _post(
            body, 409, "NO_WAITING_ROOM", JOIN.replace("{sale}", "{plain}")
        ),
        "PUT": Case("PUT", JOIN, 405, "METHOD_NOT_ALLOWED", body),
    }
    for label, bad in BAD_IDS.items():
        cases[f"sale id {label}"] = _post(body, path=JOIN.replace("{sale}", bad))
    return {f"join {k}": v for k, v in cases.items()}


def _read_cases() -> dict[str, Case]:
    cases = {
        "status ticket malformed": Case("GET", JOIN + "/a%20b", 422, "INVALID_REQUEST"),
        "status ticket 65 chars": Case("GET", JOIN + "/" + "1" * 65, 422, "INVALID_REQUEST"),
        "status forged ticket": Case("GET", JOIN + "/1-AAAAAAAAAAAAAAAAAAAAAA", 404, "NOT_FOUND"),
        "status ticket without mac": Case("GET", JOIN + "/1", 404, "NOT_FOUND"),
        "status ticket never issued": Case("GET", JOIN + "/{beyond}", 404, "NOT_FOUND"),
        "status ticket of another sale": Case(
            "GET", JOIN.replace("{sale}", "{plain}") + "/{ticket}", 404, "NOT_FOUND"
        ),
        "status unknown sale": Case(
            "GET", "/v1/sales/{sale}-nope/queue/{nope_ticket}", 404, "NOT_FOUND"
        ),
        "status DELETE": Case("DELETE", STATUS, 405, "METHOD_NOT_ALLOWED"),
        "info unknown sale": Case("GET", JOIN.replace("{sale}", "{sale}-nope"), 404, "NOT_FOUND"),
        "info sale without a room": Case(
            "GET", JOIN.replace("{sale}", "{plain}"), 404, "NOT_FOUND"
        ),
        "page unknown sale": Case("GET", PAGE.replace("{sale}", "{sale}-nope"), 404, "NOT_FOUND"),
        "page sale without a room": Case(
            "GET", PAGE.replace("{sale}", "{plain}"), 404, "NOT_FOUND"
        ),
        "page POST": Case("POST", PAGE, 405, "METHOD_NOT_ALLOWED"),
    }
    for label, bad in BAD_IDS.items():
        cases[f"status sale id {label}"] = Case(
            "GET", STATUS.replace("{sale}", bad), 422, "INVALID_REQUEST"
        )
        cases[f"info sale id {label}"] = Case(
            "GET", JOIN.replace("{sale}", bad), 422, "INVALID_REQUEST"
        )
        cases[f"page sale id {label}"] = Case(
            "GET", PAGE.replace("{sale}", bad), 422, "INVALID_REQUEST"
        )
    return cases


CASES = {**_join_cases(), **_read_cases()}


@dataclass(frozen=True)
class Target:
    sale: str
    plain: str
    ticket: str


@pytest.fixture(scope="module")
def target(gw: Gateway) -> Target:
    """A sale whose room is a pre-queue with one ticket (no loop moves it), and one without."""
    sale, plain = new_sale_id("wr-bad"), new_sale_id("wr-bad-plain")
    CREATED.extend((sale, plain))
    with httpx.Client(base_url=gw.url, headers=ADMIN, timeout=30) as http:
        for sale_id, body in (
            (sale, room_body(starts_at="2096-01-01T00:00:00Z")),
            (plain, room_body(room=False)),
        ):
            assert http.put(f"/v1/admin/sales/{sale_id}", json=body).status_code == 201
        reply = http.post(f"/v1/sales/{sale}/queue", json={"customer_id": "c1"})
        assert reply.status_code == 201, reply.text
    return Target(sale, plain, reply.json()["ticket"])


def _path(case: Case, t: Target) -> str:
    tickets = Tickets(RING)
    return (
        case.path.replace("{beyond}", tickets.make(t.sale, 99))
        .replace("{nope_ticket}", tickets.make(t.sale + "-nope", 1))
        .replace("{ticket}", t.ticket)
        .replace("{plain}", t.plain)
        .replace("{sale}", t.sale)
    )


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_bad_input_gets_its_problem_and_changes_nothing(
    gw: Gateway, http: httpx.AsyncClient, redis_client: RedisClient, target: Target, case: Case
) -> None:
    path = _path(case, target)
    before = await room_snapshot(redis_client, target.sale)
    if case.lying_length:
        head = f"{case.method} {path} HTTP/1.1\nHost: t\nContent-Length: {10**9}\n"
        reply = await raw_request(gw.url, head, case.content or b"")
    elif case.json is not NO_BODY:
        reply = await http.request(case.method, path, json=case.json)
    else:
        json_type = {"Content-Type": "application/json"}  # bad JSON, not a bad type
        reply = await http.request(case.method, path, content=case.content, headers=json_type)
    assert_problem(reply, case.status, case.code)
    assert await room_snapshot(redis_client, target.sale) == before


# --- the page and the metrics ------------------------------------------------------------------


async def test_the_page_is_accessible_html_with_a_strict_policy(
    http: httpx.AsyncClient, target: Target
) -> None:
    reply = await http.get(f"/sales/{target.sale}/waiting-room")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    policy = reply.headers["content-security-policy"]
    assert "script-src 'sha256-" in policy and "default-src 'none'" in policy
    page = reply.text
    for needle in (
        'lang="en"',
        'name="viewport"',
        'aria-live="polite"',
        'role="alert"',
        '<label for="customer">',
        '<label for="progress">',
        "<progress",
    ):
        assert needle in page, needle


async def test_metrics_show_each_room(http: httpx.AsyncClient, target: Target) -> None:
    await http.get(f"/v1/sales/{target.sale}/queue")  # both workers learn of the room in time

    room = {"sale": target.sale}

    async def scraped_with_the_room() -> Scrape:
        scrape = parse_metrics((await http.get("/metrics", headers=ADMIN)).text)  # units: admin's
        assert value(scrape, "flashsale_queue_waiting", room) == 1, "not in the scrape yet"
        return scrape

    scrape = await eventually(scraped_with_the_room, timeout_s=4, interval_s=0.2)
    for name in (
        "waiting",
        "admitted_total",
        "active",
        "abandoned_total",
        "admit_rate_per_second",
        "eta_p50_seconds",
        "eta_error_mean_seconds",
        "units_left",
        "leader",
    ):
        assert (f"flashsale_queue_{name}", tuple(room.items())) in scrape, name
    public = parse_metrics((await http.get("/metrics")).text)
    assert value(public, "flashsale_queue_waiting", room) == 1
    assert not series(public, "flashsale_queue_units_left")
