"""The engine's async API: one method per Lua script, typed results, one infrastructure error."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from typing import Any

from redis.commands.core import AsyncScript

from flashsale.engine import feed_apply, keys, logs
from flashsale.engine.batcher import ScriptBatcher
from flashsale.engine.connection import RedisClient, hgetall, redis_errors, smembers
from flashsale.engine.errors import EngineUnavailable, InvalidInput
from flashsale.engine.feeds import FeedChange, FeedRef, FeedRow
from flashsale.engine.results import (
    AdjustResult,
    Code,
    ExtendResult,
    HoldOutcome,
    HoldView,
    LoadResult,
    ReserveResult,
    SaleState,
    SweepResult,
    parse_allocations,
    reserve_result,
    sale_state,
)
from flashsale.engine.sale import MAX_UNITS, SaleConfig
from flashsale.engine.scripts import Scripts
from flashsale.engine.settings import Settings
from flashsale.engine.validation import check_cart, check_id, check_int, check_status
from flashsale.engine.waiting_room import TokenUse


class Engine:
    """Reserve, confirm, release, extend, sweep, adjust, load and read sales held in Redis.

    The scripts that write events for a request (reserve, confirm, release, compensate, extend)
    are given the request id in hand (`logs.request_id`, set by the gateway or the saga)."""

    def __init__(self, client: RedisClient, settings: Settings, *, batching: bool = True) -> None:
        self.client = client
        self.settings = settings
        self.scripts = Scripts.register(client)
        self.batcher = (
            ScriptBatcher(
                client,
                wait_replicas=settings.redis_wait_replicas,
                wait_timeout_ms=settings.redis_wait_timeout_ms,
            )
            if batching
            else None
        )
        self._retention_ms = settings.hold_retention_s * 1000
        self._idem_ttl_ms = settings.idempotency_ttl_s * 1000
        self._offset_ms = 0

    def advance_clock(self, delta_ms: int) -> None:
        """Shift the scripts' clock forward; only when FLASHSALE_TEST_CLOCK is on."""
        if not self.settings.test_clock:
            raise RuntimeError("the test clock is off (FLASHSALE_TEST_CLOCK)")
        self._offset_ms += delta_ms

    @property
    def offset_ms(self) -> int:
        """The scripts' clock offset (0 unless the test clock moved it)."""
        return self._offset_ms

    async def call(self, script: AsyncScript, keys_: Sequence[str], args: Sequence[Any]) -> Any:
        """Runs a registered script the way this engine runs its own (batched, one error type);
        for the engine modules built beside it, such as the waiting room."""
        return await self._run(script, keys_, args)

    async def _run(self, script: AsyncScript, keys_: Sequence[str], args: Sequence[Any]) -> Any:
        if self.batcher is not None:
            # stock.lua only reads: its answer needs no WAIT (FLASHSALE_REDIS_WAIT_REPLICAS).
            writes = script is not self.scripts.stock
            return await self.batcher.call(script, keys_, args, writes=writes)
        with redis_errors():
            return await script(keys=keys_, args=args)

    async def load_sale(self, config: SaleConfig) -> LoadResult:
        config.validate()
        sid = config.sale_id
        stock_keys = [keys.stock(sid, item.sku) for item in config.items]
        reply = await self._run(
            self.scripts.load_sale,
            [keys.sale(sid), keys.skus(sid), *stock_keys],
            [keys.prefix(sid), *config.load_args()],
        )
        code = Code(reply[0])
        if code in (Code.OK, Code.ALREADY_LOADED):
            await self._index_sale(sid)
        if code is Code.STOCK_COMMITTED:
            return LoadResult(code, sku=reply[1], supplier=reply[2])
        return LoadResult(code, version=int(reply[1]))

    async def _index_sale(self, sale_id: str) -> None:
        with redis_errors():
            await self.client.sadd(keys.sales_index(), sale_id)

    async def sale_ids(self) -> list[str]:
        """Every sale loaded into this Redis (sweeper and reconciler walk it)."""
        with redis_errors():
            members = await smembers(self.client, keys.sales_index())
        return sorted(members)

    async def sale_loaded(self, sale_id: str) -> bool:
        """Whether Redis holds the sale (one SISMEMBER of the index)."""
        check_id("sale_id", sale_id)
        with redis_errors():
            return bool(await self.client.sismember(keys.sales_index(), sale_id))

    async def forget_sale(self, sale_id: str) -> int:
        """Delete every Redis key of a sale (benchmark clean-up, recovery drills); returns how
        many. All keys share the sale's slot, so one DEL per batch works on a cluster too."""
        check_id("sale_id", sale_id)
        deleted = 0
        with redis_errors():
            batch: list[str] = []
            async for key in self.client.scan_iter(match=keys.prefix(sale_id) + "*", count=1000):
                batch.append(key)
                if len(batch) == 500:
                    deleted += await self.client.delete(*batch)
                    batch = []
            if batch:
                deleted += await self.client.delete(*batch)
            await self.client.srem(keys.sales_index(), sale_id)
        return deleted

    async def set_status(self, sale_id: str, status: str) -> tuple[Code, str]:
        """Returns the code and the status the sale had before. Closing a sale gives its
        waiting room's keys `room_retention_s` to live."""
        check_id("sale_id", sale_id)
        check_status(status)
        reply = await self._run(
            self.scripts.set_status,
            [keys.sale(sale_id), *keys.room_keys(sale_id)],
            [status, self._offset_ms, self.settings.room_retention_s * 1000],
        )
        return Code(reply[0]), reply[1] if len(reply) > 1 else ""

    async def reserve(
        self,
        sale_id: str,
        customer_id: str,
        lines: Sequence[tuple[str, int]],
        idempotency_key: str | None = None,
        *,
        admitted: bool = False,
        token: TokenUse | None = None,
    ) -> ReserveResult:
        """`admitted`: the caller verified a waiting-room admission. `token`: that admission's
        token, whose attempts reserve.lua counts (implies admitted)."""
        check_id("sale_id", sale_id)
        check_id("customer_id", customer_id)
        if idempotency_key is not None:
            check_id("idempotency_key", idempotency_key)
        cart = check_cart(
            lines, max_lines=self.settings.max_cart_lines, max_qty=self.settings.max_line_qty
        )
        hold_id = secrets.token_urlsafe(12)
        idem = idempotency_key or ""
        script_keys = [
            keys.sale(sale_id),
            keys.holds(sale_id),
            keys.user(sale_id, customer_id),
            keys.idem(sale_id, customer_id, idem),
            keys.hold(sale_id, hold_id),
            keys.room_tries(sale_id, token.place if token else None),
            keys.room_active(sale_id),
            *(keys.stock(sale_id, sku) for sku, _ in cart),
        ]
        args: list[str | int] = [
            keys.prefix(sale_id),
            hold_id,
            customer_id,
            idem,
            _fingerprint(customer_id, cart) if idem else "",
            self._offset_ms,
            self.settings.reclaim_batch,
            self._retention_ms,
            self._idem_ttl_ms,
            int(admitted or token is not None),
            *(token.args() if token else ("", 0, 0)),
            logs.request_id.get(),
        ]
        for sku, qty in cart:
            args += [sku, qty]
        return reserve_result(await self._run(self.scripts.reserve, script_keys, args))

    async def confirm(
        self, sale_id: str, hold_id: str, payment_ref: str = "", *, owner: str = ""
    ) -> HoldOutcome:
        """`owner`: the customer asking; another's hold answers UNKNOWN_HOLD ('' = anyone)."""
        check_id("sale_id", sale_id)
        check_id("hold_id", hold_id)
        _check_owner(owner)
        if not isinstance(payment_ref, str) or len(payment_ref) > 512:
            raise InvalidInput("payment_ref", "must be a string of at most 512 characters")
        reply = await self._run(
            self.scripts.confirm,
            [keys.hold(sale_id, hold_id), keys.holds(sale_id), keys.events(sale_id)],
            [
                keys.prefix(sale_id),
                hold_id,
                self._offset_ms,
                self._retention_ms,
                payment_ref,
                owner,
                logs.request_id.get(),
            ],
        )
        code = Code(reply[0])
        if code is Code.OK:
            return HoldOutcome(code, reply[1], bool(reply[3]), int(reply[2] or 0))
        return HoldOutcome(code, reply[1] if len(reply) > 1 else "")

    async def release(self, sale_id: str, hold_id: str, *, owner: str = "") -> HoldOutcome:
        """`owner`: the customer asking; another's hold answers UNKNOWN_HOLD ('' = anyone)."""
        return await self._release(sale_id, hold_id, "release", "", owner=owner)

    async def compensate(
        self,
        sale_id: str,
        hold_id: str,
        reason: str,
        writeoff: Sequence[tuple[str, str, int]] = (),
    ) -> HoldOutcome:
        """Undo a confirmed hold (payment failed): sold units go back on sale, except the
        `writeoff` parts (sku, supplier, qty) that no supplier can ship: those leave the stock
        as an adjustment in the same atomic step, so nobody can buy them in between."""
        if not isinstance(reason, str) or len(reason) > 512:
            raise InvalidInput("reason", "must be a string of at most 512 characters")
        parts = []
        for sku, supplier_id, qty in writeoff:
            check_id("sku", sku)
            check_id("supplier_id", supplier_id)
            check_int("qty", qty, 1, MAX_UNITS)
            parts.append(f"{sku}:{supplier_id}:{qty}")
        return await self._release(sale_id, hold_id, "compensate", reason, ",".join(parts))

    async def _release(
        self,
        sale_id: str,
        hold_id: str,
        mode: str,
        reason: str,
        writeoff: str = "",
        *,
        owner: str = "",
    ) -> HoldOutcome:
        check_id("sale_id", sale_id)
        check_id("hold_id", hold_id)
        _check_owner(owner)
        reply = await self._run(
            self.scripts.release,
            [keys.hold(sale_id, hold_id), keys.holds(sale_id), keys.events(sale_id)],
            [
                keys.prefix(sale_id),
                hold_id,
                self._offset_ms,
                self._retention_ms,
                mode,
                reason,
                writeoff,
                owner,
                logs.request_id.get(),
            ],
        )
        code = Code(reply[0])
        if code is Code.OK:
            return HoldOutcome(code, reply[1], bool(reply[2]))
        return HoldOutcome(code, reply[1] if len(reply) > 1 else "")

    async def extend(self, sale_id: str, hold_id: str, *, owner: str = "") -> ExtendResult:
        """`owner`: the customer asking; another's hold answers UNKNOWN_HOLD ('' = anyone)."""
        check_id("sale_id", sale_id)
        check_id("hold_id", hold_id)
        _check_owner(owner)
        reply = await self._run(
            self.scripts.extend,
            [keys.hold(sale_id, hold_id), keys.holds(sale_id), keys.sale(sale_id)],
            [
                keys.prefix(sale_id),
                hold_id,
                self._offset_ms,
                self._retention_ms,
                owner,
                logs.request_id.get(),
            ],
        )
        code = Code(reply[0])
        if code in (Code.OK, Code.ALREADY_EXTENDED):
            return ExtendResult(code, expires_at_ms=int(reply[1]))
        return ExtendResult(code, status=reply[1] if len(reply) > 1 else "")

    async def sweep(self, sale_id: str, limit: int | None = None) -> SweepResult:
        check_id("sale_id", sale_id)
        batch = check_int(
            "limit", self.settings.sweep_batch if limit is None else limit, 1, 100_000
        )
        reply = await self._run(
            self.scripts.sweep,
            [keys.holds(sale_id), keys.events(sale_id)],
            [keys.prefix(sale_id), self._offset_ms, batch, self._retention_ms],
        )
        return SweepResult(int(reply[0]), bool(reply[1]))

    async def adjust(
        self,
        sale_id: str,
        sku: str,
        supplier_id: str,
        delta: int,
        reason: str = "",
        *,
        once: str = "",
    ) -> AdjustResult:
        """`once`: a caller's key (e.g. `<order>-<change>-<sku>-<supplier>`): the adjustment is
        made once for it, and a second call answers the first (replay), for ADJUST_ONCE_S."""
        check_id("sale_id", sale_id)
        check_id("sku", sku)
        check_id("supplier_id", supplier_id)
        check_int("delta", delta, -MAX_UNITS, MAX_UNITS)
        if not isinstance(reason, str) or len(reason) > 512:
            raise InvalidInput("reason", "must be a string of at most 512 characters")
        if once and not ONCE_PATTERN.fullmatch(once):
            raise InvalidInput("once", "must be 1-200 characters of A-Z a-z 0-9 _ - : .")
        marker = [keys.adjusted(sale_id, once)] if once else []
        reply = await self._run(
            self.scripts.adjust,
            [keys.stock(sale_id, sku), keys.events(sale_id), *marker],
            [
                keys.prefix(sale_id),
                sku,
                supplier_id,
                delta,
                self._offset_ms,
                reason,
                ADJUST_ONCE_S * 1000,
            ],
        )
        code = Code(reply[0])
        if code is not Code.OK:
            return AdjustResult(code)
        replay = len(reply) > 4 and bool(int(reply[4]))
        return AdjustResult(code, int(reply[1]), int(reply[2]), int(reply[3]), replay)

    async def apply_feed(
        self, sale_id: str, rows: Sequence[FeedRow], ref: FeedRef
    ) -> list[FeedChange]:
        """A supplier feed's levels set as the sale's offers (engine/feed_apply.py)."""
        return await feed_apply.apply_feed(self, sale_id, rows, ref)

    async def stock(self, sale_id: str) -> SaleState | None:
        """One consistent snapshot of a sale's config and stock; None for an unknown sale."""
        check_id("sale_id", sale_id)
        reply = await self._run(
            self.scripts.stock,
            [keys.sale(sale_id), keys.skus(sale_id), keys.holds(sale_id)],
            [keys.prefix(sale_id), self._offset_ms],
        )
        if not reply:
            return None
        try:
            return sale_state(sale_id, reply)
        except ValueError as exc:  # a counter that is not a number: Redis holds corrupt state
            raise EngineUnavailable(f"sale {sale_id} has corrupt stock in Redis: {exc}") from exc

    async def get_hold(self, sale_id: str, hold_id: str) -> HoldView | None:
        check_id("sale_id", sale_id)
        check_id("hold_id", hold_id)
        with redis_errors():
            h = await hgetall(self.client, keys.hold(sale_id, hold_id))
        if not h:
            return None
        return HoldView(
            hold_id=hold_id,
            customer_id=h["user"],
            status=h["status"],
            expires_at_ms=int(h["expires_at_ms"]),
            created_at_ms=int(h["created_at_ms"]),
            extended=h.get("extended") == "1",
            allocations=parse_allocations(h["lines"]),
            confirmed_at_ms=int(h.get("confirmed_at_ms", 0)),
        )


ONCE_PATTERN = re.compile(r"[A-Za-z0-9_:.-]{1,200}")
ADJUST_ONCE_S = 30 * 86400  # longer than any saga step is retried or left dead-lettered


def _check_owner(owner: str) -> None:
    if owner:
        check_id("owner", owner)


def _fingerprint(customer_id: str, cart: list[tuple[str, int]]) -> str:
    body = customer_id + "|" + ",".join(f"{sku}:{qty}" for sku, qty in sorted(cart))
    return hashlib.blake2b(body.encode(), digest_size=12).hexdigest()
