"""Pure parts of the waiting room: tokens and tickets, the shuffle, wait estimates, client
addresses and rate-limit buckets, the per-worker cache."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from typing import Any

import jwt
import pytest

from flashsale.engine import keys
from flashsale.engine.sale import RateLimitConfig
from flashsale.engine.settings import Settings, token_previous_secrets
from flashsale.engine.shuffle import commitment, new_seed, places_of, prequeue_order
from flashsale.engine.waiting_room import Beat
from flashsale.gateway import cache as cache_module
from flashsale.gateway.cache import Cached
from flashsale.gateway.problems import Problem
from flashsale.gateway.rate_limits import (
    Limits,
    TrustedProxies,
    address_key,
    buckets,
    client_address,
)
from flashsale.gateway.room.eta import (
    FLOOR_S,
    GHOST_DOUBT,
    Z90,
    Pace,
    RateWindow,
    eta_s,
    pace_of,
    shown,
)
from flashsale.gateway.room.polls import heard, poll_after_ms
from flashsale.gateway.room.tokens import KeyRing, Tickets, Tokens
from flashsale.gateway.room.worker import _check
from tests.helpers import eventually
from tests.waiting_room_helpers import independent_order

RING = KeyRing("k2", {"k1": "old-secret", "k2": "new-secret"})
TOKENS = Tokens(RING)


def now_ms() -> int:
    return int(time.time() * 1000)


def issue(sale: str = "S", customer: str = "c1", ends_ms: int | None = None) -> str:
    now = now_ms()
    return TOKENS.issue(sale, customer, 7, now, ends_ms or now + 60_000)


def refused(token: str, sale: str = "S", customer: str = "c1", scheme: str = "Bearer") -> Problem:
    with pytest.raises(Problem) as caught:
        TOKENS.verify(f"{scheme} {token}", sale, customer)
    return caught.value


def b64(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def test_a_valid_token_gives_its_claims() -> None:
    ends_ms = now_ms() + 60_000
    claims = TOKENS.verify("Bearer " + issue(ends_ms=ends_ms), "S", "c1")
    assert (claims.sale_id, claims.customer_id, claims.place) == ("S", "c1", 7)
    assert claims.expires_at_ms == ends_ms // 1000 * 1000
    assert jwt.get_unverified_header(issue())["kid"] == "k2"


def test_a_token_of_a_previous_key_is_still_accepted_and_an_unknown_one_is_not() -> None:
    now = now_ms()
    old = Tokens(KeyRing("k1", {"k1": "old-secret"})).issue("S", "c1", 7, now, now + 60_000)
    assert TOKENS.verify("Bearer " + old, "S", "c1").place == 7
    gone = Tokens(KeyRing("k0", {"k0": "older"})).issue("S", "c1", 7, now, now + 60_000)
    assert refused(gone).code == "TOKEN_INVALID"


def _forged(alg: str) -> str:
    claims = jwt.decode(issue(), options={"verify_signature": False})
    if alg == "none":
        return b64({"alg": "none", "typ": "JWT", "kid": "k2"}) + "." + b64(claims) + "."
    key = RING.token_keys["k2"]
    return jwt.encode(claims, key, alg, headers={"kid": "k2"})


ABUSE = {
    "expired": (lambda: issue(ends_ms=now_ms() - 5000), "S", "c1", "TOKEN_EXPIRED", 401),
    "wrong sale": (lambda: issue(sale="T"), "S", "c1", "TOKEN_WRONG_SALE", 403),
    "wrong customer": (lambda: issue(customer="c2"), "S", "c1", "TOKEN_WRONG_CUSTOMER", 403),
    "bad signature": (lambda: issue()[:-4] + "AAAA", "S", "c1", "TOKEN_INVALID", 401),
    "alg none": (lambda: _forged("none"), "S", "c1", "TOKEN_INVALID", 401),
    "alg HS512": (lambda: _forged("HS512"), "S", "c1", "TOKEN_INVALID", 401),
    "garbage": (lambda: "not.a.token", "S", "c1", "TOKEN_INVALID", 401),
    "empty": (lambda: "", "S", "c1", "TOKEN_INVALID", 401),
}


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the forged HS512
@pytest.mark.parametrize("case", list(ABUSE.values()), ids=list(ABUSE))
def test_abused_tokens_are_refused_with_their_code(case: Any) -> None:
    make, sale, customer, code, status = case
    problem = refused(make(), sale, customer)
    assert (problem.code, problem.status) == (code, status)
    if status == 401:
        assert problem.headers["WWW-Authenticate"].startswith("Bearer")


def test_only_the_bearer_scheme_is_read() -> None:
    assert refused(issue(), scheme="Basic").code == "TOKEN_INVALID"


def test_a_token_signed_with_the_raw_secret_is_refused() -> None:
    """Signing keys are derived per purpose: knowing a ticket MAC key signs nothing."""
    claims = jwt.decode(issue(), options={"verify_signature": False})
    raw = jwt.encode(claims, RING.ticket_keys[0], "HS256", headers={"kid": "k2"})
    assert refused(raw).code == "TOKEN_INVALID"


def test_tickets_are_signed_per_sale_and_survive_a_rotation() -> None:
    tickets = Tickets(RING)
    ticket = tickets.make("S", 42)
    assert ticket.startswith("42-") and len(ticket) <= 64
    assert tickets.parse("S", ticket) == 42
    assert tickets.parse("T", ticket) is None
    assert tickets.parse("S", "43" + ticket[2:]) is None
    old = Tickets(KeyRing("k1", {"k1": "old-secret"})).make("S", 42)
    assert tickets.parse("S", old) == 42
    for bad in ("42", "-abc", "042-" + ticket[3:], "x-" + ticket[3:], "٤٢-" + ticket[3:]):
        assert tickets.parse("S", bad) is None


def test_key_ring_settings_are_checked_at_start() -> None:
    def parse_previous(raw: str) -> dict[str, str]:
        return token_previous_secrets(Settings(token_previous_secrets=raw))

    assert parse_previous(" k0=a , k1=b=c ") == {"k0": "a", "k1": "b=c"}  # split at the first =
    for bad in ("k0", "=x", "k 0=x", "k0="):
        with pytest.raises(ValueError):
            parse_previous(bad)
    with pytest.raises(ValueError):
        KeyRing.from_settings(Settings(token_kid="k1", token_previous_secrets="k1=x"))


def test_the_shuffle_matches_its_description_and_is_a_permutation() -> None:
    seed, digest = new_seed()
    assert commitment(seed) == digest and len(seed) == 64
    order = prequeue_order(seed, 1000)
    assert order == independent_order(seed, 1000)
    assert sorted(order) == list(range(1, 1001)) and order != sorted(order)
    places = places_of(order)
    assert all(order[places[t] - 1] == t for t in range(1, 1001))
    assert prequeue_order(seed, 1) == [1] and prequeue_order(seed, 0) == []
    assert prequeue_order("0" * 64, 5) == prequeue_order("0" * 64, 5) != prequeue_order("1" * 64, 5)


def spread_s(places: int, pace: Pace) -> float:
    """eta_s's p90 - p50, from docs/waiting-room.md#estimates."""
    admissions = places / pace.factor
    var = pace.dispersion * admissions + admissions**2 * pace.factor_var
    ghosts = (GHOST_DOUBT * max(pace.factor - 1, 0) * admissions) ** 2
    return Z90 * math.sqrt((var + ghosts) / pace.per_s**2 + FLOOR_S**2)


def test_eta_scales_the_setting_by_the_measured_places_per_admission() -> None:
    assert eta_s(100, pace_of([], 10)) == (10.0, 15.0)
    assert eta_s(100, pace_of([(0, 10.0)] * 10, 10)) == (10.0, 15.0)  # stalled: fall back
    assert eta_s(100, pace_of([(20, 10.0)] * 9, 10)) == (10.0, 15.0)  # 9 intervals: too few
    steady = pace_of([(20, 10.0)] * 10, 10)  # 2 places per admission, never wavering
    assert (steady.per_s, steady.factor_var, steady.measured) == (20.0, 0.0, True)
    assert eta_s(100, steady) == pytest.approx((5.0, 5.0 + spread_s(100, steady)))
    raised = pace_of([(20, 10.0)] * 10, 25)  # the rate raised: at once
    assert eta_s(100, raised) == pytest.approx((2.0, 2.0 + spread_s(100, raised)))
    assert eta_s(100, steady, age_s=1.5) == pytest.approx((3.5, 3.5 + spread_s(100, steady)))
    assert eta_s(1, pace_of([], 10), age_s=5) == (0.0, 0.0)
    assert shown((4.5, 5.49)) == (4, 5) and shown((4.51, 5.5)) == (5, 6)


def test_recent_intervals_weigh_more_and_a_drift_is_followed() -> None:
    """60 intervals at 1 place per admission, then 15 at 2: the mean weighted to the recent ones
    has moved most of the way, the trend's end all of it (within its limit of a quarter)."""
    drifting = pace_of([(10, 10.0)] * 60 + [(20, 10.0)] * 15, 10)
    assert 1.8 < drifting.factor < 2.1  # 2 now
    flat = pace_of([(10, 10.0), (14, 10.0)] * 30, 10)  # wavering, going nowhere
    assert flat.factor == pytest.approx(1.2, abs=0.03)


def test_the_p90_widens_with_the_square_root_of_the_wait_and_the_window_s_doubt() -> None:
    """Places passed per interval at 10/s: 8, 8, 12, 12, ... (a wavering that lasts over two
    intervals) against 8, 12, 8, 12, ... (one interval's excess is the next one's shortfall,
    as when the loop's ticks fall on either side of a sample: it cancels over a wait)."""
    lasting = pace_of([(8, 10.0), (8, 10.0), (12, 10.0), (12, 10.0)] * 8, 10)
    cancelling = pace_of([(8, 10.0), (12, 10.0)] * 16, 10)
    assert lasting.factor == pytest.approx(1.0, abs=0.05)
    assert cancelling.factor == pytest.approx(1.0, abs=0.05)
    assert lasting.dispersion > 5 * cancelling.dispersion > 0
    for places in (10, 100, 1000):
        p50, p90 = eta_s(places, lasting)
        assert p50 == pytest.approx(places / lasting.per_s)
        assert p90 == pytest.approx(p50 + spread_s(places, lasting))
        assert eta_s(places, cancelling)[1] - eta_s(places, cancelling)[0] < p90 - p50
    short, long = eta_s(10, lasting), eta_s(1000, lasting)
    assert (long[1] - long[0]) / long[0] < (short[1] - short[0]) / short[0]  # relatively closer
    assert eta_s(10, Pace(10.0)) == (1.0, 1.5)  # not measured: 1.5 x


def test_the_front_of_the_line_is_told_to_poll_faster_and_may_stay_silent_less() -> None:
    settings = Settings()  # polls every 2 s, 0.5 s near the turn, heartbeats flushed every 0.5 s
    assert heard(settings, 2000) == Beat(4500, 2000)  # 2 missed polls and a flush
    assert heard(settings, 500) == Beat(1500, 500)
    assert heard(Settings(queue_ghost_after_ms=60_000), 500).silence_ms == 60_000  # the floor
    assert poll_after_ms(settings, 30.0) == 2000
    assert poll_after_ms(settings, 5.8) == 500  # within 1.3 x 4.5 s of its turn
    assert poll_after_ms(settings, 5.9) == 2000
    assert poll_after_ms(settings, 5.0, sold_out=True) == 10_000
    assert poll_after_ms(settings, None) == 2000  # the pre-queue: no place yet
    assert poll_after_ms(Settings(queue_poll_ms=300), 0.0) == 300  # never slower than normal


def test_the_rate_window_samples_once_a_second_and_keeps_busy_intervals() -> None:
    window = RateWindow()
    for i in range(50):  # 20 places and 16 admissions per second, the rate set to 16
        window.add(i * 250, i * 5, i * 4, busy=i < 40, rate_per_s=16 if i < 30 else 8)
    # Samples at 0, 1, ..., 12 s: busy until 9 s, the setting changed between 7 s and 8 s.
    assert len(window.points) == 13 and window.admit_rate() == 16.0
    assert window.busy_intervals() == []  # it stands still now
    for i in range(52, 64):  # moving again at 13 s: measured anew from its second interval
        window.add(i * 250, i * 5, i * 4, busy=True, rate_per_s=8)
    assert window.busy_intervals() == [(20, 8.0)]  # 14-15 s
    moving = RateWindow()
    for i in range(40):
        moving.add(i * 250, i * 5, i * 4, rate_per_s=16 if i < 30 else 8)
    assert moving.busy_intervals() == [(20, 16.0)] * 7 + [(20, 8.0)]  # none across 7-8 s


def _scope(peer: str, *forwarded: str) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", f.encode()) for f in forwarded]
    return {"client": (peer, 5555), "headers": headers}


def test_ipv6_clients_count_per_64_ipv4_per_address() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("203.0.113.9") == "203.0.113.9"
    assert address_key("::ffff:203.0.113.9") == "::ffff:203.0.113.9"  # an IPv4 client
    assert address_key("unknown") == "unknown"


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    trusted = TrustedProxies.parse("10.0.0.0/8, ::1")
    assert client_address(_scope("203.0.113.9", "198.51.100.1"), trusted) == "203.0.113.9"
    assert client_address(_scope("10.1.1.1", "198.51.100.1"), trusted) == "198.51.100.1"
    # The client wrote the left part: only the nearest untrusted hop counts.
    spoofed = _scope("10.1.1.1", "1.2.3.4, 198.51.100.1", "10.2.2.2")
    assert client_address(spoofed, trusted) == "198.51.100.1"
    assert client_address(_scope("::1", "garbage, 10.3.3.3"), trusted) == "10.3.3.3"
    assert client_address(_scope("10.1.1.1"), trusted) == "10.1.1.1"
    assert client_address({"client": None, "headers": []}, trusted) == "unknown"
    with pytest.raises(ValueError):
        TrustedProxies.parse("10.0.0.0/33")


def test_buckets_follow_the_sale_then_the_settings_and_zero_turns_off() -> None:
    settings = Settings(rate_per_client_per_s=5, rate_burst=9, rate_per_sale_per_s=0)
    got = buckets("S", "join", "c1", "::1", Limits.of(RateLimitConfig(), settings))
    assert [(b.key, b.rate_per_s, b.burst) for b in got] == [
        (keys.rate_bucket("S", "join:c", "c1"), 5, 9),
        (keys.rate_bucket("S", "join:a", "::1"), 5, 9),
    ]
    own = Limits.of(RateLimitConfig(per_client_per_s=0, per_sale_per_s=100), settings)
    only_sale = buckets("S", "checkout", "c1", "::1", own)
    assert [(b.key, b.rate_per_s, b.burst) for b in only_sale] == [
        (keys.rate_bucket("S", "checkout:s", "all"), 100, 100)
    ]
    no_customer = buckets("S", "hold", None, "::1", Limits.of(RateLimitConfig(), settings))
    assert [b.key for b in no_customer] == [keys.rate_bucket("S", "hold:a", "::1")]
    assert Limits.of(RateLimitConfig(burst=0), settings).burst == 5  # no burst: one second
    assert not Limits.of(RateLimitConfig(), Settings()).on


class Clock:
    """Stands in for the `time` module of gateway/cache.py: ages move only when a test says."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def monotonic(self) -> float:
        return self.now_s


async def test_the_cache_loads_once_for_many_callers_and_serves_stale_while_refreshing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(cache_module, "time", clock)
    loads: list[str] = []

    async def load(key: str) -> int:
        loads.append(key)
        await asyncio.sleep(0.05)  # kept: a slow load, so the callers below overlap with it
        return len(loads)

    cache: Cached[str, int] = Cached(load, fresh_s=0.1, stale_s=10)
    assert await asyncio.gather(*(cache.get("a") for _ in range(50))) == [1] * 50
    clock.now_s += 0.15
    assert await cache.get("a") == 1  # stale, a refresh starts behind it

    async def refreshed() -> bool:
        return cache.peek("a") == 2

    await eventually(refreshed, timeout_s=5, interval_s=0.01)
    assert await cache.get("a") == 2 and loads == ["a", "a"]
    assert await cache.refresh("a") == 3


@pytest.mark.parametrize(
    "bad",
    [
        {"queue_tick_ms": 0},
        {"token_max_attempts": 0},
        {"queue_claim_ms": 1500},  # not above the front's poll (500) + the cache's age (1000)
        {"queue_poll_front_ms": 0},
        {"queue_ghost_after_ms": -1},
        {"rate_burst": -1},
    ],
    ids=["tick 0", "attempts 0", "claim too short", "front poll 0", "ghost < 0", "negative burst"],
)
def test_settings_that_would_break_the_room_fail_the_start(bad: dict[str, int]) -> None:
    _check(Settings())
    _check(Settings(queue_claim_ms=0))  # never taken back
    with pytest.raises(ValueError):
        _check(Settings(**bad))  # type: ignore[arg-type]
