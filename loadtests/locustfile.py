"""Locust users of a flash sale: shoppers through the waiting room, bots, an admin watching.

    locust --headless -f loadtests/locustfile.py --host http://127.0.0.1:8000 --sale S \\
        -u 200 -r 20 -t 60s --stop-timeout 15

Every option below is also an environment variable (LOCUST_SALE, LOCUST_ADMIN_KEY, ...). The
master hands its options to its workers, so `--master` / `--worker` runs need nothing else.
Refusals the sale is supposed to give (sold out, limit, rate limited, a bot turned away) count
as successes in Locust's statistics; a failure is always something wrong.
"""

from __future__ import annotations

import argparse
import base64
import logging
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from locust import FastHttpUser, between, events, task
from locust.argument_parser import LocustArgumentParser
from locust.contrib.fasthttp import ResponseContextManager
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.user.task import LOCUST_STATE_STOPPING

from flashsale.engine.keys import ID_PATTERN
from flashsale.engine.settings import load_settings
from flashsale.loadtests.outcomes import Outcomes

OUTCOMES = Outcomes()  # this process's; a worker sends it to the master with its statistics

# Request names: the route template, so Locust groups every sale, ticket and hold per route.
JOIN = "/v1/sales/{sale}/queue"
STATUS = "/v1/sales/{sale}/queue/{ticket}"
HOLDS = "/v1/sales/{sale}/holds"
BOT_HOLDS = "/v1/sales/{sale}/holds (bot)"
CONFIRM = "/v1/sales/{sale}/holds/{hold}/confirm"
RELEASE = "/v1/sales/{sale}/holds/{hold}/release"
SALE = "/v1/sales/{sale}"
ADMIN = "/v1/admin/sales/{sale}"
ROOM = "/v1/sales/{sale}/queue (room)"

BOT_REFUSALS = {"TOKEN_INVALID", "NOT_ADMITTED", "RATE_LIMITED", "SALE_NOT_OPEN"}
# A shopper's checkout refusals that are answers, not errors, and what they are counted as.
REFUSALS = {
    "SOLD_OUT": "refused_sold_out",
    "LIMIT_EXCEEDED": "refused_limit",
    "SALE_NOT_OPEN": "sale_not_open",
}
CHECKOUT_TRIES = 6  # rate-limited and transport-failed tries included


Listener = Callable[..., None]


def listen(hook: Any, listener: Listener) -> None:
    """hook.add_listener, typed (Locust's event hooks are not)."""
    cast(Callable[[Listener], None], hook.add_listener)(listener)


def add_options(parser: LocustArgumentParser) -> None:
    parser.add_argument("--sale", env_var="LOCUST_SALE", default="", help="sale id (required)")
    parser.add_argument(
        "--admin-key",
        env_var="LOCUST_ADMIN_KEY",
        default="",
        is_secret=True,
        help="admin bearer key (default: the settings' FLASHSALE_ADMIN_KEY)",
    )
    for name, default in (("shopper", 20), ("bot", 3), ("admin", 1)):
        parser.add_argument(
            f"--{name}-weight",
            env_var=f"LOCUST_{name.upper()}_WEIGHT",
            type=int,
            default=default,
            help=f"share of {name} users (0: none)",
        )
    shares = (("confirm", 0.8, "pay for"), ("release", 0.1, "give back"))
    for name, share, verb in shares:
        parser.add_argument(
            f"--{name}-share",
            env_var=f"LOCUST_{name.upper()}_SHARE",
            type=float,
            default=share,
            help=f"share of holds shoppers {verb}; the rest are left to expire",
        )
    parser.add_argument(
        "--patience-s",
        env_var="LOCUST_PATIENCE_S",
        type=float,
        default=60.0,
        help="how long a shopper stays in line (waiting or told sold out) before leaving",
    )
    parser.add_argument(
        "--bot-addresses",
        env_var="LOCUST_BOT_ADDRESSES",
        type=int,
        default=4,
        help="client addresses the bots share (X-Forwarded-For)",
    )
    parser.add_argument(
        "--outcomes-file",
        env_var="LOCUST_OUTCOMES_FILE",
        default="",
        include_in_web_ui=False,
        help="write what shoppers and bots were told here (JSON) when Locust quits",
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """The options as one user reads them (workers get the master's at spawn)."""

    sale: str
    admin_key: str
    confirm_share: float
    release_share: float
    patience_s: float
    bot_addresses: int

    @classmethod
    def of(cls, options: argparse.Namespace | None) -> Plan:
        if options is None:
            raise RuntimeError("the flashsale locustfile runs under the locust command")
        return cls(
            options.sale,
            options.admin_key or load_settings().admin_key,
            options.confirm_share,
            options.release_share,
            options.patience_s,
            options.bot_addresses,
        )


def option_errors(options: argparse.Namespace) -> list[str]:
    errors = []
    if not ID_PATTERN.fullmatch(options.sale or ""):
        errors.append("--sale (LOCUST_SALE) must be a sale id: 1-64 of A-Z a-z 0-9 _ -")
    weights = (options.shopper_weight, options.bot_weight, options.admin_weight)
    if min(weights) < 0 or sum(weights) == 0:
        errors.append("user weights must be >= 0 and not all 0")
    shares = (options.confirm_share, options.release_share)
    if min(shares) < 0 or sum(shares) > 1:
        errors.append("--confirm-share and --release-share must be >= 0 and sum to at most 1")
    if options.patience_s <= 0 or options.bot_addresses < 1:
        errors.append("--patience-s must be > 0 and --bot-addresses >= 1")
    return errors


def set_up(environment: Environment, **_kwargs: Any) -> None:
    """Workers only report; the master (or a local runner) checks the options, sets the mix it
    dispatches by, gathers the workers' outcomes and writes them out when Locust quits."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        listen(environment.events.report_to_master, _report)
        runner.register_message(FINAL, _final_report, concurrent=True)
        return
    options = environment.parsed_options
    assert options is not None
    errors = option_errors(options)
    if errors:
        sys.exit("locustfile: " + "; ".join(errors))
    Shopper.weight, Bot.weight = options.shopper_weight, options.bot_weight
    Admin.weight = options.admin_weight
    if isinstance(runner, MasterRunner):
        listen(environment.events.worker_report, _merge)
        finals: set[str] = set()
        runner.register_message(FINAL, lambda msg, **_: _merge_final(finals, msg.node_id, msg.data))
        listen(environment.events.test_stop, lambda **_: _collect_finals(runner, finals))
    if options.outcomes_file:
        path = Path(options.outcomes_file)
        listen(environment.events.quitting, lambda **_: OUTCOMES.write(path))


listen(events.init_command_line_parser, add_options)
listen(events.init, set_up)


def _report(client_id: str, data: dict[str, Any]) -> None:
    data["flashsale"] = OUTCOMES.take()


def _merge(client_id: str, data: dict[str, Any]) -> None:
    OUTCOMES.add(data.get("flashsale", {}))


# When the run time is up, Locust's master tells its workers to quit and waits only 0.5 s for
# their last report, while their users may still be finishing a checkout (--stop-timeout): the
# outcomes of the last seconds would be lost. So the master first asks each worker to stop its
# users and send what is left, and waits for every answer.
FINAL = "flashsale_final"


def _collect_finals(runner: MasterRunner, finals: set[str]) -> None:
    workers = {worker.id for worker in runner.clients.all}
    finals.clear()
    runner.send_message(FINAL)
    deadline = time.monotonic() + runner.environment.stop_timeout + 10
    while workers - finals and time.monotonic() < deadline:
        time.sleep(0.1)
    if workers - finals:
        logging.error("flashsale: no final outcomes from workers %s", sorted(workers - finals))


def _merge_final(finals: set[str], worker_id: str, data: dict[str, Any]) -> None:
    OUTCOMES.add(data)
    finals.add(worker_id)


def _final_report(environment: Environment, **_kwargs: Any) -> None:
    """On a worker: stop the users (each finishes its step, up to --stop-timeout), then send."""
    runner = environment.runner
    assert runner is not None
    runner.stop()
    runner.send_message(FINAL, OUTCOMES.take())


# --- small helpers ------------------------------------------------------------------------------


def problem_code(reply: ResponseContextManager) -> str:
    """The problem+json `code`, or '' (transport error, not JSON)."""
    try:
        doc = reply.json()
    except (ValueError, TypeError):
        return ""
    code = doc.get("code") if isinstance(doc, dict) else None
    return code if isinstance(code, str) else ""


def header(reply: ResponseContextManager, name: str) -> str:
    headers: Any = reply.headers
    value = headers.get(name) if headers is not None else None
    return str(value) if value is not None else ""


def retry_after_s(reply: ResponseContextManager) -> float:
    try:
        return min(10.0, max(0.2, float(header(reply, "Retry-After") or 1)))
    except ValueError:
        return 1.0


def describe(reply: ResponseContextManager) -> str:
    if reply.status_code == 0:
        return f"transport error: {getattr(reply, 'error', None)!r}"
    return f"unexpected {reply.status_code} {problem_code(reply) or (reply.text or '')[:120]}"


def sale_skus(user: FastHttpUser, path: str, *, in_stock_only: bool = False) -> list[str]:
    """The sale page's skus that are not sold out; when none is left, all of them (units come
    back when holds expire) or, with in_stock_only, none. [] when the page failed."""
    with user.client.get(path, name=SALE, catch_response=True) as reply:
        if reply.status_code != 200:
            reply.failure(describe(reply))
            return []
        items = reply.json()["items"]
    left = [item["sku"] for item in items if item["availability"] != "sold_out"]
    return left or ([] if in_stock_only else [item["sku"] for item in items])


def lines_of(hold: dict[str, Any]) -> dict[str, int]:
    return {line["sku"]: int(line["qty"]) for line in hold["lines"]}


# --- the users ----------------------------------------------------------------------------------


class Shopper(FastHttpUser):
    """One journey per task run, each a new customer: join the line, poll as advised, check out
    1-3 units when admitted, then pay, give back, or walk away from the hold."""

    weight = 20
    wait_time = between(0.5, 2.0)  # until the next customer arrives on this user

    def on_start(self) -> None:
        self.plan = Plan.of(self.environment.parsed_options)
        self.prefix = f"/v1/sales/{self.plan.sale}"
        self.skus: list[str] = []

    @task
    def shop(self) -> None:
        OUTCOMES.count("journeys")
        customer = f"shopper-{uuid.uuid4().hex[:20]}"
        # Each customer comes from an address of its own (the gateway believes X-Forwarded-For
        # from a trusted proxy), so per-address rate limits hit the bots, not the crowd.
        octets = (random.randrange(256), random.randrange(256), random.randrange(1, 255))
        self.headers = {"X-Forwarded-For": "10.{}.{}.{}".format(*octets)}
        finished = False
        try:
            self._journey(customer)
            finished = True
        finally:
            if not finished:  # killed or broken in the middle: what happened is unknown
                OUTCOMES.count("cut")

    def _journey(self, customer: str) -> None:
        self.skus = sale_skus(self, self.prefix)
        if not self.skus:
            OUTCOMES.count("errors")
            return
        joined = self._join(customer)
        if joined is None:
            return
        token: str | None = None
        if joined:  # a waiting room: wait for our turn
            token = self._wait_turn(joined)
            if token is None:
                return
        hold = self._checkout(customer, token)
        if hold is not None:
            self._decide(hold)

    def _stopping(self) -> bool:
        return self._state == LOCUST_STATE_STOPPING

    def _join(self, customer: str) -> dict[str, Any] | None:
        """The ticket's first status; {} when the sale has no waiting room; None: leave."""
        for _ in range(CHECKOUT_TRIES):
            with self.client.post(
                f"{self.prefix}/queue",
                json={"customer_id": customer},
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
        """Polls the ticket at the interval each answer advises until admitted (the token)."""
        ticket, leave_at = doc["ticket"], time.monotonic() + self.plan.patience_s
        seen_sold_out = False
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
            time.sleep(doc["poll_after_ms"] / 1000)
            with self.client.get(
                f"{self.prefix}/queue/{ticket}", name=STATUS, catch_response=True
            ) as reply:
                if reply.status_code != 200:
                    reply.failure(describe(reply))
                    OUTCOMES.count("errors")
                    return None
                doc = reply.json()

    def _cart(self, units: int) -> list[dict[str, Any]]:
        picked = Counter(random.choice(self.skus) for _ in range(units))
        return [{"sku": sku, "qty": qty} for sku, qty in sorted(picked.items())]

    def _checkout(self, customer: str, token: str | None) -> dict[str, Any] | None:
        """The hold, or None. A transport error is retried with the same Idempotency-Key (at most
        one hold, whatever got lost); sold out or over the limit: one more try, 1 unit of a sku
        the sale page says is still in stock."""
        cart, key, smaller = self._cart(random.randint(1, 3)), uuid.uuid4().hex, False
        headers = {**self.headers}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        for _ in range(CHECKOUT_TRIES):
            body = {"customer_id": customer, "items": cart}
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


class Bot(FastHttpUser):
    """Hammers checkout without queueing: a new customer id each time, a few client addresses,
    sometimes a forged token. Every attempt must be refused; a hold is a failure."""

    weight = 3
    wait_time = between(0.05, 0.25)

    def on_start(self) -> None:
        self.plan = Plan.of(self.environment.parsed_options)
        self.path = f"/v1/sales/{self.plan.sale}/holds"
        self.skus = sale_skus(self, f"/v1/sales/{self.plan.sale}") or ["A"]

    @task
    def grab(self) -> None:
        address = f"203.0.113.{random.randint(1, self.plan.bot_addresses)}"
        headers = {"X-Forwarded-For": address, "Idempotency-Key": uuid.uuid4().hex}
        if random.random() < 0.3:
            headers["Authorization"] = f"Bearer {forged_token()}"
        sku = random.choice(self.skus)
        body = {"customer_id": f"bot-{uuid.uuid4().hex[:16]}", "items": [{"sku": sku, "qty": 2}]}
        with self.client.post(
            self.path, json=body, headers=headers, name=BOT_HOLDS, catch_response=True
        ) as reply:
            OUTCOMES.count("bot_checkouts")
            code = problem_code(reply)
            if reply.status_code == 201:
                reply.failure("a bot got a hold without being admitted")
                OUTCOMES.bot_holds.append(reply.json()["hold_id"])
            elif code in BOT_REFUSALS:
                reply.success()
                OUTCOMES.bot_refusals[f"{reply.status_code} {code}"] += 1
            else:
                reply.failure(describe(reply))


def forged_token() -> str:
    """Looks like an admission JWT, signed with nothing the gateway knows."""

    def part(doc: bytes) -> str:
        return base64.urlsafe_b64encode(doc).rstrip(b"=").decode()

    claims = f'{{"sub":"bot","jti":{random.randint(1, 10**6)},"exp":4102444800}}'.encode()
    return ".".join((part(b'{"alg":"HS256","kid":"k1"}'), part(claims), part(random.randbytes(32))))


class Admin(FastHttpUser):
    """Reads the live state like an operator's dashboard, and checks the stock balances."""

    weight = 1
    wait_time = between(1.0, 2.0)

    def on_start(self) -> None:
        self.plan = Plan.of(self.environment.parsed_options)
        self.auth = {"Authorization": f"Bearer {self.plan.admin_key}"}

    @task(3)
    def live_state(self) -> None:
        path = f"/v1/admin/sales/{self.plan.sale}"
        with self.client.get(path, headers=self.auth, name=ADMIN, catch_response=True) as reply:
            if reply.status_code != 200:
                reply.failure(describe(reply))
                return
            bad = unbalanced(reply.json())
            if bad:
                reply.failure("stock does not balance: " + "; ".join(bad))

    @task
    def room(self) -> None:
        path = f"/v1/sales/{self.plan.sale}/queue"
        with self.client.get(path, name=ROOM, catch_response=True) as reply:
            if reply.status_code == 200 or problem_code(reply) == "NOT_FOUND":
                reply.success()  # 404: a sale without a waiting room
            else:
                reply.failure(describe(reply))


def unbalanced(view: dict[str, Any]) -> list[str]:
    """DESIGN.md invariant 1 on the admin view: available + reserved + sold = loaded + adjusted,
    nothing negative."""
    bad = []
    for sku in view["skus"]:
        for s in sku["suppliers"]:
            parts = (s["available"], s["reserved"], s["sold"])
            if sum(parts) != s["loaded"] + s["adjusted"] or min(parts) < 0:
                bad.append(f"{sku['sku']}/{s['supplier']}: {s}")
    return bad
