"""The flash-sale reservation engine: an async Python API over atomic Redis Lua scripts."""

from engine.api import Engine
from engine.errors import EngineUnavailable, FlashsaleError, InvalidInput
from engine.results import Code
from engine.sale import ItemConfig, SaleConfig, SupplierStockConfig
from engine.settings import Settings, load_settings

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
