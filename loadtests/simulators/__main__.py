"""Runs one simulated party: `python -m flashsale.loadtests.simulators payment|suppliers|webhooks|
feeds --port N`; `flashsale sim up` runs them all (loadtests/simulators/processes.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from flashsale.loadtests.simulators.common import AUTH_ENV, SECRET_ENV, RequireAuth
from flashsale.loadtests.simulators.feeds import FeedSim
from flashsale.loadtests.simulators.payment import PaymentConfig, PaymentSim
from flashsale.loadtests.simulators.suppliers import SupplierSim
from flashsale.loadtests.simulators.webhooks import WebhookSim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flashsale.loadtests.simulators")
    parser.add_argument("party", choices=["payment", "suppliers", "webhooks", "feeds"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--decline-share", type=float, default=0.0)
    parser.add_argument("--default-stock", type=int, default=1000)
    parser.add_argument(
        "--secret",
        default=os.environ.get(SECRET_ENV, "dev-webhook-secret"),
        help=f"the webhook signing key (default: ${SECRET_ENV}, as `flashsale sim up` passes it)",
    )
    parser.add_argument("--state", default="webhooks.jsonl")
    args = parser.parse_args(argv)
    uvicorn.run(
        app_for(args),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    return 0


def app_for(args: argparse.Namespace) -> ASGIApp:
    app: Starlette
    if args.party == "payment":
        app = PaymentSim(PaymentConfig(decline_share=args.decline_share)).app()
    elif args.party == "feeds":
        return FeedSim().app()
    elif args.party == "suppliers":
        app = SupplierSim(args.default_stock).app()
    else:
        return WebhookSim(args.secret, Path(args.state)).app()
    auth = os.environ.get(AUTH_ENV, "")
    return RequireAuth(app, auth) if auth else app


if __name__ == "__main__":
    raise SystemExit(main())
