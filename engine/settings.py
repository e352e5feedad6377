"""The one place that reads FLASHSALE_* environment variables into a frozen Settings object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

_PREFIX = "FLASHSALE_"


@dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable of the engine; defaults are safe for the local demo and tests."""

    redis_url: str = ""
    redis_cluster_url: str = ""
    redis_cluster: bool = False  # serve from the cluster at local_cluster_url
    database_url: str = ""
    admin_key: str = "dev-admin-key"
    token_secret: str = "dev-token-secret"
    run_dir: str = ".run"
    redis_port: int = 6390
    cluster_base_port: int = 7111
    postgres_port: int = 5441
    max_cart_lines: int = 10
    max_line_qty: int = 100
    max_body_bytes: int = 16_384
    reclaim_batch: int = 8
    sweep_batch: int = 500
    hold_retention_s: int = 86_400
    idempotency_ttl_s: int = 86_400
    test_clock: bool = False
    pg_pool_size: int = 10

    @property
    def local_redis_url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def local_cluster_url(self) -> str:
        return self.redis_cluster_url or f"redis://127.0.0.1:{self.cluster_base_port}/0"

    @property
    def local_database_url(self) -> str:
        return self.database_url or (
            f"postgresql://postgres@127.0.0.1:{self.postgres_port}/flashsale"
        )

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir).resolve()


def _parse(kind: type, raw: str, name: str) -> object:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"{name} must be a boolean, got {raw!r}")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    return raw


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from FLASHSALE_<FIELD> variables; unknown values fail loudly."""
    env = os.environ if environ is None else environ
    kinds = {"str": str, "int": int, "bool": bool}
    values: dict[str, object] = {}
    for field in fields(Settings):
        name = _PREFIX + field.name.upper()
        if name in env:
            values[field.name] = _parse(kinds[str(field.type)], env[name], name)
    return Settings(**values)  # type: ignore[arg-type]
