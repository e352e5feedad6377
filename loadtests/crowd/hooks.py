"""Locust's start-up hooks: the options onto its parser, then at init the checks, the user mix
and the outcomes relay. loadtests/locustfile.py calls register()."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from flashsale.loadtests.crowd.admin import Admin
from flashsale.loadtests.crowd.bot import Bot
from flashsale.loadtests.crowd.plan import add_options, option_errors
from flashsale.loadtests.crowd.relay import OUTCOMES, gather_on_master, listen, send_from_worker
from flashsale.loadtests.crowd.shopper import Shopper


def register() -> None:
    listen(events.init_command_line_parser, add_options)
    listen(events.init, set_up)


def set_up(environment: Environment, **_kwargs: Any) -> None:
    """Workers only report; the master (or a local runner) checks the options, sets the mix it
    dispatches by, gathers the workers' outcomes and writes them out when Locust quits."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        send_from_worker(environment, runner)
        return
    options = environment.parsed_options
    assert options is not None
    errors = option_errors(options)
    if errors:
        sys.exit("locustfile: " + "; ".join(errors))
    Shopper.weight, Bot.weight = options.shopper_weight, options.bot_weight
    Admin.weight = options.admin_weight
    if isinstance(runner, MasterRunner):
        gather_on_master(environment, runner)
    if options.outcomes_file:
        path = Path(options.outcomes_file)
        listen(environment.events.quitting, lambda **_: OUTCOMES.write(path))
