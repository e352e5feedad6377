"""The shopper: one customer per journey through the waiting room, checkout and payment."""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import Counter
from typing import Any

from locust import FastHttpUser, between, task
from locust.user.task import LOCUST_STATE_STOPPING

from flashsale.loadtests.crowd.passes import customer_token
from flashsale.loadtests.crowd.plan import Plan
from flashsale.loadtests.crowd.relay import OUTCOMES
from flashsale.loadtests.crowd.replies import (
    CONFIRM,
    HOLDS,
    JOIN,
    RELEASE,
    STATUS,
    describe,
    header,
    lines_of,
    problem_code,
    retry_after_s,
    sale_skus,
)
from flashsale.loadtests.options import DEFAULT

# A shopper's checkout refusals that are answers, not errors, and what they are counted as.
REFUSALS = {
    "SOLD_OUT": "refused_sold_out",
    "LIMIT_EXCEEDED": "refused_limit",
    "SALE_NOT_OPEN": "sale_not_open",
}
CHECKOUT_TRIES = 6  # rate-limited and transport-failed tries included


class Shopper(FastHttpUser):
    """One journey per task run, each a new customer: join the line, poll as advised, check out
    1-3 units when admitted, then pay, give back, or walk away from the hold."""

    weight = DEFAULT["shopper_weight"]  # set_up sets the run's (--shopper-weight)
    wait_time = between(0.5, 2.0)  # until the next customer arrives on this user

    def on_start(self) -> None:
        self.plan = Plan.of(self.environment.parsed_options)
        self.prefix = f"/v1/sales/{self.plan.sale}"
        self.skus: list[str] = []
        self.joining = False  # this journey asked to join the line (what it was told matters)

    @task
    def shop(self) -> None:
        OUTCOMES.count("journeys")
        customer = f"shopper-{uuid.uuid4().hex[:20]}"
        # Each customer comes from an address of its own (the gateway believes X-Forwarded-For
        # from a trusted proxy), so per-address rate limits hit the bots, not the crowd; and
        # with the token the shop signed for them, which says who they are.
        octets = (random.randrange(256), random.randrange(256), random.randrange(1, 255))
        self.headers = {
            "X-Forwarded-For": "10.{}.{}.{}".format(*octets),
            "X-Customer-Token": customer_token(
                self.plan.customer_secret, self.plan.audience, customer
            ),
        }
        finished = self.joining = False
        try:
            self._journey()
            finished = True
        finally:
            # Killed or broken in the middle: what happened is unknown, once it asked to join.
            # Before that it only read the sale page: Locust stops a user between two journeys
            # by killing it, and the kill can land just after the next journey began (its wait
            # ended as the stop came), in its first request.
            if not finished:
                OUTCOMES.count("cut" if self.joining else "stopped_before_joining")

    def _journey(self) -> None:
        self.skus = sale_skus(self, self.prefix)
        if not self.skus:
            OUTCOMES.count("errors")
            return
        self.joining = True
        joined = self._join()
        if joined is None:
            return
        token: str | None = None
        if joined:  # a waiting room: wait for our turn
            token = self._wait_turn(joined)
            if token is None:
                return
        hold = self._checkout(token)
        if hold is not None:
            self._decide(hold)

    def _stopping(self) -> bool:
        return self._state == LOCUST_STATE_STOPPING

    def _join(self) -> dict[str, Any] | None:
        """The ticket's first status; {} when the sale has no waiting room; None: leave."""
        for _ in range(CHECKOUT_TRIES):
            with self.client.post(
                f"{self.prefix}/queue",
                json={},
                headers=self.headers,
                name=JOIN,
                catch_response=True,
            ) as reply:
                code = problem_code(reply)
                if reply.status_code in (200, 201):
                    reply.success()
                    OUTCOMES.count("joined")
                    doc: dict[str, Any] = reply.json()
                    return doc
                if reply.status_code == 429:
                    reply.success()
                    OUTCOMES.count("rate_limited")
                    time.sleep(retry_after_s(reply))
                    continue
                if code in ("NO_WAITING_ROOM", "SALE_NOT_OPEN"):
                    reply.success()
                    OUTCOMES.count("no_waiting_room" if code == "NO_WAITING_ROOM" else code.lower())
                    return {} if code == "NO_WAITING_ROOM" else None
                reply.failure(describe(reply))
                OUTCOMES.count("errors")
                return None
        OUTCOMES.count("gave_up")
        return None

    def _wait_turn(self, doc: dict[str, Any]) -> str | None:
        """Polls the ticket at the interval each answer advises until admitted (the token), or
        leaves: out of patience, or on purpose at its moment (--leave-share), silently."""
        ticket, leave_at = doc["ticket"], time.monotonic() + self.plan.patience_s
        walk_out_at, seen_sold_out, noted = self._walk_out_at(doc), False, False
        while True:
            status = doc["status"]
            if status == "admitted":
                OUTCOMES.count("admitted")
                token: str = doc["token"]
                return token
            if status == "expired":
                OUTCOMES.count("ticket_expired")
                return None
            if status == "sold_out" and not seen_sold_out:
                seen_sold_out = True
                OUTCOMES.count("sold_out_seen")
            if self._stopping() or time.monotonic() >= leave_at:
                OUTCOMES.count("gave_up")
                return None
            pause_s = doc["poll_after_ms"] / 1000
            if time.monotonic() + pause_s >= walk_out_at:
                time.sleep(max(0.0, walk_out_at - time.monotonic()))
                OUTCOMES.count("left_waiting")
                OUTCOMES.leavers.append([ticket, int(time.time() * 1000)])
                return None
            time.sleep(pause_s)
            asked_at = time.time()
            with self.client.get(
                f"{self.prefix}/queue/{ticket}", name=STATUS, catch_response=True
            ) as reply:
                if reply.status_code != 200:
                    reply.failure(describe(reply))
                    OUTCOMES.count("errors")
                    return None
                doc = reply.json()
            if not noted and doc["status"] == "waiting" and doc.get("eta_measured"):
                noted = True  # the first estimate from the line's measured pace
                # It counts from the moment of the answer: between asking and hearing (on a
                # busy load generator the reply can sit a while before this line runs).
                given_at_ms = int((asked_at + time.time()) * 500)
                estimate = [doc["eta_p50_s"], doc["eta_p90_s"], doc["position"]]
                OUTCOMES.estimates.append([ticket, given_at_ms, *estimate])

    def _walk_out_at(self, doc: dict[str, Any]) -> float:
        """When this shopper leaves the line on purpose: never (inf) but for --leave-share of
        them, then at a random moment within the wait the join answer led it to expect."""
        if random.random() >= self.plan.leave_share:
            return math.inf
        expect_s = min(float(doc.get("eta_p90_s") or 0), self.plan.patience_s)
        return time.monotonic() + random.uniform(0, max(expect_s, 1.0))

    def _cart(self, units: int) -> list[dict[str, Any]]:
        picked = Counter(random.choice(self.skus) for _ in range(units))
        return [{"sku": sku, "qty": qty} for sku, qty in sorted(picked.items())]

    def _checkout(self, token: str | None) -> dict[str, Any] | None:
        """The hold, or None. A transport error is retried with the same Idempotency-Key (at most
        one hold, whatever got lost); sold out or over the limit: one more try, 1 unit of a sku
        the sale page says is still in stock."""
        cart, key, smaller = self._cart(random.randint(1, 3)), uuid.uuid4().hex, False
        headers = {**self.headers}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        for _ in range(CHECKOUT_TRIES):
            body = {"items": cart}
            hold, next_step = self._try_checkout(body, {**headers, "Idempotency-Key": key})
            if next_step == "again":
                continue
            if next_step != "smaller" or smaller:
                return hold
            self.skus = sale_skus(self, self.prefix, in_stock_only=True)
            if not self.skus:
                return None
            cart, key, smaller = self._cart(1), uuid.uuid4().hex, True
        OUTCOMES.count("gave_up")
        return None

    def _try_checkout(
        self, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[dict[str, Any] | None, str]:
        """One POST: (the hold, "done"), or (None, "again" | "smaller" | "done")."""
        with self.client.post(
            f"{self.prefix}/holds", json=body, headers=headers, name=HOLDS, catch_response=True
        ) as reply:
            code = problem_code(reply)
            if reply.status_code == 201:
                reply.success()
                OUTCOMES.count("holds")
                if header(reply, "Idempotent-Replayed") == "true":
                    OUTCOMES.count("replays")
                hold: dict[str, Any] = reply.json()
                return hold, "done"
            if reply.status_code == 429:
                reply.success()
                OUTCOMES.count("rate_limited")
                time.sleep(retry_after_s(reply))
                return None, "again"
            if code in REFUSALS:
                reply.success()
                OUTCOMES.count(REFUSALS[code])
                return None, "done" if code == "SALE_NOT_OPEN" else "smaller"
            reply.failure(describe(reply))
            if reply.status_code in (0, 503):  # the answer was lost, or Redis was away
                time.sleep(retry_after_s(reply))
                return None, "again"
            OUTCOMES.count("errors")
            return None, "done"

    def _decide(self, hold: dict[str, Any]) -> None:
        roll = random.random()
        if roll >= self.plan.confirm_share + self.plan.release_share:
            OUTCOMES.count("abandoned")
            OUTCOMES.left.append(hold["hold_id"])
            return
        time.sleep(random.uniform(0.2, 1.0))  # typing the card number, or changing one's mind
        if roll < self.plan.confirm_share:
            self._finish(hold, "confirm")
        else:
            self._finish(hold, "release")

    def _finish(self, hold: dict[str, Any], action: str) -> None:
        """Confirms (paying) or releases a hold; both are safe to repeat after a lost answer."""
        hold_id = hold["hold_id"]
        body = {"payment": {"method": "card", "token": f"tok_{uuid.uuid4().hex}"}}
        for _ in range(3):
            with self.client.post(
                f"{self.prefix}/holds/{hold_id}/{action}",
                json=body if action == "confirm" else None,
                headers=self.headers,
                name=CONFIRM if action == "confirm" else RELEASE,
                catch_response=True,
            ) as reply:
                if reply.status_code == 200:
                    reply.success()
                    if action == "confirm":
                        OUTCOMES.count("confirmed")
                        OUTCOMES.confirmed[hold_id] = lines_of(hold)
                    else:
                        OUTCOMES.count("released")
                        OUTCOMES.released.append(hold_id)
                    return
                if reply.status_code == 410 and problem_code(reply) == "HOLD_EXPIRED":
                    reply.success()  # paid too slowly: the units went back on sale
                    OUTCOMES.count(f"{action}_late")
                    OUTCOMES.left.append(hold_id)
                    return
                reply.failure(describe(reply))
                if reply.status_code not in (0, 503):
                    break
                time.sleep(retry_after_s(reply))
        OUTCOMES.count("errors")
