"""The flash-sale reservation engine: an async Python API over atomic Redis Lua scripts."""

from flashsale.engine.api import Engine
from flashsale.engine.errors import EngineUnavailable, FlashsaleError, InvalidInput
from flashsale.engine.results import Code
from flashsale.engine.sale import ItemConfig, SaleConfig, SupplierStockConfig
from flashsale.engine.settings import Settings, load_settings

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
