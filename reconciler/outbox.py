"""Delivers the outbox (notifications the saga wrote in its own transactions) to webhooks.

At least once: a row is marked delivered only after a 2xx, so a receiver that is down gets it
later, retried with capped exponential backoff and jitter, without end. Each delivery carries
the row's id (`X-Flashsale-Notification-Id: ntf_<id>`), the same on every try, so the receiver
can drop duplicates, and an HMAC-SHA256 signature over "<timestamp>.<body>" so it can trust it:
    X-Flashsale-Timestamp: <unix seconds>
    X-Flashsale-Signature: v1=<hex digest>
and, when the order has one, the X-Request-Id of the request that confirmed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx
import orjson

from flashsale.engine import logs
from flashsale.reconciler.backoff import jittered_ms
from flashsale.reconciler.metrics import Metrics
from flashsale.store import outbox

log = logging.getLogger("flashsale.outbox")


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    urls: dict[str, str]  # recipient -> webhook URL
    secret: str
    batch: int = 100
    lease_ms: int = 30_000
    backoff_base_ms: int = 500
    backoff_cap_ms: int = 30_000
    poll_idle_ms: int = 200


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, max_age_s: int = 300) -> bool:
    """The receiver's side: a valid signature of a recent timestamp."""
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > max_age_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


class OutboxDelivery:
    def __init__(
        self,
        pool: asyncpg.Pool,
        client: httpx.AsyncClient,
        config: OutboxConfig,
        metrics: Metrics,
    ) -> None:
        self.pool = pool
        self.client = client
        self.config = config
        self.metrics = metrics

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await self.round()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning(
                    "outbox: PostgreSQL unavailable (%s); retrying",
                    exc,
                    extra={"event": "outbox.unavailable"},
                )
                sent = 0
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.poll_idle_ms / 1000)

    async def round(self) -> int:
        """One batch of due notifications, delivered concurrently; how many were tried."""
        async with self.pool.acquire() as conn:
            rows = await outbox.claim(conn, self.config.batch, self.config.lease_ms)
        if rows:
            await asyncio.gather(*(self._deliver(r) for r in rows))
        return len(rows)

    async def _deliver(self, row: asyncpg.Record) -> None:
        with logs.bind(request=row["request_id"], order_id=row["order_id"] or ""):
            await self._post(row)

    async def _post(self, row: asyncpg.Record) -> None:
        body = orjson.dumps(
            {
                "id": f"ntf_{row['id']}",
                "topic": row["topic"],
                "recipient": row["recipient"],
                "created_at": row["created_at"].isoformat(),
                "data": orjson.loads(row["payload"]),
            }
        )
        now = int(time.time())
        headers = {
            "content-type": "application/json",
            "x-flashsale-notification-id": f"ntf_{row['id']}",
            "x-flashsale-timestamp": str(now),
            "x-flashsale-signature": sign(self.config.secret, now, body),
        }
        if row["request_id"]:
            headers["x-request-id"] = row["request_id"]
        url = self.config.urls[row["recipient"]]
        error = ""
        try:
            reply = await self.client.post(url, content=body, headers=headers)
            if not 200 <= reply.status_code < 300:
                error = f"HTTP {reply.status_code}"
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        async with self.pool.acquire() as conn:
            if not error:
                await outbox.delivered(conn, row["id"])
                self.metrics.notices_sent += 1
                _line(logging.INFO, "outbox.delivered", row, "delivered")
                return
            c = self.config
            delay_ms = jittered_ms(c.backoff_base_ms, c.backoff_cap_ms, row["attempts"] - 1)
            await outbox.retry_later(conn, row["id"], error, delay_ms)
            self.metrics.notice_failures += 1
            _line(logging.WARNING, "outbox.retry", row, f"{error}; due again", error=error)


def _line(level: int, event: str, row: asyncpg.Record, what: str, **fields: str) -> None:
    log.log(
        level,
        "outbox: notification ntf_%s (%s to %s): %s",
        row["id"],
        row["topic"],
        row["recipient"],
        what,
        extra={
            "event": event,
            "notification": f"ntf_{row['id']}",
            "topic": row["topic"],
            "recipient": row["recipient"],
            "attempt": row["attempts"],
            **fields,
        },
    )
