"""Production settings refuse development shortcuts; development works with no settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from trunkline.errors import ConfigurationError
from trunkline.settings import Settings, load_settings
from trunkline.worker.jobs import load_job_settings

GOOD = {
    "environment": "production",
    "database": {"url": "postgresql+psycopg://db/trunkline"},
    "redis": {"url": "redis://redis:6379/0"},
    "security": {"key_hash_secret": "hV3q-9xZkP0wLr7mTn2bYc8fJd5gAs1e", "dev_login": False},
}


def test_development_defaults_need_nothing() -> None:
    settings = Settings()
    settings.check_production()
    assert settings.database.url.startswith("sqlite")


def test_a_complete_production_configuration_is_accepted() -> None:
    Settings(**GOOD).check_production()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"security": {"key_hash_secret": None, "dev_login": False}}, "KEY_HASH_SECRET"),
        ({"security": {"key_hash_secret": "short", "dev_login": False}}, "KEY_HASH_SECRET"),
        ({"security": {"key_hash_secret": " " * 40, "dev_login": False}}, "KEY_HASH_SECRET"),
        ({"security": {"key_hash_secret": "s" * 40, "dev_login": False}}, "KEY_HASH_SECRET"),
        ({"security": {"key_hash_secret": "changeme" * 5, "dev_login": False}}, "random"),
        (
            {
                "security": {
                    "key_hash_secret": f"{' ' * 9}hV3q-9xZkP0w{' ' * 20}",
                    "dev_login": False,
                }
            },
            "32",
        ),
        ({"security": {**GOOD["security"], "dev_login": True}}, "development login"),
        ({"database": {"url": "sqlite:///x.db"}}, "PostgreSQL"),
        ({"redis": {"url": None}}, "REDIS__URL"),
    ],
)
def test_production_refuses_each_shortcut(change: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        Settings(**{**GOOD, **change}).check_production()  # type: ignore[arg-type]


SCRAPE_TOKEN = "m3Tr1cs-scr4pe-T0ken-0f-en0ugh-length"


@pytest.mark.parametrize("server", ["gateway", "controlplane"])
@pytest.mark.parametrize("token", [None, "short", "x" * 40])
def test_a_production_server_refuses_to_serve_its_metrics_without_a_scrape_token(
    server: str, token: str | None
) -> None:
    """Production /metrics and /health's details were open to anyone reaching the port: every
    pool, endpoint and tier's traffic. The gateway and the control plane now refuse to start
    without a real token; the other processes (worker, migrate) serve no such page."""
    settings = Settings(**{**GOOD, server: {"metrics_token": token}})  # type: ignore[arg-type]
    settings.check_production()
    with pytest.raises(ConfigurationError, match=f"TRUNKLINE_{server.upper()}__METRICS_TOKEN"):
        settings.check_production(server)  # type: ignore[arg-type]


@pytest.mark.parametrize("server", ["gateway", "controlplane"])
def test_a_production_server_with_a_scrape_token_starts(server: str) -> None:
    settings = Settings(**{**GOOD, server: {"metrics_token": SCRAPE_TOKEN}})  # type: ignore[arg-type]
    settings.check_production(server)  # type: ignore[arg-type]
    assert SCRAPE_TOKEN not in repr(settings)


def test_settings_come_from_prefixed_nested_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUNKLINE_GATEWAY__PORT", "9999")
    monkeypatch.setenv("TRUNKLINE_SECURITY__KEY_HASH_SECRET", "topsecret-value")
    settings = Settings()
    assert settings.gateway.port == 9999
    assert "topsecret" not in repr(settings)


def test_a_value_that_does_not_fit_names_its_variable_and_not_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRUNKLINE_GATEWAY__QUOTA__LEASE_S", "-1")
    monkeypatch.setenv("TRUNKLINE_GATEWAY__DRAIN_TIMEOUT_S", "s3cr3t-ish")
    monkeypatch.setenv("TRUNKLINE_CONTROLPLANE__HEADER_TIMEOUT_S", "0")  # no "off"
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    message = refused.value.message
    assert "TRUNKLINE_CONTROLPLANE__HEADER_TIMEOUT_S: Input should be greater than 0" in message
    assert "TRUNKLINE_GATEWAY__QUOTA__LEASE_S: Input should be greater than 0" in message
    assert "TRUNKLINE_GATEWAY__DRAIN_TIMEOUT_S: Input should be a valid integer" in message
    assert "s3cr3t" not in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRUNKLINE_DATABASE__URL", "postgres://trunkline:s3cr3t@db/trunkline"),
        ("TRUNKLINE_DATABASE__URL", "postgresql+psycopg2://trunkline:s3cr3t@db/trunkline"),
        ("TRUNKLINE_DATABASE__URL", "SQLITE:///s3cr3t.db"),
        # '@' not encoded: the connection error named the host "s3cr3t@db"
        ("TRUNKLINE_DATABASE__URL", "postgresql+psycopg://trunkline:pa@s3cr3t@db/trunkline"),
        # ... and with a '/', ':' or '?' after it, which ended the host SQLAlchemy read: it tried
        # host "s3cr3t", or stopped on port "x@db" (a ValueError naming it)
        ("TRUNKLINE_DATABASE__URL", "postgresql+psycopg://trunkline:pa@s3cr3t/x@db/trunkline"),
        ("TRUNKLINE_DATABASE__URL", "postgresql+psycopg://trunkline:pa@s3cr3t:x@db/trunkline"),
        ("TRUNKLINE_DATABASE__URL", "postgresql+psycopg://trunkline:pa@s3cr3t?x@db/trunkline"),
        ("TRUNKLINE_REDIS__URL", "redis-host:6379"),
        ("TRUNKLINE_REDIS__URL", " "),
        ("TRUNKLINE_REDIS__URL", "http://:s3cr3t@redis:6379/0"),
        ("TRUNKLINE_REDIS__URL", "redis://:s3cr3t@[redis:6379/0"),
        ("TRUNKLINE_REDIS__URL", "redis://redis:s3cr3t/0"),
        ("TRUNKLINE_REDIS__URL", "redis://redis:65536/0"),
        ("TRUNKLINE_REDIS__URL", "redis://:pass/s3cr3t@redis:6379/0"),  # '/' not encoded
    ],
)
def test_a_url_no_process_can_use_is_refused_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """Every process (and the CLI) stopped on it with a traceback from SQLAlchemy or redis-py
    once it first connected, after the production checks had let it pass."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert f"{variable}: Value error, must be a" in refused.value.message
    assert "s3cr3t" not in refused.value.message


@pytest.mark.parametrize(
    ("database", "redis"),
    [
        ("postgresql://db/trunkline", "rediss://redis:6380/0"),
        ("postgresql+psycopg://db/trunkline", "unix:///run/redis.sock"),
        ("postgresql://trunkline:pa%40ss/w:rd@db:5432/trunkline", "redis://:p@ss@redis:6379/0"),
        ("postgresql://trunkline@myserver:pass@db/trunkline", None),  # '@' in the user: read so
        ("postgresql://db/trunkline?application_name=a@b", None),
        ("sqlite:///x.db", ""),
        ("sqlite+pysqlite:///x.db", None),
    ],
)
def test_the_urls_trunkline_runs_on_are_taken(
    monkeypatch: pytest.MonkeyPatch, database: str, redis: str | None
) -> None:
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", database)
    if redis is not None:
        monkeypatch.setenv("TRUNKLINE_REDIS__URL", redis)
    settings = load_settings()
    assert settings.database.url == database
    assert settings.redis.url == (redis or None)  # empty: unset, the in-memory stores


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRUNKLINE_GATEWAY__CORS_ORIGINS", "https://app.example"),  # not ["https://app.example"]
        ("TRUNKLINE_GATEWAY__TOKENIZERS", "llama=/models/s3cr3t"),
        ("TRUNKLINE_GATEWAY__QUOTA", "s3cr3t"),
        ("TRUNKLINE_DATABASE", "postgresql://trunkline:s3cr3t@db/trunkline"),
    ],
)
def test_a_list_or_group_that_is_not_json_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """Every process stopped with pydantic-settings' traceback naming only the group
    (``field "gateway"``), not the variable to fix."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert f"{variable}: must be JSON" in refused.value.message
    assert "s3cr3t" not in refused.value.message


@pytest.mark.parametrize("variable", ["TRUNKLINE_GATEWAY__PORT", "TRUNKLINE_CONTROLPLANE__PORT"])
def test_a_port_no_socket_can_have_is_refused_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """``trunkline up``, ``gateway`` and ``controlplane`` stopped on 65536 with OverflowError's
    traceback from their check of the port."""
    monkeypatch.setenv(variable, "65536")
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert f"{variable}: Input should be less than or equal to 65535" in refused.value.message


def test_a_job_setting_that_does_not_fit_names_its_variable_and_not_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``trunkline worker``, ``jobs`` and ``beat`` stopped with pydantic's traceback, which
    repeats the value."""
    monkeypatch.setenv("TRUNKLINE_JOBS__INGEST_BATCH", "s3cr3t")
    monkeypatch.setenv("TRUNKLINE_JOBS__METRICS_PORT", "65536")
    monkeypatch.setenv("TRUNKLINE_JOBS__ROLLUP_INTERVAL_S", "0")  # beat sent it without a pause
    with pytest.raises(ConfigurationError) as refused:
        load_job_settings()
    message = refused.value.message
    assert "TRUNKLINE_JOBS__INGEST_BATCH: Input should be a valid integer" in message
    assert "TRUNKLINE_JOBS__METRICS_PORT: Input should be less than or equal to 65535" in message
    assert "TRUNKLINE_JOBS__ROLLUP_INTERVAL_S: Input should be greater than 0" in message
    assert "s3cr3t" not in message


def test_a_log_level_is_one_of_pythons_named_in_either_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``verbose`` passed the settings and stopped every process with logging's traceback."""
    monkeypatch.setenv("TRUNKLINE_LOG_LEVEL", "debug")
    assert load_settings().log_level == "DEBUG"
    monkeypatch.setenv("TRUNKLINE_LOG_LEVEL", "verbose")
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert "TRUNKLINE_LOG_LEVEL: Value error, must be one of DEBUG, INFO, WARNING, ERROR" in (
        refused.value.message
    )


def test_the_embedded_mode_runs_its_jobs_as_the_environment_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``trunkline up`` ran the worker's jobs on fixed settings: an export directory, a
    month's close grace or the clock skew allowed, set as for the worker, changed nothing.
    Ingest and rollups stay quicker than the worker's unless set."""
    from trunkline.apps.embedded import embedded_job_settings

    assert (embedded_job_settings().ingest_interval_s, embedded_job_settings().export_dir) == (
        0.5,
        None,
    )
    monkeypatch.setenv("TRUNKLINE_JOBS__EXPORT_DIR", str(tmp_path))
    monkeypatch.setenv("TRUNKLINE_JOBS__CLOSE_GRACE_HOURS", "1")
    monkeypatch.setenv("TRUNKLINE_JOBS__ROLLUP_INTERVAL_S", "60")
    jobs = embedded_job_settings()
    assert (jobs.export_dir, jobs.close_grace_hours) == (tmp_path, 1.0)
    assert (jobs.ingest_interval_s, jobs.rollup_interval_s) == (0.5, 60.0)


@pytest.mark.parametrize("server", ["gateway", "controlplane"])
@pytest.mark.parametrize("reused", ["key_hash_secret", "previous_key_hash_secrets"])
def test_a_production_server_refuses_the_key_hash_secret_as_its_scrape_token(
    server: str, reused: str
) -> None:
    """The scrape token goes to the scraper's configuration; the key-hash secret, given as one,
    went with it: whoever read it could compute every tenant's cache salt (and the hash of
    any key). Refused at start, naming the two variables, never the value."""
    secret = str(GOOD["security"]["key_hash_secret"])  # type: ignore[index]
    security = {**GOOD["security"], "previous_key_hash_secrets": [SCRAPE_TOKEN]}  # type: ignore[dict-item]
    token = secret if reused == "key_hash_secret" else SCRAPE_TOKEN
    settings = Settings(**{**GOOD, "security": security, server: {"metrics_token": token}})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="KEY_HASH_SECRET") as refused:
        settings.check_production(server)  # type: ignore[arg-type]
    assert token not in str(refused.value)
