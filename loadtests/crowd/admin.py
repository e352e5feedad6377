"""The admin: an operator's dashboard reading the live state and checking the stock balances."""

from __future__ import annotations

from typing import Any

from locust import FastHttpUser, between, task

from flashsale.loadtests.crowd.plan import Plan
from flashsale.loadtests.crowd.replies import ADMIN, ROOM, describe, problem_code
from flashsale.loadtests.options import DEFAULT


class Admin(FastHttpUser):
    """Reads the live state like an operator's dashboard, and checks the stock balances."""

    weight = DEFAULT["admin_weight"]  # set_up sets the run's (--admin-weight)
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
    """Invariant 1 (docs/design.md) on the admin view: available + reserved + sold equals
    loaded + adjusted, nothing negative."""
    bad = []
    for sku in view["skus"]:
        for s in sku["suppliers"]:
            parts = (s["available"], s["reserved"], s["sold"])
            if sum(parts) != s["loaded"] + s["adjusted"] or min(parts) < 0:
                bad.append(f"{sku['sku']}/{s['supplier']}: {s}")
    return bad
