"""Typed settings, read once in a composition root (``apps/``, ``cli/``) and passed in.

Environment variables use the prefix ``TRUNKLINE_`` and ``__`` between nested
groups, e.g. ``TRUNKLINE_DATABASE__URL`` or ``TRUNKLINE_SECURITY__KEY_HASH_SECRET``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal, TypeVar, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from trunkline.errors import ConfigurationError

MIN_SECRET_LENGTH = 32
MIN_SECRET_DISTINCT = 8
"""A secret of fewer distinct characters (``"s" * 40``, ``"changeme" * 4``, blanks) is a
placeholder, not a secret; 32 random hex digits have about 14."""


DATABASE_SCHEMES = ("postgresql", "postgresql+psycopg", "sqlite", "sqlite+pysqlite")
"""What Trunkline runs on, with the drivers it ships (``postgres://``, libpq's spelling, or
``postgresql+psycopg2://`` stopped every process with a traceback from SQLAlchemy)."""
REDIS_SCHEMES = ("redis", "rediss", "unix")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

Port = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port to listen on (one beyond it stopped the process with OverflowError's traceback)."""


class DatabaseSettings(BaseModel):
    url: str = "sqlite:///.trunkline/trunkline.db"
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme, _, _ = url.partition("://")
        if scheme not in DATABASE_SCHEMES:  # the URL is not repeated: it may hold a password
            raise ValueError(
                "must be a PostgreSQL or SQLite URL (postgresql+psycopg://USER@HOST/DB or "
                "sqlite:///PATH)"
            )
        if scheme.startswith("postgresql") and "@" in _after_password(url):
            # SQLAlchemy ends the password at its first '@' and reads the rest of it as the
            # host, the port or the database (whichever of '/', ':', '?' follows), so the
            # connection error showed it. Every part after the password may write '@' as %40.
            raise ValueError(
                "must be a PostgreSQL URL whose password writes '@' as %40 (the host read "
                "from it holds the rest of the password, which a connection error would show)"
            )
        return url


_USER_INFO = re.compile(r"[^:/]*(?::[^@]*)?@")
"""A URL's user and password as SQLAlchemy reads them: the user up to ':' (it may hold '@'),
the password up to its first '@'."""


def _after_password(url: str) -> str:
    """What follows the user and password of ``url`` (nothing when it has none: no password
    to show)."""
    rest = url.partition("://")[2]
    found = _USER_INFO.match(rest)
    return rest[found.end() :] if found else ""


class RedisSettings(BaseModel):
    url: str | None = None
    """``redis://…``; unset (or empty) means in-memory stores (embedded mode only)."""
    key_prefix: str = "trunkline"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if not url:
            return None
        scheme, separator, _ = url.partition("://")
        if not separator or scheme not in REDIS_SCHEMES:
            raise ValueError("must be a Redis URL (redis://HOST:PORT/DB, rediss:// or unix://)")
        try:  # as redis-py reads it, on the first connection (its error may quote the password)
            port = urlsplit(url).port
        except ValueError:
            port = -1
        if port == -1:
            raise ValueError(
                "must be a Redis URL whose host and port can be read (a port from 1 to 65535; "
                "'/', '@', '[' and ']' in a password written %2F, %40, %5B and %5D)"
            )
        return url


class SecuritySettings(BaseModel):
    key_hash_secret: SecretStr | None = None
    """HMAC secret for API keys and access tokens; required in production."""
    previous_key_hash_secrets: list[SecretStr] = Field(default_factory=list)
    """Secrets ``key_hash_secret`` replaced, still accepted to verify the keys and tokens
    issued under them (a JSON list); never used to issue. See docs/controlplane.md."""
    dev_login: bool = True
    """Local development login without an identity provider; refused in production."""


class QuotaSettings(BaseModel):
    """How the gateway enforces quotas (``TRUNKLINE_GATEWAY__QUOTA__*``); see docs/quotas.md."""

    on_store_failure: Literal["open", "closed"] = "open"
    """While Redis is unreachable: keep serving under a per-process limiter, or refuse (503)."""
    local_share: float = Field(default=1.0, gt=0, le=1)
    """Share of each limit one process admits on its own while Redis is away; N replicas
    together overshoot by at most ``N * local_share`` times a limit (1/N: no overshoot)."""
    max_reserved_completion_tokens: int = Field(default=4096, ge=1)
    """Completion tokens a request without ``max_tokens`` reserves (one with it reserves it)."""
    lease_s: float = Field(default=60.0, gt=0)
    """A concurrency slot expires this long after its gateway last renewed it (a crash)."""
    max_request_s: float = Field(default=3600.0, gt=0)
    """Leases are renewed and reservations settled for at most this long per request."""
    probe_every_s: float = Field(default=1.0, gt=0)
    """While Redis is away, try it again on a real request this often."""
    store_timeout_s: float = Field(default=0.25, gt=0)
    """Socket timeout of the gateway's quota calls to Redis."""


class EngineStateSettings(BaseModel):
    """How the gateway watches its engines (``TRUNKLINE_GATEWAY__ENGINES__*``); see
    docs/gateway.md."""

    scrape_interval_s: float = Field(default=0.1, gt=0)
    """How often each engine's ``/metrics`` is read: figures are at most about twice this old.
    Each read costs the engine's API server some 5 ms of CPU (vLLM builds the page whole), and
    every gateway process reads every engine: raise it with many gateway processes."""
    scrape_timeout_s: float = Field(default=1.0, gt=0)
    """A scrape slower than this counts as a failure of the engine."""
    scrape_concurrency: int = Field(default=32, ge=1)
    """Scrapes in flight at once, over all engines."""
    scrapes_per_s: float = Field(default=200.0, gt=0)
    """At most this many scrapes a second over all engines: beyond ``scrapes_per_s`` times
    ``scrape_interval_s`` endpoints (20 at the defaults), each is read every ``endpoints /
    scrapes_per_s`` seconds instead. A scrape of vLLM 0.32's 53 kB page costs a gateway
    process about 1.4 ms of CPU, so the default bounds scraping to about a quarter of a core;
    raise it (and give the process the CPU) to keep figures fresher over many endpoints."""
    lost_stream_s: float = Field(default=10.0, gt=0)
    """A stream whose response head came this long before a scrape showing its engine running
    and queueing nothing, still without a first event, moves to the next endpoint (docs/
    gateway.md: retry before the first byte)."""
    eject_after_failures: int = Field(default=3, ge=1)
    """Consecutive failures (connect errors, 5xx, timeouts, failed scrapes) that eject an
    endpoint from routing."""
    ejection_base_s: float = Field(default=1.0, gt=0)
    """First ejection; each failed probe after one doubles it."""
    ejection_max_s: float = Field(default=30.0, gt=0)
    ejection_probe_max_s: float = Field(default=5.0, gt=0)
    """Longest ejection after a failed scrape probe (the engine does not answer at all): how
    late, at most, an engine back from an outage is found."""
    kv_events: bool = True
    """Subscribe to the KV-cache events of endpoints that publish them (precise prefix routing)."""


class KvHashSettings(BaseModel):
    """How the engines hash their prefix-cache blocks, which the precise prefix index must
    match: vLLM's ``--prefix-caching-hash-algo`` and its ``PYTHONHASHSEED`` (None: unset)."""

    algo: Literal["sha256", "sha256_cbor"] = "sha256"
    seed: str | None = None


KEEP_ALIVE_TIMEOUT_S = 75.0
"""nginx's ``keepalive_timeout``: above AWS ALB's and ingress-nginx's 60 s idle timeouts toward
their targets, and far above the clients' (docs/gateway.md, Settings)."""

DRAIN_TIMEOUT_S = 25
"""How long a server stopped (SIGTERM, Ctrl-C) waits for its requests in flight before it cuts
them: under Kubernetes' default grace period of 30 s, whose SIGKILL cuts them unlogged."""


class GatewaySettings(BaseModel):
    host: str = "127.0.0.1"
    port: Port = 8080
    workers: int = 1
    max_body_bytes: int = 4 * 1024 * 1024
    header_timeout_s: float = Field(default=10.0, gt=0)
    """A connection's request head (request line and headers) must arrive whole within this
    long of the connection opening, or on a kept-alive connection of the head's first byte;
    else the connection is closed (408 if part of a head came). Bytes arriving do not extend
    it: a client sending nothing, or a byte now and then, held a connection for as long as it
    liked. An SDK sends its head in one write, so the default is far beyond a real client's."""
    keep_alive_timeout_s: float = Field(default=KEEP_ALIVE_TIMEOUT_S, gt=0)
    """A kept-alive connection idle this long after its last response is closed, silently.
    Longer than the idle timeout of whatever reuses connections in front (AWS ALB 60 s,
    ingress-nginx 60 s, httpx and the OpenAI SDK 5 s), or a request it sends as the server
    closes fails unanswered (docs/gateway.md, Settings)."""
    body_timeout_s: float = Field(default=60.0, gt=0)
    """A request's body must arrive whole within this long of its headers (408 otherwise): a
    client trickling it in held a connection, and its key's check, for as long as it liked."""
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 300.0
    upstream_keep_alive_s: float = Field(default=4.0, ge=0)
    """How long an idle connection to an engine is kept for the next request. Under the
    engine server's own idle timeout (vLLM: uvicorn's 5 s, ``VLLM_HTTP_TIMEOUT_KEEP_ALIVE``),
    or the engine may close a connection just as a request is sent on it (sent again on a new
    one, see docs/gateway.md); raise it with the engines' timeout. 0: a connection a request."""
    stream_idle_timeout_s: float = Field(default=30.0, gt=0)
    """A stream that sent its first event and then nothing for this long is given up: the
    client gets the mid-stream error event. vLLM sends an event every decode step; a vLLM
    whose engine core died before aborting its streams (on SIGTERM) keeps them open and silent
    until its connections close. Not counted against the endpoint (vLLM also pauses the
    streams it preempts when short of KV cache). Before the first event, ``read_timeout_s`` and
    ejection apply."""
    ejected_stream_idle_s: float = Field(default=5.0, gt=0)
    """Once its endpoint is ejected (its scrapes or requests failed in a row), a stream that
    sent its first event may stay silent this long, not ``stream_idle_timeout_s``: a vLLM
    stopped on SIGTERM keeps its streams open and silent, and its clients should not wait out
    the long timeout. A stream still flowing on an ejected endpoint (scrapes that time out
    under load) goes on as long as its pauses are shorter."""
    drain_timeout_s: int = Field(default=DRAIN_TIMEOUT_S, gt=0)
    """On SIGTERM the gateway stops accepting and waits this long for its requests in flight;
    then it cancels them, meters each with what it streamed so far and flushes the usage events
    before it exits. Keep it under the orchestrator's grace period (Kubernetes: 30 s), whose
    SIGKILL would otherwise cut long streams unmetered."""
    shutdown_delay_s: float = Field(default=5.0, ge=0)
    """On SIGTERM ``/health`` answers 503 ``draining`` at once, while the gateway goes on
    accepting and serving for this long (load balancers stop routing to it meanwhile); then it
    stops accepting. Counted within ``drain_timeout_s`` (at most all of it), which still bounds
    the whole stop. 0: stop accepting at once, as before."""

    max_held_usage_events: int | None = Field(default=1_000_000, gt=0)
    """Usage events a gateway process holds in memory while the usage stream (Redis) does not
    take them (about 0.5 KB each) before it refuses requests with 503 ``usage_unavailable``:
    unbounded, a long outage grew it until the process died and lost them all."""
    snapshot_poll_s: float = 0.5
    max_connections: int = 1000
    quota: QuotaSettings = Field(default_factory=QuotaSettings)
    routing_policy: str = "prefix-aware"
    """The routing policy by name (``trunkline.gateway.routing.POLICIES``)."""
    admission: Literal["slo", "off"] = "slo"
    """``slo``: SLO admission control per tier (docs/admission.md); ``off``: admit everything."""
    engines: EngineStateSettings = Field(default_factory=EngineStateSettings)
    tokenizers: dict[str, str] = Field(default_factory=dict)
    """Served model name to a local directory holding its Hugging Face tokenizer (and chat
    template), for routing policies that match prompts to the engines' KV-cache events
    (``precise-prefix``): they need the prompt's token ids. Needs ``transformers``."""
    kv_hash: KvHashSettings = Field(default_factory=KvHashSettings)
    metrics_token: SecretStr | None = None
    """Bearer token a scraper sends for ``/metrics`` and ``/health``'s details (which name
    pools and endpoints and count every tier's traffic); without it ``/health`` says only its
    status. Unset: open on a loopback ``host`` only; required in production."""
    cors_origins: list[str] = Field(default_factory=list)
    """Web origins whose pages may call the gateway from a browser (CORS), each
    ``scheme://host[:port]``, or ``*`` for any (as OpenAI's API answers): keys are sent as
    headers, never cookies, so no credentials are allowed either way. Empty: no CORS headers,
    and browsers refuse every cross-origin call."""

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not a web origin: scheme://host[:port], no path, or *"
                )
        return origins


_ORIGIN = re.compile(r"https?://[^\s/?#@]+")
"""A web origin as a browser sends it: a scheme and a host (and port), nothing after."""


class ControlPlaneSettings(BaseModel):
    host: str = "127.0.0.1"
    port: Port = 8081
    header_timeout_s: float = Field(default=10.0, gt=0)
    """As the gateway's: a connection whose request head is not whole this long after it
    opened (or after the head's first byte, on a kept-alive connection) is closed."""
    keep_alive_timeout_s: float = Field(default=KEEP_ALIVE_TIMEOUT_S, gt=0)
    """As the gateway's: a kept-alive connection idle this long is closed."""
    body_timeout_s: float = Field(default=60.0, gt=0)
    """As the gateway's: a request's body must arrive whole within this long of its headers
    (408 otherwise), or an authenticated caller trickling one in held a connection for ever."""
    drain_timeout_s: int = Field(default=DRAIN_TIMEOUT_S, gt=0)
    """As the gateway's: on SIGTERM the control plane stops accepting and waits this long for
    its requests in flight (a billing export streaming to a slow client), then cuts them: a
    streamed export ends without its last chunk, which clients see as a broken download, and
    the log says it was not sent whole. Without it, one slow download held the process until
    the orchestrator's SIGKILL."""
    shutdown_delay_s: float = Field(default=5.0, ge=0)
    """As the gateway's: on SIGTERM ``/healthz`` answers 503 at once while the control plane
    serves on for this long, within ``drain_timeout_s``."""
    metrics_token: SecretStr | None = None
    """As the gateway's, for ``/metrics`` and ``/healthz``'s ``snapshot`` report."""
    readiness_timeout_s: float = Field(default=1.0, gt=0)
    """How long ``/healthz`` waits for the database to answer, on a connection of its own,
    before it answers 503: under a probe's own timeout (Kubernetes: 1 s by default)."""
    max_live_keys_per_tenant: int = Field(default=10_000, ge=1)
    """Live (not revoked, not expired) API keys a tenant may have; a creation through the API
    past it is a 409. Every live key is in every gateway's configuration (docs/controlplane.md)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRUNKLINE_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["development", "production"] = "development"
    state_dir: Path = Path(".trunkline")
    log_level: str = "INFO"
    log_json: bool = False
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    controlplane: ControlPlaneSettings = Field(default_factory=ControlPlaneSettings)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, level: str) -> str:
        if level.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level.upper()

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def check_production(self, serving: Literal["gateway", "controlplane"] | None = None) -> None:
        """Refuse to start production with development shortcuts; ``serving``: the server this
        process runs, whose ``/metrics`` must want a scrape token."""
        if not self.is_production:
            return
        problems = []
        secret = self.security.key_hash_secret
        if secret is None or weak_secret(secret.get_secret_value()):
            problems.append(
                f"TRUNKLINE_SECURITY__KEY_HASH_SECRET must be set to at least "
                f"{MIN_SECRET_LENGTH} random characters, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        if any(
            weak_secret(old.get_secret_value()) for old in self.security.previous_key_hash_secrets
        ):
            problems.append(
                "each of TRUNKLINE_SECURITY__PREVIOUS_KEY_HASH_SECRETS must be a secret as "
                "strong as TRUNKLINE_SECURITY__KEY_HASH_SECRET"
            )
        if self.security.dev_login:
            problems.append(
                "the development login must be off (TRUNKLINE_SECURITY__DEV_LOGIN=false)"
            )
        if self.database.url.startswith("sqlite"):
            problems.append("TRUNKLINE_DATABASE__URL must point at PostgreSQL, not SQLite")
        if not self.redis.url:
            problems.append(
                "TRUNKLINE_REDIS__URL must be set (in-memory stores are for one process)"
            )
        if serving is not None:
            token = getattr(self, serving).metrics_token
            if token is None or weak_secret(token.get_secret_value()):
                problems.append(
                    f"TRUNKLINE_{serving.upper()}__METRICS_TOKEN must be set to at least "
                    f"{MIN_SECRET_LENGTH} random characters: the bearer token a scraper sends "
                    "for /metrics (probes need none)"
                )
            elif _is_key_hash_secret(token.get_secret_value(), self.security):
                problems.append(
                    f"TRUNKLINE_{serving.upper()}__METRICS_TOKEN must not be the key-hash secret "
                    "(TRUNKLINE_SECURITY__KEY_HASH_SECRET or one of its previous ones): the "
                    "scraper holding it could compute every tenant's cache salt"
                )
        if problems:
            raise ConfigurationError("production settings refused: " + "; ".join(problems))


def _is_key_hash_secret(token: str, security: SecuritySettings) -> bool:
    secrets = [security.key_hash_secret, *security.previous_key_hash_secrets]
    return any(s is not None and s.get_secret_value().strip() == token.strip() for s in secrets)


def weak_secret(value: str) -> bool:
    """Too short once blanks around it are taken off, or too few distinct characters."""
    stripped = value.strip()
    return len(stripped) < MIN_SECRET_LENGTH or len(set(stripped)) < MIN_SECRET_DISTINCT


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; keyword overrides win (used by the CLI)."""
    return read_environment(Settings, **overrides)


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def read_environment(kind: type[SettingsT], **overrides: object) -> SettingsT:
    """``kind`` read from the environment. A value that does not fit is a
    ``ConfigurationError`` naming its variable, not pydantic's trace; the values are not
    repeated: one may be a secret."""
    try:
        return kind(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"TRUNKLINE_{'__'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
    except SettingsError:  # a list, mapping or group of settings that is not JSON
        variables = [
            name
            for name in _json_variables(kind, "TRUNKLINE_")
            if not _is_json(_environ_upper().get(name))
        ] or ["a list, mapping or group of settings (TRUNKLINE_…)"]
        problems = "; ".join(
            f'{name}: must be JSON (a list: ["a", "b"]; a mapping or a group: {{"key": "value"}})'
            for name in variables
        )
    raise ConfigurationError(f"invalid settings: {problems}") from None


def _json_variables(model: type[BaseModel], prefix: str) -> Iterator[str]:
    """The variables whose value pydantic-settings parses as JSON: each group of settings
    (``TRUNKLINE_GATEWAY``) and each list or mapping (``TRUNKLINE_GATEWAY__CORS_ORIGINS``)."""
    for name, field in model.model_fields.items():
        variable, kind = f"{prefix}{name.upper()}", field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield variable
            yield from _json_variables(kind, f"{variable}__")
        elif get_origin(kind) in (list, dict):
            yield variable


def _environ_upper() -> dict[str, str]:
    return {name.upper(): value for name, value in os.environ.items()}


def _is_json(value: str | None) -> bool:
    """True for an unset variable too: only a set one can be wrong."""
    if value is None:
        return True
    try:
        json.loads(value)
    except ValueError:
        return False
    return True
