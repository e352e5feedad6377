"""The one place that reads FLASHSALE_* environment variables into a frozen Settings object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from flashsale.engine.keys import ID_PATTERN

_PREFIX = "FLASHSALE_"


@dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable; defaults are safe for the local demo and tests, except the secrets, which
    have none outside FLASHSALE_ENV=dev (see `secret_problems`)."""

    env: str = "production"  # "dev" relaxes identity and secrets for the demo and tests
    redis_url: str = ""
    redis_cluster_url: str = ""
    redis_cluster: bool = False  # serve from the cluster at local_cluster_url
    # After each batch of script calls, WAIT until this many replicas have its writes (at most
    # redis_wait_timeout_ms); fewer in time and the batch's calls fail. 0 = answer at once.
    # docs/operations.md#redis-failover has the trade-off.
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 100
    database_url: str = ""
    admin_key: str = ""  # bearer key of the admin routes
    token_secret: str = ""  # signs admission tokens and ticket ids
    run_dir: str = ".run"
    redis_port: int = 6390
    cluster_base_port: int = 7111
    postgres_port: int = 5441
    prometheus_port: int = 9390  # `services up --monitoring`: the launcher's Prometheus
    max_cart_lines: int = 10
    max_line_qty: int = 100
    max_body_bytes: int = 16_384
    reclaim_batch: int = 8
    sweep_batch: int = 500
    hold_retention_s: int = 86_400
    idempotency_ttl_s: int = 86_400
    test_clock: bool = False
    pg_pool_size: int = 10
    reconcile_min_batch: int = 50  # stream entries per read when idle
    reconcile_max_batch: int = 1000  # stream entries per read when behind
    reconcile_backoff_cap_ms: int = 5000  # longest wait between tries while PostgreSQL is down
    reconcile_metrics_port: int = 0  # Prometheus text of `flashsale reconcile`; 0 = off
    reconcile_metrics_host: str = "127.0.0.1"  # 0.0.0.0 where Prometheus scrapes from outside
    watch_interval_ms: int = 15_000  # orders per saga state and dead steps, read for /metrics
    audit_interval_ms: int = 60_000  # the reconciler audits every loaded sale; 0 = never
    sweep_interval_ms: int = 300
    # Waiting room: admission tokens (HS256 JWT) and tickets are signed with token_secret under
    # key id token_kid; token_previous_secrets ("kid=secret,...") are still accepted, so a
    # secret rotates without logging anyone out.
    token_kid: str = "k1"
    token_previous_secrets: str = ""
    token_max_attempts: int = 5  # checkout attempts per admission token
    # A waiter is skipped as a ghost once it missed 2 of the polls it was told to make (plus a
    # heartbeat flush), and was silent at least queue_ghost_after_ms.
    queue_ghost_after_ms: int = 1_500
    queue_poll_ms: int = 2_000  # how often the page polls (advice sent to clients)
    queue_poll_front_ms: int = 500  # the advice to waiters whose turn is a few seconds away
    queue_claim_ms: int = 3_000  # an admission not picked up this long is taken back; 0 = never
    queue_tick_ms: int = 100  # admission loop period while people wait
    queue_lease_ms: int = 3_000  # admission-loop leader lease in Redis
    queue_cache_ms: int = 250  # per-worker cache of a room's state (status route)
    queue_beat_flush_ms: int = 500  # per-worker heartbeat batching (ghosts found this much later)
    queue_loop: bool = True  # run admission loops in this gateway
    # Rate limits (token buckets in Redis) of the join and checkout routes, used when a sale's
    # rate_limit leaves a value out; 0 turns a limit off.
    rate_per_client_per_s: int = 0
    rate_burst: int = 20
    rate_per_sale_per_s: int = 0
    # The status poll's limit, per client address and gateway worker (no Redis); 0 = off.
    rate_status_per_s: int = 0
    rate_status_burst: int = 20
    # The order view's limit, per customer and gateway worker (each view reads PostgreSQL).
    rate_order_per_s: int = 2
    rate_order_burst: int = 10
    trusted_proxies: str = ""  # comma-separated IPs/CIDRs whose X-Forwarded-For is believed
    # Customer identity: tokens the shop signs (gateway/identity.py). HS256 secrets as one bare
    # secret or "kid:secret,kid:secret"; and/or a JWKS (file or URL) of RS256/ES256 keys.
    customer_secret: str = ""
    customer_jwks: str = ""
    customer_audience: str = "flashsale"
    customer_issuer: str = ""  # when set, tokens must carry this iss
    public_stock: str = "levels"  # "exact": public answers and /metrics also give unit counts
    room_retention_s: int = 86_400  # a room's keys (wr:{S}:*) live this long after the sale ends
    # Logs (engine/logs.py): JSON lines on stderr at this level and above; access_log adds one
    # line per gateway request.
    log_level: str = "info"
    access_log: bool = False
    # Order saga (reconciler/saga/): off unless FLASHSALE_SAGA=1. The outside parties' URLs
    # default to the simulators of `flashsale sim up` on sim_base_port .. sim_base_port + 2.
    saga: bool = False
    payment_url: str = ""  # base URL of the payment provider's API
    supplier_url: str = ""  # template with {supplier}: one supplier's API
    webhook_customer_url: str = ""  # where the customer's notifications are POSTed
    webhook_retailer_url: str = ""  # where the retailer's notifications are POSTed
    webhook_secret: str = ""  # HMAC-SHA256 key of the notification signature
    payment_auth: str = ""  # Authorization header value sent to the payment provider
    supplier_auth: str = ""  # Authorization header value sent to the suppliers
    secondary_suppliers: str = ""  # comma-separated supplier ids offered on a backorder
    sim_base_port: int = 8711
    adapter_timeout_ms: int = 2_000  # one call to a payment provider or supplier
    supplier_lock_s: int = 900  # how long a supplier keeps an allocation before capture
    saga_max_attempts: int = 8  # tries of one step before it goes to the dead letters
    saga_backoff_base_ms: int = 200
    saga_backoff_cap_ms: int = 30_000
    saga_concurrency: int = 32  # steps in flight per reconciler process
    saga_lease_ms: int = 30_000  # a claimed step another process may take over after this
    backorder_wait_days: int = 7  # the promised date offered with the "wait" option
    # Supplier stock files and polls (reconciler/intake/): the drop folder the reconciler
    # watches (default <run_dir>/feeds; one folder per supplier, done/ and failed/ in it) and
    # the upload route writes into; records per delivery handed to the feed core.
    feed_dir: str = ""
    feed_file_max_bytes: int = 1_073_741_824  # an upload's cap (PUT .../feed/file)
    feed_chunk_records: int = 1_000  # at most engine.feeds.MAX_DELIVERY_RECORDS
    feed_scan_ms: int = 1_000  # how often the drop folder is looked at
    feed_settle_ms: int = 1_000  # a file changed more recently than this is still being written
    feed_poll_timeout_ms: int = 10_000  # one GET of a supplier's stock endpoint
    feed_poll_max_bytes: int = 67_108_864  # a poll body larger than this is a poll error
    feed_poll_backoff_cap_ms: int = 300_000  # longest wait between polls while they fail
    # Supplier feed webhooks (gateway/feeds.py): body cap, the signature's time window, and the
    # key that seals feed secrets at rest (store/feed_secrets.py; needed to store a secret).
    feed_max_body_bytes: int = 2_097_152
    feed_signature_window_s: int = 300
    feed_key: str = ""

    @property
    def dev(self) -> bool:
        return self.env == "dev"

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
    def local_payment_url(self) -> str:
        return self.payment_url or f"http://127.0.0.1:{self.sim_base_port}"

    @property
    def local_supplier_url(self) -> str:
        return self.supplier_url or (
            f"http://127.0.0.1:{self.sim_base_port + 1}/suppliers/{{supplier}}"
        )

    @property
    def local_webhook_urls(self) -> dict[str, str]:
        hooks = f"http://127.0.0.1:{self.sim_base_port + 2}/hooks"
        return {
            "customer": self.webhook_customer_url or f"{hooks}/customer",
            "retailer": self.webhook_retailer_url or f"{hooks}/retailer",
        }

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir).resolve()

    @property
    def feed_path(self) -> Path:
        return Path(self.feed_dir).resolve() if self.feed_dir else self.run_path / "feeds"


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
    """Build Settings from FLASHSALE_<FIELD> variables; unknown values fail loudly. With
    FLASHSALE_ENV=dev, secrets left unset get the well-known dev values."""
    env = os.environ if environ is None else environ
    kinds = {"str": str, "int": int, "bool": bool}
    values: dict[str, object] = {}
    for field in fields(Settings):
        name = _PREFIX + field.name.upper()
        if name in env:
            values[field.name] = _parse(kinds[str(field.type)], env[name], name)
    if values.get("env", "production") not in ENVIRONMENTS:
        raise ValueError(f"FLASHSALE_ENV must be one of {', '.join(ENVIRONMENTS)}")
    if values.get("public_stock", "levels") not in ("levels", "exact"):
        raise ValueError("FLASHSALE_PUBLIC_STOCK must be levels or exact")
    _check_wait(values)
    if str(values.get("log_level", "info")).lower() not in LOG_LEVELS:
        raise ValueError(f"FLASHSALE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    if values.get("env") == "dev":
        for name, dev_value in DEV_SECRETS.items():
            if not values.get(name):
                values[name] = dev_value
    return Settings(**values)  # type: ignore[arg-type]


def _check_wait(values: Mapping[str, object]) -> None:
    replicas = values.get("redis_wait_replicas", 0)
    timeout_ms = values.get("redis_wait_timeout_ms", 100)
    if not isinstance(replicas, int) or replicas < 0:
        raise ValueError("FLASHSALE_REDIS_WAIT_REPLICAS must be 0 or more")
    if not isinstance(timeout_ms, int) or timeout_ms < 1:  # WAIT n 0 would block forever
        raise ValueError("FLASHSALE_REDIS_WAIT_TIMEOUT_MS must be 1 or more")


ENVIRONMENTS = ("production", "dev")
LOG_LEVELS = ("debug", "info", "warning", "error")
# The secrets a dev setup runs with when none are given; production refuses every one of them.
DEV_SECRETS = {
    "admin_key": "dev-admin-key",
    "token_secret": "dev-token-secret",
    "webhook_secret": "dev-webhook-secret",
    "customer_secret": "dev-customer-secret-not-for-production",
    "feed_key": "dev-feed-key-not-for-production",
}
KNOWN_DEFAULTS = frozenset(DEV_SECRETS.values()) | {"changeme", "secret", "password"}
SECRETS = ("admin_key", "token_secret", "webhook_secret")  # each one value, always needed
MIN_SECRET_BYTES = 32


def _weak(name: str, value: str) -> str:
    """Why one secret value will not do, or ''."""
    variable = _PREFIX + name.upper()
    if not value:
        return f"{variable} is not set"
    if value in KNOWN_DEFAULTS:
        return f"{variable} is a known default"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"{variable} has a secret shorter than {MIN_SECRET_BYTES} bytes"
    return ""


def keyed_secrets(raw: str, variable: str, sep: str, *, bare: bool) -> dict[str | None, str]:
    """`kid<sep>secret,kid<sep>secret` by kid; with `bare`, also one secret with no kid (key
    None). The one parser of the settings that list secrets (a secret must not contain ',')."""
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if bare and len(parts) == 1 and sep not in parts[0]:
        return {None: parts[0]}
    out: dict[str | None, str] = {}
    for part in parts:
        kid, found, secret = part.partition(sep)
        if not found or not ID_PATTERN.fullmatch(kid) or not secret:
            form = f"kid{sep}secret,kid{sep}secret"
            raise ValueError(f"{variable} must be {'a secret or ' if bare else ''}{form}")
        out[kid] = secret
    return out


def token_previous_secrets(settings: Settings) -> dict[str, str]:
    found = keyed_secrets(
        settings.token_previous_secrets, "FLASHSALE_TOKEN_PREVIOUS_SECRETS", "=", bare=False
    )
    return {str(kid): secret for kid, secret in found.items()}


def customer_secrets(settings: Settings) -> dict[str | None, str]:
    return keyed_secrets(settings.customer_secret, "FLASHSALE_CUSTOMER_SECRET", ":", bare=True)


def secret_problems(settings: Settings) -> list[str]:
    """What makes these settings unfit to run outside dev: secrets missing, shorter than 32
    bytes, or well known. Empty in dev mode and when every secret is sound."""
    if settings.dev:
        return []
    problems = [_weak(name, getattr(settings, name)) for name in SECRETS]
    try:
        previous = token_previous_secrets(settings).values()
        customer = customer_secrets(settings).values()
    except ValueError as exc:
        return [*problems, str(exc)]
    problems += [_weak("token_previous_secrets", s) for s in previous]
    if settings.feed_key:  # optional: without it no feed secret can be stored or checked
        problems.append(_weak("feed_key", settings.feed_key))
    if customer:
        problems += [_weak("customer_secret", s) for s in customer]
    elif not settings.customer_jwks:
        problems.append("neither FLASHSALE_CUSTOMER_SECRET nor FLASHSALE_CUSTOMER_JWKS is set")
    return list(dict.fromkeys(p for p in problems if p))
