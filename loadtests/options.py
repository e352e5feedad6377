"""The options of a load test, each with its one default: `flashsale loadtest` flags, the
locustfile's options (loadtests/crowd/plan.py fills Locust's parser from the same table), and
the run's options checked into one frozen value."""

from __future__ import annotations

import argparse
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashsale.engine.keys import ID_PATTERN


class Tool(enum.Flag):
    LOADTEST = enum.auto()  # a flag of `flashsale loadtest`
    LOCUST = enum.auto()  # an option of the locustfile, also LOCUST_<NAME> in the environment
    BOTH = LOADTEST | LOCUST  # `flashsale loadtest` hands it on to Locust (LoadOptions.locust_args)


@dataclass(frozen=True, slots=True)
class Option:
    """One option: `--<name with dashes>` on a command line; for Locust also LOCUST_<NAME>."""

    name: str  # the attribute, e.g. patience_s
    type: Callable[[str], Any]
    default: Any  # None: none (required, or decided later)
    help: str
    tool: Tool = Tool.BOTH
    required: bool = False  # by `flashsale loadtest`; the locustfile checks its own at start
    secret: bool = False  # masked in Locust's web UI
    in_web_ui: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_var(self) -> str:
        return "LOCUST_" + self.name.upper()


LOADTEST, LOCUST = Tool.LOADTEST, Tool.LOCUST

OPTIONS = (
    Option("url", str, None, "the gateway, e.g. http://127.0.0.1:8000", LOADTEST, required=True),
    Option("sale", str, "", "the id of an open sale of the gateway (required)", required=True),
    Option("users", int, 100, "concurrent Locust users", LOADTEST),
    Option("spawn_rate", float, 20.0, "users started per second", LOADTEST),
    Option("duration_s", int, 60, "length of the run", LOADTEST),
    Option("out", Path, None, "output dir (default artifacts/loadtest/<sale>-<time>)", LOADTEST),
    Option("shopper_weight", int, 20, "share of shopper users (0: none)"),
    Option("bot_weight", int, 3, "share of bot users (0: none)"),
    Option("admin_weight", int, 1, "share of admin users (0: none)"),
    Option("confirm_share", float, 0.8, "share of holds shoppers pay for"),
    Option("release_share", float, 0.1, "share of holds given back (the rest are left to expire)"),
    Option("patience_s", float, 60.0, "how long a shopper stays in line, waiting or told sold out"),
    Option("leave_share", float, 0.0, "share of waiting shoppers who leave at a random moment"),
    Option("processes", int, 1, "Locust processes (master+workers)", LOADTEST),
    Option("progress_s", float, 5.0, "progress line period", LOADTEST),
    Option("settle_s", float, None, "wait for open holds to expire (default TTL + 5)", LOADTEST),
    Option("drain_timeout_s", float, 60.0, "how long the reconciler may take to drain", LOADTEST),
    Option("admin_key", str, "", "admin key (default FLASHSALE_ADMIN_KEY)", LOCUST, secret=True),
    Option(
        "customer_secret",
        str,
        "",
        "the shop's key for customer tokens (default FLASHSALE_CUSTOMER_SECRET)",
        LOCUST,
        secret=True,
    ),
    Option("bot_addresses", int, 4, "client addresses the bots share (X-Forwarded-For)", LOCUST),
    Option(
        "outcomes_file",
        str,
        "",
        "write what shoppers and bots were told here (JSON) when Locust quits",
        LOCUST,
        in_web_ui=False,
    ),
)
DEFAULT = {option.name: option.default for option in OPTIONS}


def options_of(tool: Tool) -> list[Option]:
    return [option for option in OPTIONS if tool in option.tool]


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """One `flashsale loadtest` run; its defaults are those of OPTIONS."""

    url: str  # the gateway, http://host:port
    sale: str
    out: Path  # Locust's HTML report and CSVs, the outcomes, report.txt
    users: int = DEFAULT["users"]
    spawn_rate: float = DEFAULT["spawn_rate"]
    duration_s: int = DEFAULT["duration_s"]
    shopper_weight: int = DEFAULT["shopper_weight"]
    bot_weight: int = DEFAULT["bot_weight"]
    admin_weight: int = DEFAULT["admin_weight"]
    confirm_share: float = DEFAULT["confirm_share"]
    release_share: float = DEFAULT["release_share"]
    patience_s: float = DEFAULT["patience_s"]
    leave_share: float = DEFAULT["leave_share"]
    processes: int = DEFAULT["processes"]
    progress_s: float = DEFAULT["progress_s"]
    settle_s: float | None = DEFAULT["settle_s"]  # None: hold TTL + 5 s
    drain_timeout_s: float = DEFAULT["drain_timeout_s"]

    def check(self) -> None:
        """ValueError naming the first bad option."""
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"--url must be an http(s) URL of the gateway, not {self.url!r}")
        if not ID_PATTERN.fullmatch(self.sale):
            raise ValueError("--sale must be a sale id: 1-64 characters of A-Z a-z 0-9 _ -")
        if self.users < 1 or self.spawn_rate <= 0 or self.duration_s < 1:
            raise ValueError("--users and --duration-s must be >= 1, --spawn-rate > 0")
        weights = (self.shopper_weight, self.bot_weight, self.admin_weight)
        if min(weights) < 0 or sum(weights) == 0:
            raise ValueError("the --*-weight options must be >= 0 and not all 0")
        shares = (self.confirm_share, self.release_share)
        if min(shares) < 0 or sum(shares) > 1:
            raise ValueError("--confirm-share and --release-share must be >= 0, sum <= 1")
        if not 0 <= self.leave_share <= 1:
            raise ValueError("--leave-share must be between 0 and 1")
        if self.patience_s <= 0 or self.progress_s <= 0 or self.drain_timeout_s <= 0:
            raise ValueError("--patience-s, --progress-s, --drain-timeout-s must be > 0")
        if self.processes < 1 or (self.settle_s is not None and self.settle_s < 0):
            raise ValueError("--processes must be >= 1 and --settle-s >= 0")

    @property
    def locust_args(self) -> list[str]:
        """The options Locust gets from `flashsale loadtest` (loadtests/locustfile.py)."""
        args = []
        for option in options_of(Tool.BOTH):
            args += [option.flag, str(getattr(self, option.name))]
        return args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for option in options_of(LOADTEST):
        parser.add_argument(
            option.flag,
            type=option.type,
            default=option.default,
            required=option.required,
            help=option.help,
        )


def from_args(args: argparse.Namespace) -> LoadOptions:
    out = args.out or Path("artifacts/loadtest") / f"{args.sale}-{time.strftime('%Y%m%d-%H%M%S')}"
    values = {option.name: getattr(args, option.name) for option in options_of(LOADTEST)}
    options = LoadOptions(**{**values, "url": args.url.rstrip("/"), "out": out})
    options.check()
    return options
