"""The simulated suppliers' stock feeds: a pollable stock endpoint with ETag and Last-Modified
(GET /feeds/{supplier}/stock), signed webhooks pushed to the gateway, stock files written to a
drop folder; out-of-order, duplicate, malformed and spiking records on request (/_sim/feeds/...).
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flashsale.loadtests.simulators.common import (
    Misbehaviour,
    body_of,
    control_routes,
    refuse,
    reply,
    update_numbers,
)
from flashsale.loadtests.simulators.feed_docs import (
    Item,
    document,
    signed_headers,
    webhook_body,
    write_file,
)

MEDIA = {"csv": "text/csv", "json": "application/json", "xml": "application/xml"}
# Malformed records, in turn, of the feed's own SKUs. Bad values (a word, a negative, a half)
# are what a webhook may carry: the feed core quarantines them. Rows missing a field exist only
# in files (a webhook body missing one is refused whole).
BAD_VALUES: tuple[object, ...] = ("plenty", -5, 2.5)
MISSING_FIELDS: tuple[object, ...] = (None, "no sku")


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class FeedState(Misbehaviour):
    """One supplier's feed: its stock (supplier_sku -> on_hand), where its webhooks go."""

    stock: dict[str, Any] = field(default_factory=dict)
    format: str = "json"
    secret: str = ""
    target: str = ""  # the gateway's POST /v1/feeds/{supplier} URL
    truncate_bytes: int = 0  # serve only this much of the stock document (a broken body)
    version: int = 0
    as_of: str = ""
    modified_at: float = 0.0  # unix seconds, for Last-Modified
    fetches: list[dict[str, Any]] = field(default_factory=list)
    pushes: list[dict[str, Any]] = field(default_factory=list)

    def change(self, stock: dict[str, Any], as_of: str | None = None) -> None:
        self.stock.update(stock)
        self.version += 1
        self.as_of = as_of or now_iso()
        self.modified_at = time.time()

    @property
    def etag(self) -> str:
        digest = hashlib.sha256(f"{self.version}:{sorted(self.stock.items())}".encode())
        return f'"{digest.hexdigest()[:20]}"'

    def items(self) -> list[Item]:
        return [{"supplier_sku": k, "on_hand": v} for k, v in self.stock.items()]


class FeedSim:
    def __init__(self) -> None:
        self.feeds: dict[str, FeedState] = {}
        self.background: set[asyncio.Task[None]] = set()
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10.0))

    def app(self) -> Starlette:
        sim = "/_sim/feeds/{supplier}"
        return Starlette(
            routes=[
                Route("/feeds/{supplier}/stock", self.stock, methods=["GET"]),
                Route(sim, self.put_feed, methods=["PUT"]),
                Route(sim + "/stock", self.change_stock, methods=["POST"]),
                Route(sim + "/push", self.push, methods=["POST"]),
                Route(sim + "/file", self.file, methods=["POST"]),
                *control_routes(self.records, self.configure, self.reset),
            ]
        )

    def _feed(self, request: Request) -> FeedState:
        return self.feeds.setdefault(request.path_params["supplier"], FeedState())

    # --- the pollable endpoint -----------------------------------------------------------------

    async def stock(self, request: Request) -> Response:
        feed = self._feed(request)
        seen = {"at": time.time(), "if_none_match": request.headers.get("if-none-match")}
        feed.fetches.append(seen)
        if (outage := await feed.before("")) is not None:
            seen["status"] = outage.status_code
            return outage
        modified = email.utils.formatdate(int(feed.modified_at), usegmt=True)
        headers = {"ETag": feed.etag, "Last-Modified": modified}
        if _not_modified(request, feed):
            seen["status"] = 304
            return Response(status_code=304, headers=headers)
        seen["status"] = 200
        await feed.after()
        body = document(feed.format, feed.items(), feed.as_of or now_iso())
        if feed.truncate_bytes:
            body = body[: feed.truncate_bytes]
        return Response(body, 200, headers, media_type=MEDIA[feed.format])

    # --- control -------------------------------------------------------------------------------

    async def put_feed(self, request: Request) -> Response:
        doc = await body_of(request)
        feed = FeedState()
        update_numbers(feed, doc)
        for name in ("format", "secret", "target"):
            if isinstance(doc.get(name), str):
                setattr(feed, name, doc[name])
        if feed.format not in MEDIA:
            return refuse(422, "INVALID_REQUEST", f"format must be one of {', '.join(MEDIA)}")
        feed.change(dict(doc.get("stock") or {}), doc.get("as_of"))
        self.feeds[request.path_params["supplier"]] = feed
        return reply(200, {"version": feed.version, "etag": feed.etag})

    async def change_stock(self, request: Request) -> Response:
        doc = await body_of(request)
        feed = self._feed(request)
        feed.change(dict(doc.get("stock") or {}), doc.get("as_of"))
        return reply(200, {"version": feed.version, "etag": feed.etag})

    async def file(self, request: Request) -> Response:
        """Writes the supplier's stock as a file into `dir` (its drop folder)."""
        doc = await body_of(request)
        feed = self._feed(request)
        fmt = doc.get("format") or feed.format
        folder = Path(str(doc.get("dir", ".")))
        name = doc.get("name") or f"stock-{feed.version}.{fmt}"
        bad = _malformed(
            int(doc.get("malformed", 0)), list(feed.stock), BAD_VALUES + MISSING_FIELDS
        )
        items = feed.items() + bad
        path = await asyncio.to_thread(write_file, folder / name, fmt, items, feed.as_of)
        return reply(200, {"path": str(path), "records": len(items)})

    async def push(self, request: Request) -> Response:
        """Signed webhooks to the feed's target; see `plan` for what can be asked."""
        doc = await body_of(request)
        feed = self._feed(request)
        supplier = request.path_params["supplier"]
        deliveries = plan(supplier, feed, doc)
        rate = float(doc.get("rate_per_s") or 0)
        sending = self._send_all(feed, deliveries, rate, str(doc.get("signature", "good")))
        if doc.get("background"):
            task = asyncio.create_task(sending)
            self.background.add(task)
            task.add_done_callback(self.background.discard)
            return reply(202, {"deliveries": len(deliveries)})
        await sending
        return reply(200, {"sent": feed.pushes[-len(deliveries) :] if deliveries else []})

    async def _send_all(
        self, feed: FeedState, deliveries: list[dict[str, Any]], rate: float, signature: str
    ) -> None:
        """At `rate_per_s` deliveries a second on a fixed schedule (each sent without waiting for
        the answers before it), or one after the other when 0."""
        started = time.monotonic()
        sends = []
        for n, delivery in enumerate(deliveries):
            if rate > 0:
                await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
                sends.append(asyncio.create_task(self._send(feed, delivery, signature)))
            else:
                await self._send(feed, delivery, signature)
        await asyncio.gather(*sends)

    async def _send(self, feed: FeedState, delivery: dict[str, Any], signature: str) -> None:
        body = webhook_body(delivery["delivery_id"], delivery["as_of"], delivery["items"])
        timestamp = int(time.time()) - (600 if signature == "stale" else 0)
        headers = signed_headers(feed.secret + ("x" if signature == "bad" else ""), body, timestamp)
        record: dict[str, Any] = {"delivery_id": delivery["delivery_id"], "sent_at": time.time()}
        try:
            answer = await self.client.post(feed.target, content=body, headers=headers)
            record.update(status=answer.status_code, body=_json(answer))
        except httpx.HTTPError as exc:
            record.update(status=0, body={"error": f"{type(exc).__name__}: {exc}"})
        record["answered_at"] = time.time()
        feed.pushes.append(record)

    async def records(self, _: Request) -> Response:
        return reply(
            200,
            {
                sid: {"fetches": f.fetches, "pushes": f.pushes, "version": f.version}
                for sid, f in self.feeds.items()
            },
        )

    async def configure(self, request: Request) -> Response:
        return reply(200, {"feeds": sorted(self.feeds)})

    async def reset(self, _: Request) -> Response:
        self.feeds.clear()
        return reply(200, {})


def _not_modified(request: Request, feed: FeedState) -> bool:
    tag = request.headers.get("if-none-match")
    if tag is not None:
        return feed.etag in [t.strip() for t in tag.split(",")]
    since = request.headers.get("if-modified-since")
    if since is None:
        return False
    try:
        moment = email.utils.parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False
    return int(feed.modified_at) <= moment


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return {"text": answer.text[:200]}


def _malformed(count: int, skus: list[str], kinds: tuple[object, ...] = BAD_VALUES) -> list[Item]:
    out: list[Item] = []
    for i in range(max(0, count)):
        sku, kind = skus[i % len(skus)] if skus else "SKU", kinds[i % len(kinds)]
        if kind is None:
            out.append({"supplier_sku": sku})  # no on_hand
        elif kind == "no sku":
            out.append({"on_hand": 3})
        else:
            out.append({"supplier_sku": sku, "on_hand": kind})
    return out


def plan(supplier: str, feed: FeedState, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The deliveries a push sends. `deliveries`: [{items, as_of?, delivery_id?}] (default: one
    of the feed's stock); `spike` {sku: factor} multiplies quantities; `malformed` n adds records
    with bad values to the first; `out_of_order` sends the newest as_of first; `duplicate` sends
    each twice with the same delivery_id."""
    given = doc.get("deliveries") or [{"items": feed.items()}]
    stamp = time.time_ns()
    out = []
    for n, delivery in enumerate(given):
        items = [dict(i) for i in delivery.get("items", [])]
        for item in items:
            factor = dict(doc.get("spike") or {}).get(item.get("supplier_sku"))
            if factor is not None and isinstance(item.get("on_hand"), int):
                item["on_hand"] = int(item["on_hand"] * factor)
        if n == 0:
            skus = [str(i.get("supplier_sku")) for i in items] or list(feed.stock)
            items += _malformed(int(doc.get("malformed", 0)), skus)
        as_of = delivery.get("as_of") or now_iso()
        ids = delivery.get("delivery_id") or f"sim-{supplier}-{stamp}-{n}"
        out.append({"delivery_id": ids, "as_of": as_of, "items": items})
    if doc.get("out_of_order"):
        out.sort(key=lambda d: d["as_of"], reverse=True)
    if doc.get("duplicate"):
        out = [d for delivery in out for d in (delivery, delivery)]
    return out
