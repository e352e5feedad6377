"""The simulated webhook receiver: checks signatures, drops duplicates, keeps what it got in a
JSON-lines file across restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flashsale.loadtests.simulators.common import control_routes, refuse, reply
from flashsale.reconciler.outbox import verify


class WebhookSim:
    """Keeps what it received in a JSON-lines file, so a restart (the receiver was down) keeps
    the records; a notification id seen before is acknowledged and counted as a duplicate."""

    def __init__(self, secret: str, state: Path) -> None:
        self.secret = secret
        self.state = state
        self.received: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.bad_signatures = 0
        if state.exists():
            for line in state.read_text().splitlines():
                doc = json.loads(line)
                self.received[doc["id"]] = doc

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/hooks/{recipient}", self.hook, methods=["POST"]),
                *control_routes(self.records, self.records, self.reset),
            ]
        )

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        ok = verify(
            self.secret,
            request.headers.get("x-flashsale-timestamp", ""),
            body,
            request.headers.get("x-flashsale-signature", ""),
        )
        if not ok:
            self.bad_signatures += 1
            return refuse(401, "BAD_SIGNATURE", "signature or timestamp does not verify")
        doc = orjson.loads(body)
        if doc["id"] in self.received:
            self.duplicates += 1
            return reply(200, {"duplicate": True})
        doc["path_recipient"] = request.path_params["recipient"]
        doc["request_id"] = request.headers.get("x-request-id", "")
        self.received[doc["id"]] = doc
        with self.state.open("a") as out:
            out.write(json.dumps(doc) + "\n")
        return reply(200, {"duplicate": False})

    async def records(self, _: Request) -> Response:
        return reply(
            200,
            {
                "received": list(self.received.values()),
                "duplicates": self.duplicates,
                "bad_signatures": self.bad_signatures,
            },
        )

    async def reset(self, _: Request) -> Response:
        self.received.clear()
        self.duplicates = self.bad_signatures = 0
        self.state.write_text("")
        return reply(200, {})
