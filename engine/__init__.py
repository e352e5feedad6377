"""The flash-sale reservation engine: an async Python API over atomic Redis Lua scripts.

`Engine` is loaded on first use, so that the plain types here (settings, errors, sale configs,
results) can be imported without redis: the store uses them and knows only PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flashsale.engine.errors import EngineUnavailable, FlashsaleError, InvalidInput
from flashsale.engine.results import Code
from flashsale.engine.sale import ItemConfig, SaleConfig, SupplierStockConfig
from flashsale.engine.settings import Settings, load_settings

if TYPE_CHECKING:
    from flashsale.engine.api import Engine


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from flashsale.engine.api import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Code",
    "Engine",
    "EngineUnavailable",
    "FlashsaleError",
    "InvalidInput",
    "ItemConfig",
    "SaleConfig",
    "Settings",
    "SupplierStockConfig",
    "load_settings",
]
