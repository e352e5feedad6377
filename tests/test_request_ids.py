"""Request ids and structured logs: one X-Request-Id followed from a real gateway through the
stream, the flush, the saga and the outbox to the webhook receiver; ids a client may not set;
the JSON log lines; the `rid` field of the scripts' events."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flashsale.engine import Code, Engine, Settings, keys, logs
from flashsale.engine.connection import RedisClient
from flashsale.engine.events import HoldEvent, parse
from flashsale.gateway.app import on_crash
from flashsale.gateway.request_ids import RequestIds
from flashsale.loadtests.gateway_process import Gateway, gateway
from tests.gateway_helpers import PAYMENT, checkout_body, client, create_sale, sale_body
from tests.helpers import eventually, open_sale, sale_config
from tests.reconciler_support import Process
from tests.saga_support import (
    Sims,
    free_base,
    fresh_database,
    saga_settings,
    simulators,
    wait_final,
)

GENERATED = re.compile(r"[0-9a-f]{12}-[0-9a-f]+")
STEPS = {"payment.authorize", "supplier.allocate", "payment.capture", "notify"}


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a process's log, each of which must be one JSON object with the fields."""
    docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for doc in docs:
        assert {"time", "level", "event", "message"} <= doc.keys(), doc
    return docs


# --- a gateway, a reconciler with the saga, the simulators, a database of their own --------------


@pytest.fixture(scope="module")
def rid_url(service_urls: dict[str, str]) -> str:
    admin = service_urls["FLASHSALE_DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    return asyncio.run(fresh_database(admin, "flashsale_rid_test"))


@pytest.fixture(scope="module")
def rsettings(
    settings: Settings, rid_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return saga_settings(settings, free_base(), rid_url, str(tmp_path_factory.mktemp("sim")))


@pytest.fixture(scope="module")
def sims(rsettings: Settings) -> Iterator[Sims]:
    with simulators(rsettings):
        yield Sims(rsettings)


@pytest.fixture(scope="module")
def env(service_urls: dict[str, str], rsettings: Settings, rid_url: str) -> dict[str, str]:
    """What the gateway and `flashsale reconcile` run with: the saga against the simulators."""
    return {
        **service_urls,
        "FLASHSALE_DATABASE_URL": rid_url,
        "FLASHSALE_ACCESS_LOG": "1",
        "FLASHSALE_SAGA": "1",
        "FLASHSALE_PAYMENT_URL": rsettings.local_payment_url,
        "FLASHSALE_SUPPLIER_URL": rsettings.local_supplier_url,
        "FLASHSALE_WEBHOOK_CUSTOMER_URL": rsettings.local_webhook_urls["customer"],
        "FLASHSALE_WEBHOOK_RETAILER_URL": rsettings.local_webhook_urls["retailer"],
        "FLASHSALE_SAGA_BACKOFF_BASE_MS": "50",
        "FLASHSALE_SAGA_BACKOFF_CAP_MS": "400",
    }


@pytest.fixture(scope="module")
def rgw(env: dict[str, str]) -> Iterator[Gateway]:
    with gateway(env, workers=2) as running:
        yield running


@pytest.fixture
async def rhttp(rgw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with client(rgw) as c:
        yield c


@pytest.fixture
async def pgc(rid_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(rid_url)
    yield conn
    await conn.close()


async def test_one_request_id_from_the_gateway_to_the_webhook(
    rgw: Gateway,
    rhttp: httpx.AsyncClient,
    sims: Sims,
    env: dict[str, str],
    pgc: asyncpg.Connection,
    redis_client: RedisClient,
    sale_id: str,
) -> None:
    sims.reset()
    sims.payment(decline_share=0.0)
    sims.supplier("P1", stock={"A": 10})
    await create_sale(rhttp, sale_id, sale_body([("P1", 10)]))
    reserve_id, confirm_id = "shop-7f3a:reserve", "shop-7f3a.confirm_1"
    held = await rhttp.post(
        f"/v1/sales/{sale_id}/holds", json=checkout_body("c1"), headers={"X-Request-Id": reserve_id}
    )
    assert held.status_code == 201, held.text
    assert held.headers["x-request-id"] == reserve_id
    hold = held.json()["hold_id"]
    confirmed = await rhttp.post(
        f"/v1/sales/{sale_id}/holds/{hold}/confirm",
        json=PAYMENT,
        headers={"X-Request-Id": confirm_id},
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.headers["x-request-id"] == confirm_id

    # The stream: each event of the hold names the request whose script wrote it.
    entries = cast(list[Any], await redis_client.xrange(keys.events(sale_id)))
    mine = [fields for _, fields in entries if fields.get("hold") == hold]
    assert [f["rid"] for f in mine if f["type"] == "confirmed"] == [confirm_id]
    for fields in mine:
        assert fields["rid"] == (confirm_id if fields["type"] == "confirmed" else reserve_id)

    # The gateway's log: one line for each request, written just after its answer.
    ids = (reserve_id, confirm_id)

    async def gateway_lines() -> dict[str, list[dict[str, Any]]]:
        lines = json_lines(rgw.log_path)
        found = {rid: [d for d in lines if d.get("request_id") == rid] for rid in ids}
        assert all(found.values()), found
        return found

    found = await eventually(gateway_lines, timeout_s=5)
    assert [(d["event"], d["status"], d["hold"]) for d in found[confirm_id]] == [
        ("http.request", 200, hold)
    ]
    assert [(d["status"], d["sale"]) for d in found[reserve_id]] == [(201, sale_id)]

    # The reconciler: the flush, the saga's steps, the notifications.
    proc = Process(env, "reconcile", "--progress-s", "0")
    try:
        assert await wait_final(pgc, sale_id, 1, timeout_s=60) == {hold: "FULFILLED"}
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]
    order = await pgc.fetchval("SELECT request_id FROM orders WHERE order_id = $1", hold)
    assert order == confirm_id
    steps = await pgc.fetch("SELECT step, request_id FROM saga_steps WHERE order_id = $1", hold)
    assert {r["step"] for r in steps} == STEPS
    assert {r["request_id"] for r in steps} == {confirm_id}
    notices = await pgc.fetch("SELECT request_id FROM outbox WHERE order_id = $1", hold)
    assert len(notices) == 2 and {r["request_id"] for r in notices} == {confirm_id}
    received = [n for n in sims.notifications()["received"] if n["data"]["order_id"] == hold]
    assert len(received) == 2 and {n["request_id"] for n in received} == {confirm_id}

    lines = json_lines(proc.log_path)
    step_lines = [d for d in lines if d["event"] == "saga.step" and d.get("order") == hold]
    assert {d["step"] for d in step_lines} == STEPS
    assert all(d["request_id"] == confirm_id and d["sale"] == sale_id for d in step_lines)
    delivered = [d for d in lines if d["event"] == "outbox.delivered" and d.get("order") == hold]
    assert len(delivered) == 2 and all(d["request_id"] == confirm_id for d in delivered)
    assert any(d["event"] == "reconcile.stopped" for d in lines)


@pytest.mark.parametrize(
    "sent", ["has space", "x" * 65, "é-accent", "semi;colon", "", 'quote"d', "tab\there"]
)
async def test_an_unfit_client_id_is_replaced_not_refused(
    rhttp: httpx.AsyncClient, sent: str
) -> None:
    reply = await rhttp.get("/healthz", headers={b"X-Request-Id": sent.encode("utf-8")})
    assert reply.status_code == 200
    assert GENERATED.fullmatch(reply.headers["x-request-id"]), reply.headers


async def test_every_answer_carries_an_id(rhttp: httpx.AsyncClient, sale_id: str) -> None:
    first, second = await rhttp.get("/healthz"), await rhttp.get("/healthz")
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(GENERATED.fullmatch(i) for i in ids) and ids[0] != ids[1]
    assert len(first.headers.get_list("x-request-id")) == 1
    # problem+json answers: a route's own, an unknown route, the body limit's middleware.
    sent = {"X-Request-Id": "client-1"}
    refused = await rhttp.post(f"/v1/sales/{sale_id}/holds", content=b"{", headers=sent)
    missing = await rhttp.get("/v1/nowhere", headers=sent)
    huge = await rhttp.post(
        f"/v1/sales/{sale_id}/holds",
        content=b"x" * 100_000,
        headers={**sent, "X-Request-Id": "big"},
    )
    assert [r.status_code for r in (refused, missing, huge)] == [415, 404, 413]
    assert [r.headers["x-request-id"] for r in (refused, missing, huge)] == [
        "client-1",
        "client-1",
        "big",
    ]


# --- the pieces, without services -----------------------------------------------------------------


async def test_a_crash_answers_500_with_the_id() -> None:
    """The 500 leaves from outside the middleware (Starlette's error middleware): it takes the id
    from the request's context, which stays set for the server's line about the crash."""

    async def boom(request: Request) -> Response:
        raise RuntimeError("a bug")

    app = Starlette(routes=[Route("/boom", boom)], exception_handlers={Exception: on_crash})
    app.add_middleware(RequestIds)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        reply = await c.get("/boom", headers={"X-Request-Id": "crash-1"})
    assert reply.status_code == 500 and reply.headers["x-request-id"] == "crash-1"
    assert reply.json()["code"] == "INTERNAL"
    assert logs.request_id.get() == "crash-1"  # still set for the line that reports the crash


def test_a_log_line_is_one_json_object_with_the_context() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("flashsale.test_request_ids")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with logs.bind(request="r-1", sale_id="S", order_id="o1"):
            log.info("step %s", "notify", extra={"event": "saga.step", "attempt": 2})
        log.warning("outside")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    inside, outside, failed = (json.loads(line) for line in out.getvalue().splitlines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", inside["time"])
    assert {k: v for k, v in inside.items() if k != "time"} == {
        "level": "info",
        "event": "saga.step",
        "message": "step notify",
        "request_id": "r-1",
        "sale": "S",
        "order": "o1",
        "attempt": 2,
    }
    assert (outside["event"], outside["level"]) == ("flashsale.test_request_ids", "warning")
    assert "request_id" not in outside and "sale" not in outside
    assert failed["level"] == "error" and "ValueError: boom" in failed["exc"]


def test_events_read_rid_and_older_entries_have_none() -> None:
    fields = {"type": "confirmed", "hold": "h1", "user": "c1", "lines": "A:p:1", "at_ms": "5"}
    with_rid = parse("1-0", {**fields, "rid": "abc-1"})
    assert isinstance(with_rid, HoldEvent) and with_rid.request_id == "abc-1"
    older = parse("2-0", fields)
    assert isinstance(older, HoldEvent) and older.request_id == ""
    unfit = parse("3-0", {**fields, "rid": "no spaces allowed"})
    assert isinstance(unfit, HoldEvent) and unfit.request_id == ""


async def test_scripts_write_the_bound_request_id_on_their_events(
    engine: Engine, sale_id: str
) -> None:
    await open_sale(engine, sale_config(sale_id, limit=0))
    with logs.bind(request="req-confirm"):
        held = await engine.reserve(sale_id, "c1", [("A", 1)])
        assert held.ok
        assert (await engine.confirm(sale_id, held.hold_id, "pay")).code is Code.OK
    with logs.bind(request="req-comp"):
        assert (await engine.compensate(sale_id, held.hold_id, "declined")).code is Code.OK
    other = await engine.reserve(sale_id, "c2", [("A", 1)])  # no request in hand
    assert (await engine.release(sale_id, other.hold_id)).code is Code.OK
    entries = cast(list[Any], await engine.client.xrange(keys.events(sale_id)))
    rids = {(f["type"], f["hold"]): f.get("rid") for _, f in entries if f["type"] != "reserved"}
    assert rids == {
        ("confirmed", held.hold_id): "req-confirm",
        ("compensated", held.hold_id): "req-comp",
        ("released", other.hold_id): None,
    }
