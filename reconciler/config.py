"""The reconciler's tunables: one frozen object, defaults from Settings, overrides from the CLI."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from flashsale.engine.settings import Settings

GROUP = "reconciler"


@dataclass(frozen=True, slots=True)
class ReconcilerConfig:
    """Times carry their unit in the name; batch sizes are stream entries. The fields without a
    default come from Settings (`from_settings`), where their defaults live."""

    database_url: str
    min_batch: int
    max_batch: int
    sweep_interval_ms: int
    sweep_batch: int
    backoff_cap_ms: int
    metrics_port: int  # Prometheus text on 127.0.0.1:<port>/metrics; 0 = off
    hold_retention_ms: int  # recover: holds that ended longer ago than this stay gone
    idem_ttl_ms: int  # recover: idempotency keys of holds older than this stay gone
    poll_idle_ms: int = 50  # pause after a round over every owned sale read nothing
    refresh_s: float = 1.0  # how often the sale list and the share of sales are re-checked
    backoff_base_ms: int = 100
    progress_s: float = 10.0  # progress line to stderr; 0 = only the final line
    drain_timeout_s: float = 30.0  # recover: wait this long for another owner to drain
    only_sales: tuple[str, ...] = ()  # empty = every sale in both Redis and PostgreSQL

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> ReconcilerConfig:
        base = cls(
            database_url=settings.local_database_url,
            min_batch=settings.reconcile_min_batch,
            max_batch=settings.reconcile_max_batch,
            sweep_interval_ms=settings.sweep_interval_ms,
            sweep_batch=settings.sweep_batch,
            backoff_cap_ms=settings.reconcile_backoff_cap_ms,
            metrics_port=settings.reconcile_metrics_port,
            hold_retention_ms=settings.hold_retention_s * 1000,
            idem_ttl_ms=settings.idempotency_ttl_s * 1000,
        )
        # None means "not given on the command line": the default stays.
        values = {k: v for k, v in overrides.items() if v is not None}
        config = dataclasses.replace(base, **values)  # type: ignore[arg-type]
        if not 1 <= config.min_batch <= config.max_batch <= 10_000:
            raise ValueError("batch sizes must satisfy 1 <= min_batch <= max_batch <= 10000")
        return config
