"""The script registry: reads lua/*.lua from the package, prepends the shared helpers, registers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

SCRIPT_NAMES = (
    "reserve",
    "confirm",
    "release",
    "extend",
    "sweep",
    "adjust",
    "apply_feed",
    "load_sale",
    "set_status",
    "stock",
    "queue_join",
    "queue_admit",
    "queue_state",
    "queue_beat",
    "queue_ticket",
    "queue_claim",
    "rate_limit",
    "restore_stock",
    "restore_holds",
)


@cache
def source(name: str) -> str:
    """The full text Redis runs for a script: lua/_shared.lua followed by lua/<name>.lua."""
    if name not in SCRIPT_NAMES:
        raise KeyError(name)
    folder = resources.files("flashsale.lua")
    shared = folder.joinpath("_shared.lua").read_text(encoding="utf-8")
    own = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return shared + "\n" + own


@dataclass(frozen=True, slots=True)
class Scripts:
    """One redis-py Script object per Lua file; a Script reloads itself after a NOSCRIPT error."""

    reserve: AsyncScript
    confirm: AsyncScript
    release: AsyncScript
    extend: AsyncScript
    sweep: AsyncScript
    adjust: AsyncScript
    apply_feed: AsyncScript
    load_sale: AsyncScript
    set_status: AsyncScript
    stock: AsyncScript
    queue_join: AsyncScript
    queue_admit: AsyncScript
    queue_state: AsyncScript
    queue_beat: AsyncScript
    queue_ticket: AsyncScript
    queue_claim: AsyncScript
    rate_limit: AsyncScript
    restore_stock: AsyncScript
    restore_holds: AsyncScript

    @classmethod
    def register(cls, client: Any) -> Scripts:
        return cls(**{name: client.register_script(source(name)) for name in SCRIPT_NAMES})
