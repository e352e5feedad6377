"""A request the store would not carry out, with a stable `code` the gateway answers with and
a `detail` for the person who asked. Nothing was written."""

from __future__ import annotations

from flashsale.engine.errors import FlashsaleError


class Refused(FlashsaleError):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
