"""The outbox's configuration: one validated, frozen object built from an environment mapping."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from models import DEFAULT_LIMITS, MessageLimits
from models.databases import Database, database_at
from worker.api_keys import fingerprint_salt
from worker.database import behind_transaction_pooler
from worker.errors import SettingsError
from worker.secrets import variable
from worker.setting_concern import _Concern
from worker.setting_values import HEADER_VALUE, Seconds, host_names, is_local_host
from worker.settings_policy import PolicySettings
from worker.settings_quotas import QuotaSettings
from worker.settings_timing import timing_problem
from worker.tenant_settings import per_tenant, tenant_key, tenant_rate, tenant_weight


class NotifyMode(StrEnum):
    """Whether inserts wake workers at once, besides polling (LISTEN/NOTIFY on PostgreSQL,
    the newest row id read every 50 ms on SQLite)."""

    AUTO = "auto"  # on wherever the database can wake workers: PostgreSQL and SQLite both can
    ON = "on"
    OFF = "off"


class DatabaseSettings(_Concern):
    """Where the outbox lives, how inserts wake workers, and how long finished rows stay."""

    database_url: str = Field("sqlite:///outbox.db", alias="OUTBOX_DATABASE_URL", min_length=1)
    # A direct connection for beat's LISTEN, when the database URL goes through a transaction
    # pooler (`?pooler=transaction`), where a LISTEN session does not survive its statement.
    listen_url: str | None = Field(None, alias="OUTBOX_LISTEN_URL", min_length=1)
    notify: NotifyMode = Field(NotifyMode.AUTO, alias="OUTBOX_NOTIFY")
    retention: Seconds = Field(timedelta(days=30), alias="OUTBOX_RETENTION_SECONDS")
    # How long a delivery report no message holds (other traffic on the account, a made-up
    # tracking id) is kept; a matched report goes with its message.
    unmatched_report_retention: Seconds = Field(
        timedelta(days=7), alias="OUTBOX_UNMATCHED_REPORT_RETENTION_SECONDS"
    )

    @model_validator(mode="after")
    def _check_database(self) -> Self:
        _behind_pooler("OUTBOX_DATABASE_URL", self.database_url)
        if self.listen_url is None:
            return self
        if not _listens(self.database_url):
            raise ValueError("OUTBOX_LISTEN_URL: only a PostgreSQL outbox listens for inserts")
        if not _listens(self.listen_url):
            raise ValueError("OUTBOX_LISTEN_URL: must be a PostgreSQL URL")
        if _behind_pooler("OUTBOX_LISTEN_URL", self.listen_url):
            raise ValueError(
                "OUTBOX_LISTEN_URL: must be a direct connection: "
                "LISTEN does not work through a transaction pooler"
            )
        return self

    @property
    def database(self) -> Database:
        """The database the outbox lives in (``models.databases``)."""
        return database_at(self.database_url)

    @property
    def behind_transaction_pooler(self) -> bool:
        """True when OUTBOX_DATABASE_URL goes through a transaction pooler (`?pooler=...`)."""
        return behind_transaction_pooler(self.database_url)

    @property
    def listen_on(self) -> str | None:
        """Where beat LISTENs for inserts on PostgreSQL: OUTBOX_LISTEN_URL, else the database
        URL unless it goes through a transaction pooler (None: nowhere, polling alone)."""
        if self.listen_url is not None:
            return self.listen_url
        return None if self.behind_transaction_pooler else self.database_url

    @property
    def notify_enabled(self) -> bool:
        """Whether inserts wake the dispatcher at once (both databases can; "auto" means on)."""
        return self.notify is not NotifyMode.OFF


class BrokerSettings(_Concern):
    """The Celery broker: wake-up calls only (the outbox table is the truth)."""

    broker_url: str = Field("redis://localhost:6379/0", alias="CELERY_BROKER_URL", min_length=1)
    # Where kombu's filesystem:// broker (the demo's, no server) keeps its message files.
    broker_folder: Path = Field(Path(".demo/broker"), alias="OUTBOX_BROKER_FOLDER")


class ApiSettings(_Concern):
    """Wiraya's API: where it is, the key, and how long one call may take."""

    wiraya_base_url: str = Field("https://api.wiraya.com", alias="WIRAYA_BASE_URL")
    wiraya_api_key: SecretStr | None = Field(None, alias="WIRAYA_API_KEY")
    # Each tenant's own key (docs/tenants.md): "clinic=key1,shop=key2"; a tenant not named
    # here sends with WIRAYA_API_KEY.
    wiraya_api_keys: Annotated[dict[str, SecretStr], BeforeValidator(per_tenant(tenant_key))] = (
        Field(default_factory=dict, alias="WIRAYA_API_KEYS")
    )
    wiraya_timeout: Seconds = Field(timedelta(seconds=30), alias="WIRAYA_TIMEOUT_SECONDS")
    # Host names that count as a local sandbox besides localhost (plain http allowed, no key
    # needed): an explicit opt-in, e.g. "sandbox" for docker-compose's sandbox service.
    sandbox_hosts: Annotated[frozenset[str], BeforeValidator(host_names)] = Field(
        frozenset(), alias="WIRAYA_SANDBOX_HOSTS"
    )
    # The secret every process of one deployment shares to fingerprint the API key with
    # (worker.api_keys.key_fingerprint); unset, the database's location stands in.
    key_fingerprint_salt: SecretStr | None = Field(None, alias="OUTBOX_KEY_FINGERPRINT_SALT")

    @model_validator(mode="after")
    def _check_api(self) -> Self:
        url = urlsplit(self.wiraya_base_url)
        if url.scheme not in {"http", "https"} or not url.hostname:
            raise ValueError("WIRAYA_BASE_URL: must be an http(s) URL with a host")
        if url.scheme == "http" and not self.wiraya_is_local:
            raise ValueError(
                "WIRAYA_BASE_URL: plain http is refused except to localhost "
                "and the hosts named in WIRAYA_SANDBOX_HOSTS"
            )
        key = self.wiraya_api_key
        if key is not None and not key.get_secret_value().strip():
            raise ValueError("WIRAYA_API_KEY: must not be blank")
        if key is not None and not HEADER_VALUE.fullmatch(key.get_secret_value()):
            raise ValueError(
                "WIRAYA_API_KEY: must be printable ASCII with no space or tab before or after it "
                "(it is sent as an HTTP header): check the .env file or the secret's file"
            )
        if key is None and not self.wiraya_api_keys and not self.wiraya_is_local:
            raise ValueError(
                "WIRAYA_API_KEY: required unless WIRAYA_API_KEYS names tenants' keys "
                "or WIRAYA_BASE_URL is a local sandbox"
            )
        return self

    @property
    def wiraya_is_local(self) -> bool:
        """True when the API base URL is a sandbox: this machine, or a WIRAYA_SANDBOX_HOSTS host."""
        host = (urlsplit(self.wiraya_base_url).hostname or "").lower()
        return is_local_host(host) or host in self.sandbox_hosts

    @property
    def api_key(self) -> str:
        """The API key in clear, for the one header that needs it; the sandbox accepts any."""
        return self.wiraya_api_key.get_secret_value() if self.wiraya_api_key else "sandbox"

    def tenant_api_key(self, tenant: str) -> str | None:
        """The key ``tenant``'s messages go out under: its own, else WIRAYA_API_KEY (else, on a
        local sandbox with no tenant's key set, the sandbox's stand-in); None when it has none."""
        own = self.wiraya_api_keys.get(tenant)
        if own is not None:
            return own.get_secret_value()
        if self.wiraya_api_key is None and (self.wiraya_api_keys or not self.wiraya_is_local):
            return None
        return self.api_key


# Batches grow to this size unless OUTBOX_BATCH_SIZE_MAX says otherwise: past it a drain's
# CPU per message hardly falls (docs/performance.md), and an API that takes fewer says so
# with a too-large answer, which splits that batch and caps the growth for every worker.
DEFAULT_BATCH_SIZE_MAX = 500
# A refused key is tried again at least this often: a brake's exit never waits for an operator.
MAX_REFUSED_KEY_RETRY = timedelta(hours=1)


class DispatchSettings(_Concern):
    """How batches are claimed, retried and paced."""

    batch_size: int = Field(100, alias="OUTBOX_BATCH_SIZE", ge=1, le=10_000)
    # Batches grow from OUTBOX_BATCH_SIZE while full ones are taken, up to this (the API's own
    # limit is undocumented; a too-large answer splits the batch and caps the growth).
    batch_size_max: int | None = Field(None, alias="OUTBOX_BATCH_SIZE_MAX", ge=1, le=10_000)
    max_attempts: int = Field(10, alias="OUTBOX_MAX_ATTEMPTS", ge=1, le=1_000)
    max_age: Seconds = Field(timedelta(seconds=86_400), alias="OUTBOX_MAX_AGE_SECONDS")
    backoff_base: Seconds = Field(timedelta(seconds=5), alias="OUTBOX_BACKOFF_BASE_SECONDS")
    backoff_max: Seconds = Field(timedelta(seconds=900), alias="OUTBOX_BACKOFF_MAX_SECONDS")
    lease: Seconds = Field(timedelta(seconds=120), alias="OUTBOX_LEASE_SECONDS")
    poll_interval: Seconds = Field(timedelta(seconds=1), alias="OUTBOX_POLL_INTERVAL_SECONDS")
    max_parallel: int = Field(4, alias="OUTBOX_MAX_PARALLEL_DISPATCHES", ge=1, le=1_000)
    circuit_failures: int = Field(5, alias="OUTBOX_CIRCUIT_FAILURES", ge=1, le=1_000)
    # While the circuit is open, one probe request per interval (its own cadence, not the
    # messages' backoff): the longest an outage outlives the API's return.
    probe_interval: Seconds = Field(timedelta(seconds=10), alias="OUTBOX_PROBE_INTERVAL_SECONDS")
    # A known request rate limit of the API account, across all workers (0: none, learnt).
    rate_limit: float = Field(0.0, alias="OUTBOX_RATE_LIMIT", ge=0, le=100_000)
    # The known rate limit of each tenant's own key's account, "clinic=5,shop=1" (requests/s).
    rate_limits: Annotated[dict[str, float], BeforeValidator(per_tenant(tenant_rate))] = Field(
        default_factory=dict, alias="OUTBOX_RATE_LIMITS"
    )
    # A refused API key (401/403) tries one message again on this cadence, on its own: the
    # longest a key the API takes again stays refused without an operator.
    refused_key_retry: Seconds = Field(
        timedelta(seconds=300), alias="OUTBOX_REFUSED_KEY_RETRY_SECONDS"
    )
    # Each tenant's share of the waiting-time turns, "clinic=2,shop=0.5" (others: 1).
    tenant_weights: Annotated[dict[str, float], BeforeValidator(per_tenant(tenant_weight))] = Field(
        default_factory=dict, alias="OUTBOX_TENANT_WEIGHTS"
    )

    @model_validator(mode="after")
    def _check_dispatch(self) -> Self:
        if self.backoff_base > self.backoff_max:
            raise ValueError(
                "OUTBOX_BACKOFF_BASE_SECONDS: must not exceed OUTBOX_BACKOFF_MAX_SECONDS"
            )
        if self.probe_interval > timedelta(seconds=30):
            raise ValueError("OUTBOX_PROBE_INTERVAL_SECONDS: must be at most 30 seconds")
        if self.batch_size_max is not None and self.batch_size_max < self.batch_size:
            raise ValueError("OUTBOX_BATCH_SIZE_MAX: must not be below OUTBOX_BATCH_SIZE")
        if self.refused_key_retry > MAX_REFUSED_KEY_RETRY:
            raise ValueError("OUTBOX_REFUSED_KEY_RETRY_SECONDS: must be at most 3600 seconds")
        return self

    @property
    def batch_size_cap(self) -> int:
        """The largest batch to grow to: OUTBOX_BATCH_SIZE_MAX, by default 500 (or
        OUTBOX_BATCH_SIZE when that is larger)."""
        if self.batch_size_max is not None:
            return self.batch_size_max
        return max(DEFAULT_BATCH_SIZE_MAX, self.batch_size)

    @property
    def configured_rate(self) -> float | None:
        """OUTBOX_RATE_LIMIT in requests per second, or None when no limit is configured."""
        return self.rate_limit or None


_MAX_LIMIT = 1_000_000


class LimitSettings(_Concern):
    """How large a message may be: the dispatcher fails a stored row over these limits."""

    max_text_chars: int = Field(
        DEFAULT_LIMITS.text_chars, alias="OUTBOX_MAX_TEXT_CHARS", ge=1, le=_MAX_LIMIT
    )
    max_placeholder_chars: int = Field(
        DEFAULT_LIMITS.placeholder_chars, alias="OUTBOX_MAX_PLACEHOLDER_CHARS", ge=1, le=_MAX_LIMIT
    )
    max_placeholders_total_chars: int = Field(
        DEFAULT_LIMITS.placeholders_total_chars,
        alias="OUTBOX_MAX_PLACEHOLDERS_TOTAL_CHARS",
        ge=1,
        le=_MAX_LIMIT,
    )
    max_message_bytes: int = Field(
        DEFAULT_LIMITS.message_bytes, alias="OUTBOX_MAX_MESSAGE_BYTES", ge=1, le=_MAX_LIMIT
    )

    @property
    def message_limits(self) -> MessageLimits:
        """The limits as models take them (``screen_stored``, and producers' ``limits=``)."""
        return MessageLimits(
            text_chars=self.max_text_chars,
            placeholder_chars=self.max_placeholder_chars,
            placeholders_total_chars=self.max_placeholders_total_chars,
            message_bytes=self.max_message_bytes,
        )


CALLBACK_LOGIN = re.compile(r"[^\s:]+:\S+")
MIN_CALLBACK_PASSWORD = 12


class CallbackSettings(_Concern):
    """The delivery-report receiver: Wiraya's login, and the limits on its requests."""

    callback_auth: SecretStr | None = Field(None, alias="OUTBOX_CALLBACK_AUTH")
    # A body costs the receiver about 20 times its size while it is parsed and stored.
    callback_max_body_bytes: int = Field(
        4 * 1024 * 1024, alias="OUTBOX_CALLBACK_MAX_BODY_BYTES", ge=1, le=1024 * 1024 * 1024
    )
    # A request must arrive whole (request line, headers, body) within this from its first
    # byte, or the connection is closed: a client sending half a request holds nothing longer.
    callback_read_timeout: Seconds = Field(
        timedelta(seconds=10), alias="OUTBOX_CALLBACK_READ_TIMEOUT_SECONDS", le=timedelta(hours=1)
    )
    # Connections served at once; past it new requests are answered 503 (Wiraya resends).
    callback_max_connections: int = Field(
        64, alias="OUTBOX_CALLBACK_MAX_CONNECTIONS", ge=1, le=100_000
    )

    @model_validator(mode="after")
    def _check_callback_auth(self) -> Self:
        # Raised without the value: it is a password (and pydantic would echo it).
        if self.callback_auth is None:
            raise ValueError("OUTBOX_CALLBACK_AUTH: required (user:password for Wiraya's login)")
        login = self.callback_auth.get_secret_value()
        if not CALLBACK_LOGIN.fullmatch(login):
            raise ValueError("OUTBOX_CALLBACK_AUTH: must be user:password, without spaces")
        if len(login.partition(":")[2]) < MIN_CALLBACK_PASSWORD:
            raise ValueError(
                f"OUTBOX_CALLBACK_AUTH: the password must be at least {MIN_CALLBACK_PASSWORD} "
                "characters (it guards an endpoint open to the internet)"
            )
        return self

    @property
    def callback_credentials(self) -> bytes:
        """``user:password`` as the bytes an Authorization: Basic header carries."""
        assert self.callback_auth is not None  # checked above
        return self.callback_auth.get_secret_value().encode()


class OperatorSettings(DatabaseSettings, BrokerSettings, DispatchSettings, QuotaSettings):
    """What operator commands (the CLI, the metrics) need: never the API's address or key."""


class ReceiverSettings(DatabaseSettings, BrokerSettings, CallbackSettings):
    """`outbox receiver`: the database, the counters' Redis and the report requests' login."""


class Settings(
    DatabaseSettings,
    BrokerSettings,
    ApiSettings,
    DispatchSettings,
    LimitSettings,
    PolicySettings,
    QuotaSettings,
):
    """A worker's settings: every concern, and the rules that join them."""

    @property
    def fingerprint_salt(self) -> str:
        """What the API key's fingerprint is keyed with (worker.api_keys.fingerprint_salt)."""
        return fingerprint_salt(self.key_fingerprint_salt, self.database_url)

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        problem = timing_problem(self.wiraya_timeout, self.lease)
        if problem is not None:
            raise ValueError(problem)
        keyless = sorted(set(self.rate_limits) - set(self.wiraya_api_keys))
        if keyless:
            raise ValueError(
                f"OUTBOX_RATE_LIMITS: tenant {keyless[0]!r} has no key of its own in "
                "WIRAYA_API_KEYS: it sends under WIRAYA_API_KEY, whose rate is OUTBOX_RATE_LIMIT"
            )
        return self


def _behind_pooler(variable: str, url: str) -> bool:
    """Whether ``url`` goes through a transaction pooler; a bad pooler option is a ValueError
    naming ``variable``. An unreadable URL is left to the engine to report, as any other."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    try:
        return behind_transaction_pooler(parsed)
    except ArgumentError as error:
        raise ValueError(f"{variable}: {error}") from None


def _listens(url: str) -> bool:
    """Whether the database at ``url`` can LISTEN for inserts (not one the outbox runs on: no)."""
    try:
        return database_at(url).listens_for_inserts
    except ArgumentError:
        return False


def database_url_from_environ(environ: Mapping[str, str] | None = None) -> str:
    """OUTBOX_DATABASE_URL alone, for tools that need no API settings (migrations, the CLI)."""
    environ = os.environ if environ is None else environ
    default = DatabaseSettings.model_fields["database_url"].default
    try:
        return variable(environ, "OUTBOX_DATABASE_URL") or str(default)
    except OSError as error:
        raise SettingsError(str(error)) from None
