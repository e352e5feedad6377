"""Model-based test: random sequences of engine calls against a plain-Python model of the sale.

The model is written from the semantics of the Lua scripts (lua/*.lua), not by calling them.
After every step the engine's answer, the full stock, every hold, every customer's counters
and the length of the events stream must equal the model's.

Time: the only clock step is 40 s while holds last 60 s (+60 s once extended), so every
expiry boundary the model sees is at least 20 s away from the real elapsed time of an
example, or (for extended holds, 120 s = 3 steps) exactly on it, where `expires_at <= now`
already holds on the server too. The model and the server therefore always agree on which
holds have expired.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

import fakeredis
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from flashsale.engine import Engine, InvalidInput, Settings, keys
from flashsale.engine.connection import RedisClient, connect
from flashsale.engine.results import (
    AdjustResult,
    Allocation,
    Code,
    ExtendResult,
    HoldOutcome,
    ReserveResult,
    SkuStock,
    SupplierStock,
    SweepResult,
)
from tests.helpers import assert_sound, open_sale, sale_config

T = TypeVar("T")

STOCK = {"A": [("p", 5), ("q", 4)], "B": [("p", 3), ("r", 3)]}
LIMIT = 3
TTL_MS = 60_000
EXTEND_MS = 60_000  # the sale's extend_ms: 0 in the config, which means the hold TTL again
STEP_MS = 40_000
CUSTOMERS = ("c0", "c1", "c2", "c3")
UNKNOWN_HOLD = "no-such-hold"
# Steps between full invariant checks (tests/helpers.assert_sound, which SCANs the whole
# keyspace: cheap on a fresh fakeredis, not on a shared Redis holding other tests' sales).
SOUND_EVERY = {"fakeredis": 3, "redis": 10}

idem_keys = st.sampled_from((None,) * 5 + ("k0", "k1", "k2"))
hold_picks = st.integers(-1, 30)  # -1: an unknown hold id, else one of the holds made so far


@st.composite
def carts(draw: st.DrawFn) -> list[tuple[str, int]]:
    """1-2 lines of the sale's skus, sometimes with the unknown sku Z anywhere among them,
    rarely with a sku twice (refused by the engine in Python)."""
    skus = list(draw(st.sampled_from((["A"], ["B"], ["A", "B"], ["B", "A"]))))
    if draw(st.integers(0, 7)) == 7:
        skus.insert(draw(st.integers(0, len(skus))), "Z")
    if draw(st.integers(0, 15)) == 15:
        skus.insert(draw(st.integers(0, len(skus))), draw(st.sampled_from(skus)))
    return [(sku, draw(st.integers(1, 3))) for sku in skus]


# --------------------------------------------------------------------------- the model


@dataclass
class Supply:
    loaded: int
    adjusted: int = 0
    available: int = 0
    reserved: int = 0
    sold: int = 0


@dataclass
class ModelHold:
    customer: str
    allocations: tuple[Allocation, ...]
    created: int  # model clock at creation
    expires_at_ms: int  # the engine's absolute expiry (learned from its reserve answer)
    fingerprint: tuple[str, tuple[tuple[str, int], ...]]
    status: str = "held"
    extended: bool = False
    confirmed_at_ms: int = 0

    def due(self, now: int) -> bool:
        """Held and past its expiry (it stays 'held' until a script notices)."""
        end = self.created + TTL_MS + (EXTEND_MS if self.extended else 0)
        return self.status == "held" and now >= end


@dataclass
class Model:
    now: int = 0
    status: str = "open"
    stock: dict[str, dict[str, Supply]] = field(default_factory=dict)
    holds: dict[str, ModelHold] = field(default_factory=dict)  # insertion = creation order
    users: dict[str, dict[str, int]] = field(default_factory=dict)
    idem: dict[tuple[str, str], str] = field(default_factory=dict)
    events: int = 0

    def __post_init__(self) -> None:
        self.stock = {
            sku: {sup: Supply(n, available=n) for sup, n in sups} for sku, sups in STOCK.items()
        }
        self.users = {c: {} for c in CUSTOMERS}

    # shared helpers of lua/_shared.lua

    def _move(self, hold: ModelHold, src: str, dst: str) -> None:
        for a in hold.allocations:
            s = self.stock[a.sku][a.supplier]
            setattr(s, src, getattr(s, src) - a.qty)
            setattr(s, dst, getattr(s, dst) + a.qty)

    def _uncount(self, hold: ModelHold) -> None:
        counts = self.users[hold.customer]
        for a in hold.allocations:
            counts[a.sku] -= a.qty
            if counts[a.sku] <= 0:
                del counts[a.sku]

    def _end(self, hold: ModelHold, status: str) -> None:
        self._move(hold, "reserved", "available")
        self._uncount(hold)
        hold.status = status
        self.events += 1

    def _settle(self, hold: ModelHold) -> str:
        if hold.due(self.now):
            self._end(hold, "expired")
        return hold.status

    def _reclaim(self, limit: int = 1000) -> tuple[int, bool]:
        """Oldest expiry first (equal expiries: by hold id, as a sorted set orders them);
        returns how many expired and whether more are waiting."""
        due = sorted(
            (h.expires_at_ms, hold_id) for hold_id, h in self.holds.items() if h.due(self.now)
        )
        for _, hold_id in due[:limit]:
            self._end(self.holds[hold_id], "expired")
        return min(len(due), limit), len(due) > limit

    # one method per engine call

    def reserve(
        self,
        customer: str,
        cart: list[tuple[str, int]],
        key: str | None,
        new_id: str,
        new_expiry: int,
    ) -> ReserveResult:
        """new_id / new_expiry: what the engine answered, used only if a hold is created."""
        self._reclaim()
        fp = (customer, tuple(sorted(cart)))
        if key is not None and (customer, key) in self.idem:
            prior_id = self.idem[(customer, key)]
            prior = self.holds[prior_id]
            if prior.fingerprint != fp:
                return ReserveResult(Code.IDEMPOTENCY_CONFLICT, detail=prior_id)
            return ReserveResult(
                Code.OK,
                hold_id=prior_id,
                expires_at_ms=prior.expires_at_ms,
                allocations=prior.allocations,
                replay=True,
            )
        if self.status not in ("open", "scheduled"):  # the sale starts at the epoch
            return ReserveResult(Code.SALE_NOT_OPEN, detail=self.status)
        for sku, _ in cart:
            if sku not in self.stock:
                return ReserveResult(Code.UNKNOWN_SKU, sku=sku)
        counts = self.users[customer]
        for sku, qty in cart:
            if counts.get(sku, 0) + qty > LIMIT:
                return ReserveResult(Code.LIMIT_EXCEEDED, sku=sku, units=counts.get(sku, 0))
        for sku, qty in cart:
            available = sum(s.available for s in self.stock[sku].values())
            if available < qty:
                return ReserveResult(Code.SOLD_OUT, sku=sku, units=available)
        allocations = []
        for sku, qty in cart:
            left = qty
            for sup, s in self.stock[sku].items():  # priority order
                take = min(s.available, left)
                if take > 0:
                    s.available -= take
                    s.reserved += take
                    allocations.append(Allocation(sku, sup, take))
                    left -= take
                    if left == 0:
                        break
            counts[sku] = counts.get(sku, 0) + qty
        self.holds[new_id] = ModelHold(customer, tuple(allocations), self.now, new_expiry, fp)
        if key is not None:
            self.idem[(customer, key)] = new_id
        self.events += 1  # reserved
        return ReserveResult(
            Code.OK, hold_id=new_id, expires_at_ms=new_expiry, allocations=tuple(allocations)
        )

    def confirm(self, hold_id: str, at_ms: int) -> HoldOutcome:
        """at_ms: the engine's confirmation time, used only if the hold is confirmed now."""
        hold = self.holds.get(hold_id)
        if hold is None:
            return HoldOutcome(Code.UNKNOWN_HOLD)
        if hold.status in ("confirmed", "compensated"):
            return HoldOutcome(Code.OK, hold.status, True, hold.confirmed_at_ms)
        status = self._settle(hold)
        if status == "expired":
            return HoldOutcome(Code.HOLD_EXPIRED, status)
        if status != "held":
            return HoldOutcome(Code.HOLD_RELEASED, status)
        self._move(hold, "reserved", "sold")
        hold.status = "confirmed"
        hold.confirmed_at_ms = at_ms
        self.events += 1
        return HoldOutcome(Code.OK, "confirmed", False, at_ms)

    def release(self, hold_id: str) -> HoldOutcome:
        hold = self.holds.get(hold_id)
        if hold is None:
            return HoldOutcome(Code.UNKNOWN_HOLD)
        was = hold.status
        status = self._settle(hold)
        if status in ("confirmed", "compensated"):
            return HoldOutcome(Code.HOLD_CONFIRMED, status)
        if status != "held":
            return HoldOutcome(Code.OK, status, was != "held")
        self._end(hold, "released")
        return HoldOutcome(Code.OK, "released", False)

    def compensate(self, hold_id: str) -> HoldOutcome:
        hold = self.holds.get(hold_id)
        if hold is None:
            return HoldOutcome(Code.UNKNOWN_HOLD)
        status = self._settle(hold)
        if status == "compensated":
            return HoldOutcome(Code.OK, status, True)
        if status != "confirmed":
            return HoldOutcome(Code.NOT_CONFIRMED, status)
        self._move(hold, "sold", "available")
        self._uncount(hold)
        hold.status = "compensated"
        self.events += 1
        return HoldOutcome(Code.OK, "compensated", False)

    def extend(self, hold_id: str) -> ExtendResult:
        hold = self.holds.get(hold_id)
        if hold is None:
            return ExtendResult(Code.UNKNOWN_HOLD)
        status = self._settle(hold)
        if status == "expired":
            return ExtendResult(Code.HOLD_EXPIRED, status=status)
        if status in ("confirmed", "compensated"):
            return ExtendResult(Code.HOLD_CONFIRMED, status=status)
        if status != "held":
            return ExtendResult(Code.HOLD_RELEASED, status=status)
        if hold.extended:
            return ExtendResult(Code.ALREADY_EXTENDED, expires_at_ms=hold.expires_at_ms)
        hold.extended = True
        hold.expires_at_ms += EXTEND_MS
        self.events += 1  # extended
        return ExtendResult(Code.OK, expires_at_ms=hold.expires_at_ms)

    def sweep(self, limit: int) -> SweepResult:
        return SweepResult(*self._reclaim(limit))

    def adjust(self, sku: str, supplier: str, delta: int) -> AdjustResult:
        if sku not in self.stock:
            return AdjustResult(Code.UNKNOWN_SKU)
        s = self.stock[sku].get(supplier)
        if s is None:
            return AdjustResult(Code.UNKNOWN_SUPPLIER)
        applied = max(delta, -s.available)
        shortfall = min(applied - delta, s.reserved + s.sold)
        s.available += applied
        s.adjusted += applied
        self.events += 1
        return AdjustResult(Code.OK, applied, shortfall, s.available)

    def set_status(self, status: str) -> tuple[Code, str]:
        previous = self.status
        if previous == "closed" and status != "closed":
            return Code.BAD_TRANSITION, previous
        self.status = status
        return Code.OK, previous

    # what the engine's reads must show

    def sku_stocks(self) -> tuple[SkuStock, ...]:
        out = []
        for sku in sorted(self.stock):
            sups = tuple(
                SupplierStock(sup, s.loaded, s.adjusted, s.available, s.reserved, s.sold)
                for sup, s in self.stock[sku].items()
            )
            out.append(
                SkuStock(
                    sku,
                    sum(s.loaded for s in sups),
                    sum(s.adjusted for s in sups),
                    sum(s.available for s in sups),
                    sum(s.reserved for s in sups),
                    sum(s.sold for s in sups),
                    sups,
                )
            )
        return tuple(out)

    def open_holds(self) -> int:
        return sum(1 for h in self.holds.values() if h.status == "held")


# --------------------------------------------------------------------------- the machine


class EngineVsModel(RuleBasedStateMachine):
    """One example = one fresh sale on a fresh client (and, for fakeredis, a fresh server).
    The test sets the two class attributes on a subclass per backend."""

    base_settings: ClassVar[Settings]
    redis_url: ClassVar[str | None]  # None: fakeredis

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.sound_every = SOUND_EVERY["fakeredis" if self.redis_url is None else "redis"]
        self.sale_id = f"model-{uuid.uuid4().hex[:12]}"
        self.model = Model()
        self.steps = 0
        self.last_reserve: tuple[str, list[tuple[str, int]], str | None] | None = None
        self.checked = False  # the last step ended with a successful comparison
        try:
            self.client: RedisClient = self._run(self._connect())
            self.engine = Engine(self.client, self.base_settings)
            self._run(open_sale(self.engine, sale_config(self.sale_id, STOCK, limit=LIMIT)))
        except BaseException:
            self.runner.close()
            raise

    async def _connect(self) -> RedisClient:
        if self.redis_url is None:
            server = fakeredis.FakeServer()
            fake: RedisClient = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
            return fake
        return connect(self.redis_url)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def _hold(self, pick: int) -> str:
        ids = list(self.model.holds)
        return ids[pick % len(ids)] if pick >= 0 else UNKNOWN_HOLD

    def _step(self) -> None:
        self.steps += 1
        self.checked = False

    # rules

    def _reserve(self, customer: str, cart: list[tuple[str, int]], key: str | None) -> None:
        self._step()
        self.last_reserve = (customer, cart, key)
        if len({sku for sku, _ in cart}) < len(cart):  # refused before Redis: nothing changes
            with pytest.raises(InvalidInput):
                self._run(self.engine.reserve(self.sale_id, customer, cart, key))
            return
        got = self._run(self.engine.reserve(self.sale_id, customer, cart, key))
        want = self.model.reserve(customer, cart, key, got.hold_id, got.expires_at_ms)
        assert got == want

    @rule(customer=st.sampled_from(CUSTOMERS), cart=carts(), key=idem_keys)
    def reserve(self, customer: str, cart: list[tuple[str, int]], key: str | None) -> None:
        self._reserve(customer, cart, key)

    @rule(customer=st.sampled_from(CUSTOMERS), cart=carts(), key=idem_keys)
    def reserve_more(self, customer: str, cart: list[tuple[str, int]], key: str | None) -> None:
        """Same as reserve: a second rule doubles its share of the steps."""
        self._reserve(customer, cart, key)

    @precondition(lambda self: self.last_reserve is not None)
    @rule(reorder=st.booleans())
    def retry_reserve(self, reorder: bool) -> None:
        """A client retrying its last call (idempotent with a key), maybe with the lines in
        another order (same fingerprint)."""
        assert self.last_reserve is not None
        customer, cart, key = self.last_reserve
        self._reserve(customer, cart[::-1] if reorder else cart, key)

    @precondition(lambda self: bool(self.model.holds))
    @rule(pick=hold_picks)
    def confirm(self, pick: int) -> None:
        self._step()
        hold_id = self._hold(pick)
        got = self._run(self.engine.confirm(self.sale_id, hold_id, "pay-1"))
        assert got == self.model.confirm(hold_id, got.at_ms)

    @precondition(lambda self: bool(self.model.holds))
    @rule(pick=hold_picks)
    def release(self, pick: int) -> None:
        self._step()
        hold_id = self._hold(pick)
        got = self._run(self.engine.release(self.sale_id, hold_id))
        assert got == self.model.release(hold_id)

    @precondition(lambda self: bool(self.model.holds))
    @rule(pick=hold_picks)
    def compensate(self, pick: int) -> None:
        self._step()
        hold_id = self._hold(pick)
        got = self._run(self.engine.compensate(self.sale_id, hold_id, "payment failed"))
        assert got == self.model.compensate(hold_id)

    @precondition(lambda self: bool(self.model.holds))
    @rule(pick=hold_picks)
    def extend(self, pick: int) -> None:
        self._step()
        hold_id = self._hold(pick)
        got = self._run(self.engine.extend(self.sale_id, hold_id))
        assert got == self.model.extend(hold_id)

    @rule(limit=st.sampled_from((100_000, 1, 2)))
    def sweep(self, limit: int) -> None:
        self._step()
        got = self._run(self.engine.sweep(self.sale_id, limit=limit))
        assert got == self.model.sweep(limit)

    @rule(
        sku=st.sampled_from(("A", "B", "A", "B", "Z")),
        supplier=st.sampled_from(("p", "q", "r", "x")),
        delta=st.integers(-5, 5),
    )
    def adjust(self, sku: str, supplier: str, delta: int) -> None:
        self._step()
        got = self._run(self.engine.adjust(self.sale_id, sku, supplier, delta, "recount"))
        assert got == self.model.adjust(sku, supplier, delta)

    @rule(status=st.sampled_from(("open", "paused", "open", "scheduled")))
    def set_status(self, status: str) -> None:
        self._step()
        got = self._run(self.engine.set_status(self.sale_id, status))
        assert got == self.model.set_status(status)

    @precondition(lambda self: self.steps >= 20)
    @rule()
    def close_sale(self) -> None:
        """Closed is final; only late in an example so that most steps see a live sale."""
        self._step()
        got = self._run(self.engine.set_status(self.sale_id, "closed"))
        assert got == self.model.set_status("closed")

    @rule(steps=st.sampled_from((1, 2)))
    def advance_clock(self, steps: int) -> None:
        """One or two 40 s steps (the only step size); two at once pass a fresh hold's expiry
        but not an extended one's."""
        self._step()
        for _ in range(steps):
            self.engine.advance_clock(STEP_MS)
            self.model.now += STEP_MS

    # checks

    @invariant()
    def engine_state_matches_model(self) -> None:
        self._run(self._compare())
        if self.steps % self.sound_every == 0:
            self._run(assert_sound(self.engine, self.sale_id))
        self.checked = True

    async def _compare(self) -> None:
        sid, model = self.sale_id, self.model
        state = await self.engine.stock(sid)
        assert state is not None
        assert (
            state.status,
            state.open_holds,
            state.per_user_limit,
            state.hold_ttl_ms,
            state.extend_ms,
        ) == (model.status, model.open_holds(), LIMIT, TTL_MS, EXTEND_MS)
        assert state.skus == model.sku_stocks()

        holds: dict[str, tuple[object, ...]] = {}
        for hold_id in model.holds:
            view = await self.engine.get_hold(sid, hold_id)
            assert view is not None, hold_id
            assert view.expires_at_ms - view.created_at_ms == (
                TTL_MS + (EXTEND_MS if view.extended else 0)
            ), view
            holds[hold_id] = (
                view.customer_id,
                view.status,
                view.extended,
                view.allocations,
                view.expires_at_ms,
                view.confirmed_at_ms,
            )
        assert holds == {
            hold_id: (
                h.customer,
                h.status,
                h.extended,
                h.allocations,
                h.expires_at_ms,
                h.confirmed_at_ms,
            )
            for hold_id, h in model.holds.items()
        }

        users = {c: await self.client.hgetall(keys.user(sid, c)) for c in CUSTOMERS}
        assert users == {
            c: {sku: str(n) for sku, n in counts.items()} for c, counts in model.users.items()
        }
        assert await self.client.xlen(keys.events(sid)) == model.events

    def teardown(self) -> None:
        try:
            if self.checked:  # a failed step has already been reported; don't mask it
                self._run(assert_sound(self.engine, self.sale_id))
        finally:
            try:
                self._run(self._cleanup())
            finally:
                self.runner.close()

    async def _cleanup(self) -> None:
        try:
            if self.redis_url is not None:  # the shared Redis keeps nothing of the example
                await self.engine.forget_sale(self.sale_id)
        finally:
            await self.client.aclose()


@pytest.mark.parametrize(("backend", "examples"), [("fakeredis", 60), ("redis", 40)])
def test_engine_matches_model(
    backend: str, examples: int, settings: Settings, request: pytest.FixtureRequest
) -> None:
    url: str | None = None
    if backend == "redis":
        service_urls: dict[str, str] = request.getfixturevalue("service_urls")
        url = service_urls["FLASHSALE_REDIS_URL"]

    class Machine(EngineVsModel):
        base_settings = replace(settings, test_clock=True, reclaim_batch=1000)
        redis_url = url

    run_state_machine_as_test(
        Machine,
        settings=hypothesis_settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
