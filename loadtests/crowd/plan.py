"""The locustfile's options: Locust's parser filled from loadtests/options.py, the checks, and
the Plan each user reads them as."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from locust.argument_parser import LocustArgumentParser

from flashsale.engine.keys import ID_PATTERN
from flashsale.engine.settings import load_settings
from flashsale.loadtests.options import LOCUST, options_of


def add_options(parser: LocustArgumentParser) -> None:
    """Every option also an environment variable. None is required here, as workers take the
    master's options; the master checks them at start (option_errors)."""
    for option in options_of(LOCUST):
        parser.add_argument(
            option.flag,
            env_var=option.env_var,
            type=option.type,
            default=option.default,
            help=option.help,
            is_secret=option.secret,
            include_in_web_ui=option.in_web_ui,
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
    if not 0 <= options.leave_share <= 1:
        errors.append("--leave-share must be between 0 and 1")
    if options.patience_s <= 0 or options.bot_addresses < 1:
        errors.append("--patience-s must be > 0 and --bot-addresses >= 1")
    return errors


@dataclass(frozen=True, slots=True)
class Plan:
    """The options as one user reads them (workers get the master's at spawn)."""

    sale: str
    admin_key: str
    customer_secret: str  # signs the shoppers' customer tokens, as the shop would
    audience: str
    confirm_share: float
    release_share: float
    patience_s: float
    leave_share: float  # of waiting shoppers, who stop polling and leave at a random moment
    bot_addresses: int

    @classmethod
    def of(cls, options: argparse.Namespace | None) -> Plan:
        if options is None:
            raise RuntimeError("the flashsale locustfile runs under the locust command")
        settings = load_settings()
        return cls(
            options.sale,
            options.admin_key or settings.admin_key,
            options.customer_secret or settings.customer_secret,
            settings.customer_audience,
            options.confirm_share,
            options.release_share,
            options.patience_s,
            options.leave_share,
            options.bot_addresses,
        )
