"""All configuration of the hub: one pydantic-settings object, env prefix ``NOTIFYHUB_``.

The defaults are the "embedded" profile: ``notifyhub serve`` works on a fresh machine with
nothing else installed (SQLite file, in-process Socket.IO manager, in-process email tasks,
Kafka intake off). Production sets the URLs of the real services.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hub import rules
from hub.vapid import check_vapid_subject, vapid_public_key

DEFAULT_JWT_SECRET = "notifyhub-development-secret-change-me"  # noqa: S105 - refused in production

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class StartupError(RuntimeError):
    """A command cannot start as configured (port taken, a service unreachable); the
    message is one line saying what to change. The CLI prints it and exits with 2."""


class ConfigurationError(StartupError):
    """The settings cannot be used as given; the message says what to change."""


class Settings(BaseSettings):
    """Every knob of the hub. Built once at start and passed down; never a global."""

    model_config = SettingsConfigDict(
        env_prefix="NOTIFYHUB_", env_file=".env", extra="ignore", frozen=True
    )

    env: Literal["development", "test", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8004, ge=0, le=65535)
    # A second port for /healthz, /readyz and /metrics only: a storm of client connections
    # queues on the main port's accept backlog, never in front of a health probe here.
    admin_port: int | None = Field(default=None, ge=1, le=65535)

    database_url: str = "sqlite+aiosqlite:///./notifyhub.db"
    database_pool_size: int = Field(default=10, ge=1)
    # A dead or black-holed database must turn into a quick 503, not requests that hang:
    # how long one connection attempt may take, and how long a request waits for a pooled
    # connection when all are busy.
    database_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    database_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    # What a 503 ``unavailable`` tells clients to wait before retrying (Retry-After).
    unavailable_retry_after_seconds: int = Field(default=1, ge=1)
    # The embedded profile migrates its own SQLite file at start so the first run just works.
    auto_migrate: bool | None = None
    # `notifyhub migrate` retries an unreachable database this long before giving up: in a
    # compose stack or a deploy job it often starts before PostgreSQL accepts connections.
    migrate_wait_seconds: float = Field(default=30.0, ge=0)

    # Slow clients: a connection must deliver a complete request head within
    # ``http_header_timeout_seconds`` of opening (or of its previous response), and a body
    # within ``http_body_timeout_seconds`` of its head; else it is closed (slowloris).
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0)

    redis_url: str | None = None
    # Socket.IO and the REST API authenticate with bearer tokens, not cookies, so any origin
    # may connect by default; list origins ("https://crm.example.com,...") to restrict.
    cors_allowed_origins: str = "*"
    socketio_channel: str = "notifyhub"
    # permessage-deflate costs ~100 KB per idle socket; off unless asked for.
    socketio_websocket_compression: bool = False
    # Unsent bytes one connection may hold (Socket.IO or legacy WebSocket); a client that
    # stops reading is disconnected past this, so it can never stall or bloat the node.
    socket_max_buffer_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    # How often each node compares the latest stored seq of its connected users with what
    # it sent them, to deliver notifications whose bus message was lost (within ~2 checks).
    delivery_lag_check_seconds: float = Field(default=1.5, gt=0)

    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = "crm.events"
    kafka_dlq_topic: str = "crm.events.dlq"
    kafka_group_id: str = "notifyhub"
    kafka_consume_in_serve: bool = True
    kafka_max_batch: int = Field(default=500, ge=1)
    # Real Kafka refuses a session timeout under 6 s; tests against Tansu use ~1 s.
    kafka_session_timeout_ms: int = Field(default=10_000, ge=100)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=50)
    kafka_rebalance_timeout_ms: int = Field(default=30_000, ge=100)
    # How long a fetch may wait for data: the floor of produce -> apply latency on a quiet
    # topic with brokers that hold fetches (aiokafka's default, 500 ms, is for throughput).
    kafka_fetch_max_wait_ms: int = Field(default=50, ge=0)
    # Offsets are committed after the batches they cover, at most this often (and when
    # idle, on revoke and on shutdown): a commit per small batch would double latency.
    kafka_commit_interval_ms: int = Field(default=200, ge=0)

    rabbitmq_url: str | None = None
    rabbitmq_queue: str = "crm.events"
    rabbitmq_dead_letter_exchange: str = "crm.events.dlx"
    rabbitmq_prefetch: int = Field(default=200, ge=1)
    rabbitmq_max_batch: int = Field(default=200, ge=1)
    rabbitmq_batch_wait_seconds: float = Field(default=0.05, ge=0)

    jwt_secret: SecretStr = SecretStr(DEFAULT_JWT_SECRET)
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = ["HS256"]
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: int = Field(default=0, ge=0, le=300)
    jwks_cache_seconds: int = Field(default=300, ge=1)
    # An unknown ``kid`` refetches the key set, but never more often than this.
    jwks_min_refetch_seconds: float = Field(default=30.0, ge=0)

    auth_service_url: str | None = None

    # Where users reach this hub from outside (``https://notify.example.com``): unsubscribe
    # links in emails are built on it. Unset: emails carry no List-Unsubscribe header.
    public_url: str | None = None
    # HMAC key of unsubscribe links. Unset: derived from the JWT secret, so a fresh install
    # needs nothing more; set it to rotate the links alone (every older link then is a 400).
    unsubscribe_secret: SecretStr | None = None

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_use_tls: bool = False
    smtp_start_tls: bool = True
    smtp_from_email: str | None = None

    notification_title_max_chars: int = Field(default=rules.TITLE_MAX_CHARS, ge=1)
    notification_body_max_chars: int = Field(default=rules.BODY_MAX_CHARS, ge=1)
    notification_data_max_bytes: int = Field(default=rules.DATA_MAX_BYTES, ge=2)
    notification_max_recipients: int = Field(default=rules.MAX_RECIPIENTS, ge=1)

    chat_body_max_chars: int = Field(default=4000, ge=1)
    # How long after sending its sender may edit a message; 0: no limit. Deletes are never
    # limited (taking something back must stay possible).
    chat_edit_window_seconds: float = Field(default=0, ge=0)
    # A user is offline this long after their last /chat socket closed, so a reconnect (to
    # any node) does not flap; a node's presence records expire this long after its last
    # heartbeat (it refreshes them every third of it), so a crashed node's users go offline.
    presence_grace_seconds: float = Field(default=10, ge=0)
    presence_node_ttl_seconds: float = Field(default=15, gt=0)
    # Token bucket per user for sending messages: a burst, then this many per second.
    chat_send_rate_per_second: float = Field(default=5.0, gt=0)
    chat_send_burst: int = Field(default=20, ge=1)
    # At most one ``typing: true`` relay per user and conversation per throttle interval; a
    # ``typing: false`` when no refresh came for the expiry interval.
    typing_throttle_seconds: float = Field(default=2.0, gt=0)
    typing_expiry_seconds: float = Field(default=5.0, gt=0)

    # Email: transient failures (SMTP 4xx, connection errors, the auth service away) are
    # retried with capped exponential backoff for the retry window, as mail servers do
    # (0 attempts = no limit but the window). A retry waits in the database and the
    # worker's sweeper takes it when due. The lease is renewed while an attempt runs; it
    # only runs out when its worker died (or lost the database), and then the sweeper
    # takes the email over. Redis hands an unacknowledged task of a dead worker to another
    # after the reclaim interval, which must exceed the lease.
    email_max_attempts: int = Field(default=0, ge=0)
    email_retry_base_seconds: float = Field(default=2.0, gt=0)
    email_retry_max_seconds: float = Field(default=300.0, gt=0)
    email_retry_window_seconds: float = Field(default=86400.0, gt=0)
    email_sweep_interval_seconds: float = Field(default=1.0, gt=0)
    email_lease_seconds: float = Field(default=60.0, gt=0)
    email_task_reclaim_seconds: float = Field(default=120.0, gt=0)
    email_worker_concurrency: int = Field(default=50, ge=1)
    worker_shutdown_seconds: float = Field(default=8.0, gt=0)
    auth_service_cache_seconds: float = Field(default=60.0, ge=0)
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    smtp_max_connections: int = Field(default=4, ge=1)

    # Push to devices of users who are not connected (``offline``) or to every device
    # (``always``). Web Push signs with the VAPID key (`notifyhub vapid-keys` makes one);
    # FCM uses a service-account JSON file; APNs a token-based .p8 key. A channel without
    # its credentials is off: its devices are kept, their pushes end ``failed``.
    push_policy: Literal["offline", "always"] = "offline"
    vapid_private_key: SecretStr | None = None
    vapid_subject: str = "mailto:notifications@localhost"
    fcm_credentials_file: str | None = None
    fcm_url: str = "https://fcm.googleapis.com"
    apns_key_file: str | None = None
    apns_key_id: str | None = None
    apns_team_id: str | None = None
    apns_topic: str | None = None
    apns_url: str = "https://api.push.apple.com"
    # One push request may take this long; retries back off like email's, for this window.
    push_timeout_seconds: float = Field(default=10.0, gt=0)
    push_retry_window_seconds: float = Field(default=86400.0, gt=0)
    push_worker_concurrency: int = Field(default=50, ge=1)

    # Outbound webhooks (Standard Webhooks): a failed delivery (non-2xx, timeout) is retried
    # from the base delay, doubling to the max, until the window ends. Receivers on
    # loopback, link-local or private addresses are refused unless allowed (tests, an
    # on-premises CRM).
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_retry_window_seconds: float = Field(default=86400.0, gt=0)
    webhooks_allow_private: bool = False
    webhooks_max_per_tenant: int = Field(default=50, ge=1)
    # Deliveries one worker sends at once, and at most this many to any one endpoint, so a
    # slow receiver holds a few slots, never all of them.
    webhook_worker_concurrency: int = Field(default=50, ge=1)
    webhook_endpoint_concurrency: int = Field(default=2, ge=1)
    # Retention (docs/architecture.md "Retention"): notifications older than this are purged
    # (a tenant may set fewer days), and so are expired ones, by `notifyhub worker` (or `serve`
    # on the embedded profile) every purge interval and by `notifyhub purge`; in batches of
    # at most purge_batch_rows rows, each its own transaction, purge_pause_seconds apart.
    retention_days: int = Field(default=365, ge=1, le=36500)
    # Scheduled events and digest windows: every worker (and serve on the embedded
    # profile) polls for what came due this often, taking up to this many per pass.
    scheduler_interval_seconds: float = Field(default=0.2, gt=0)
    scheduler_batch: int = Field(default=500, ge=1, le=10_000)

    purge_interval_seconds: float = Field(default=300.0, gt=0)
    purge_batch_rows: int = Field(default=5000, ge=1, le=100_000)
    purge_pause_seconds: float = Field(default=0.05, ge=0)

    # `worker` and `consume` touch this file while they are healthy (their dependencies
    # answer), every heartbeat interval; `notifyhub healthcheck` fails when it is stale. Unset:
    # no heartbeat (nothing outside a container asks).
    heartbeat_file: str | None = None
    heartbeat_interval_seconds: float = Field(default=10.0, gt=0)

    # The playground page at / (None: on unless production).
    playground: bool | None = None

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        # The hub is async end to end: only asyncpg and aiosqlite work. A bare
        # postgresql:// would make SQLAlchemy import psycopg deep inside the first connect.
        return check_database_url(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        # redis-py would refuse it only when the first client is built, deep in a start.
        if value and not value.startswith(REDIS_SCHEMES):
            raise ValueError(
                "must start with redis://, rediss:// or unix://, e.g. redis://HOST:6379/0"
            )
        return value

    @field_validator("vapid_private_key")
    @classmethod
    def _usable_vapid_key(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty (compose passes unset variables as ""): Web Push is off.
        if value is None or not value.get_secret_value().strip():
            return None
        # Found at start, in one line, rather than at the first push.
        vapid_public_key(value.get_secret_value())
        return value

    @field_validator("vapid_subject")
    @classmethod
    def _usable_vapid_subject(cls, value: str) -> str:
        return check_vapid_subject(value)

    @field_validator("unsubscribe_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes `${NOTIFYHUB_UNSUBSCRIBE_SECRET:-}`: empty means "not set".
        return None if value == "" else value

    @field_validator("public_url")
    @classmethod
    def _public_base_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parsed = urlsplit(value)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ValueError("must be an http:// or https:// URL, e.g. https://notify.example.com")
        if parsed.query or parsed.fragment:
            raise ValueError("must not have a query or fragment")
        if not value.isascii():  # it goes into a mail header as it is
            raise ValueError("must be ASCII (write an international host name in punycode)")
        return value.rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: object) -> object:
        # Accept "HS256,RS256" from the environment as well as a JSON list.
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.startswith("["):
                return json.loads(stripped)
            return [part.strip() for part in stripped.split(",") if part.strip()]
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one JWT algorithm must be accepted")
        unknown = [alg for alg in value if alg not in HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS]
        if unknown:
            raise ValueError(f"unsupported JWT algorithm(s): {', '.join(unknown)}")
        return value

    @model_validator(mode="after")
    def _keys_for_algorithms(self) -> Self:
        wants_public_key = any(alg in PUBLIC_KEY_ALGORITHMS for alg in self.jwt_algorithms)
        if wants_public_key and not (self.jwt_public_key or self.jwt_jwks_url):
            raise ValueError(
                "NOTIFYHUB_JWT_ALGORITHMS names a public-key algorithm: "
                "set NOTIFYHUB_JWT_PUBLIC_KEY or NOTIFYHUB_JWT_JWKS_URL"
            )
        if self.redis_url and self.email_task_reclaim_seconds <= self.email_lease_seconds:
            raise ValueError(
                "NOTIFYHUB_EMAIL_TASK_RECLAIM_SECONDS must exceed NOTIFYHUB_EMAIL_LEASE_SECONDS"
            )
        return self

    @property
    def cors_allowed_origins_list(self) -> str | list[str]:
        if self.cors_allowed_origins.strip() == "*":
            return "*"
        return [o.strip() for o in self.cors_allowed_origins.split(",") if o.strip()]

    @property
    def smtp_fallback_configured(self) -> bool:
        return bool(self.smtp_host and self.smtp_from_email)

    @property
    def playground_enabled(self) -> bool:
        return self.playground if self.playground is not None else not self.is_production

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def uses_hmac(self) -> bool:
        return any(alg in HMAC_ALGORITHMS for alg in self.jwt_algorithms)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.is_sqlite

    @property
    def unsubscribe_key(self) -> bytes | None:
        """The HMAC key of unsubscribe tokens; None when there is none safe to use (production
        with neither an unsubscribe secret nor a JWT secret of its own)."""
        if self.unsubscribe_secret is not None:
            return self.unsubscribe_secret.get_secret_value().encode()
        jwt_secret = self.jwt_secret.get_secret_value()
        if self.is_production and jwt_secret == DEFAULT_JWT_SECRET:
            return None  # the built-in secret is public: links signed with it could be forged
        # A key of its own, not the JWT secret itself: a token can never pass for the other.
        return hmac.new(jwt_secret.encode(), b"notifyhub unsubscribe v1", hashlib.sha256).digest()

    def check_for_production(self) -> None:
        """Refuse settings that are only safe on a developer's machine."""
        if not self.is_production:
            return
        if self.uses_hmac and self.jwt_secret.get_secret_value() == DEFAULT_JWT_SECRET:
            raise ConfigurationError(
                "NOTIFYHUB_ENV=production refuses the built-in development JWT secret: "
                "set NOTIFYHUB_JWT_SECRET to a long random value, or accept only public-key "
                "algorithms (NOTIFYHUB_JWT_ALGORITHMS=RS256 with NOTIFYHUB_JWT_PUBLIC_KEY or "
                "NOTIFYHUB_JWT_JWKS_URL)"
            )
        if self.uses_hmac and len(self.jwt_secret.get_secret_value()) < 32:
            raise ConfigurationError(
                "NOTIFYHUB_JWT_SECRET must be at least 32 characters in production"
            )
        secret = self.unsubscribe_secret
        if secret is not None and len(secret.get_secret_value()) < 32:
            raise ConfigurationError(
                "NOTIFYHUB_UNSUBSCRIBE_SECRET must be at least 32 characters in production"
            )
        if self.public_url and self.unsubscribe_key is None:
            raise ConfigurationError(
                "NOTIFYHUB_PUBLIC_URL puts unsubscribe links in emails: set "
                "NOTIFYHUB_UNSUBSCRIBE_SECRET (or NOTIFYHUB_JWT_SECRET) to a long random value"
            )

    def check_database_for_production(self) -> None:
        """Refuse SQLite in production: one file on one machine, lost with the container.

        Separate from :meth:`check_for_production` because only the commands that open the
        database (serve, migrate, worker, consume) need a real one; ``token`` does not.
        """
        if self.is_production and self.is_sqlite:
            raise ConfigurationError(
                "NOTIFYHUB_ENV=production refuses SQLite (the embedded default): set "
                "NOTIFYHUB_DATABASE_URL=postgresql+asyncpg://USER:PASSWORD@HOST:5432/DB"
            )


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

SUPPORTED_DRIVERS = {"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}
# Other spellings of the two backends that users bring from other tools.
BACKEND_ALIASES = {"postgres": "postgresql", "pgsql": "postgresql", "sqlite3": "sqlite"}


def check_database_url(url: str) -> str:
    """``url`` if it names an async driver the hub ships; otherwise a ValueError that says
    which URL to write instead (never echoing the URL: it may hold a password)."""
    # Imported here, not at the top: settings are loaded by every command, and `notifyhub
    # token` or `healthcheck` should not pay for SQLAlchemy.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "not a database URL: use postgresql+asyncpg://USER:PASSWORD@HOST:5432/DB "
            "or sqlite+aiosqlite:///PATH"
        ) from None
    backend = BACKEND_ALIASES.get(parsed.get_backend_name(), parsed.get_backend_name())
    wanted = SUPPORTED_DRIVERS.get(backend)
    if wanted is None:
        raise ValueError(
            f"{parsed.drivername}:// is not supported: use "
            "postgresql+asyncpg://USER:PASSWORD@HOST:5432/DB or sqlite+aiosqlite:///PATH"
        )
    if parsed.drivername != wanted:
        raise ValueError(
            f"{parsed.drivername}:// needs the async driver the hub ships: write "
            f"{wanted}:// instead (same host, database and credentials)"
        )
    return url


def describe_settings_error(exc: ValidationError) -> str:
    """A pydantic error as one line naming the variables, without the values (secrets)."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    problems: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        fields = [str(part) for part in error["loc"] if isinstance(part, str)]
        if fields:
            problems.append(f"{prefix}{fields[0].upper()}: {message}")
        else:
            problems.append(message)
    return "; ".join(problems)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment and ``.env``; keyword overrides win."""
    return Settings(**overrides)  # type: ignore[arg-type]
