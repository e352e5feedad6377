"""The options of a load-test run: `flashsale loadtest` flags, checked into one frozen value."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from flashsale.engine.keys import ID_PATTERN


@dataclass(frozen=True, slots=True)
class LoadOptions:
    url: str  # the gateway, http://host:port
    sale: str
    out: Path  # Locust's HTML report and CSVs, the outcomes, report.txt
    users: int = 100
    spawn_rate: float = 20.0  # users started per second
    duration_s: int = 60
    shopper_weight: int = 20
    bot_weight: int = 3
    admin_weight: int = 1
    confirm_share: float = 0.8
    release_share: float = 0.1
    patience_s: float = 60.0
    processes: int = 1  # 1: one local Locust process; N > 1: a master and N workers
    progress_s: float = 5.0
    settle_s: float | None = None  # wait for open holds to expire; None: hold TTL + 5 s
    drain_timeout_s: float = 60.0

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
        if self.patience_s <= 0 or self.progress_s <= 0 or self.drain_timeout_s <= 0:
            raise ValueError("--patience-s, --progress-s, --drain-timeout-s must be > 0")
        if self.processes < 1 or (self.settle_s is not None and self.settle_s < 0):
            raise ValueError("--processes must be >= 1 and --settle-s >= 0")

    @property
    def locust_args(self) -> list[str]:
        """The locustfile's own options (loadtests/locustfile.py)."""
        return [
            "--sale", self.sale,
            "--shopper-weight", str(self.shopper_weight),
            "--bot-weight", str(self.bot_weight),
            "--admin-weight", str(self.admin_weight),
            "--confirm-share", str(self.confirm_share),
            "--release-share", str(self.release_share),
            "--patience-s", str(self.patience_s),
        ]  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = LoadOptions("", "", Path())
    add = parser.add_argument
    add("--url", required=True, help="the gateway, e.g. http://127.0.0.1:8000")
    add("--sale", required=True, help="an open sale of that gateway")
    add("--users", type=int, default=d.users, help="concurrent Locust users")
    add("--spawn-rate", type=float, default=d.spawn_rate, help="users started per second")
    add("--duration-s", type=int, default=d.duration_s, help="length of the run")
    add("--out", type=Path, help="output dir (default artifacts/loadtest/<sale>-<time>)")
    for name in ("shopper", "bot", "admin"):
        add(f"--{name}-weight", type=int, default=getattr(d, f"{name}_weight"))
    add("--confirm-share", type=float, default=d.confirm_share, help="holds paid for")
    add("--release-share", type=float, default=d.release_share, help="holds given back")
    add("--patience-s", type=float, default=d.patience_s, help="a shopper's time in line")
    add("--processes", type=int, default=d.processes, help="Locust processes (master+workers)")
    add("--progress-s", type=float, default=d.progress_s, help="progress line period")
    add("--settle-s", type=float, help="wait for open holds to expire (default hold TTL + 5)")
    add("--drain-timeout-s", type=float, default=d.drain_timeout_s, help="reconciler drain")


def from_args(args: argparse.Namespace) -> LoadOptions:
    out = args.out or Path("artifacts/loadtest") / f"{args.sale}-{time.strftime('%Y%m%d-%H%M%S')}"
    options = LoadOptions(
        url=args.url.rstrip("/"),
        sale=args.sale,
        out=out,
        users=args.users,
        spawn_rate=args.spawn_rate,
        duration_s=args.duration_s,
        shopper_weight=args.shopper_weight,
        bot_weight=args.bot_weight,
        admin_weight=args.admin_weight,
        confirm_share=args.confirm_share,
        release_share=args.release_share,
        patience_s=args.patience_s,
        processes=args.processes,
        progress_s=args.progress_s,
        settle_s=args.settle_s,
        drain_timeout_s=args.drain_timeout_s,
    )
    options.check()
    return options
