"""What this process's users were told (OUTCOMES), and how a worker's outcomes reach the master:
with each statistics report, and a last time when the run is over."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from flashsale.loadtests.outcomes import Outcomes

OUTCOMES = Outcomes()  # this process's; a worker sends it to the master with its statistics

# When the run time is up, Locust's master tells its workers to quit and waits only 0.5 s for
# their last report, while their users may still be finishing a checkout (--stop-timeout): the
# outcomes of the last seconds would be lost. So the master first asks each worker to stop its
# users and send what is left, and waits for every answer.
FINAL = "flashsale_final"

Listener = Callable[..., None]


def listen(hook: Any, listener: Listener) -> None:
    """hook.add_listener, typed (Locust's event hooks are not)."""
    cast(Callable[[Listener], None], hook.add_listener)(listener)


def send_from_worker(environment: Environment, runner: WorkerRunner) -> None:
    listen(environment.events.report_to_master, _report)
    runner.register_message(FINAL, _final_report, concurrent=True)


def gather_on_master(environment: Environment, runner: MasterRunner) -> None:
    listen(environment.events.worker_report, _merge)
    finals: set[str] = set()
    runner.register_message(FINAL, lambda msg, **_: _merge_final(finals, msg.node_id, msg.data))
    listen(environment.events.test_stop, lambda **_: _collect_finals(runner, finals))


def _report(client_id: str, data: dict[str, Any]) -> None:
    data["flashsale"] = OUTCOMES.take()


def _merge(client_id: str, data: dict[str, Any]) -> None:
    OUTCOMES.add(data.get("flashsale", {}))


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
