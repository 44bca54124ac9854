"""Rotating the server secret at the control plane: access tokens issued under a secret the
operator lists in ``TRUNKLINE_SECURITY__PREVIOUS_KEY_HASH_SECRETS`` still sign in, and the list
is read from the environment and checked in production like the secret itself. Before,
changing ``TRUNKLINE_SECURITY__KEY_HASH_SECRET`` signed every caller out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from pydantic import SecretStr

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.runtime import build_runtime
from trunkline.auth.service import ensure_user, issue_access_token
from trunkline.errors import ConfigurationError
from trunkline.kit.db import transaction
from trunkline.kit.migrate import upgrade
from trunkline.settings import DatabaseSettings, SecuritySettings, Settings

OLD = b"the-secret-this-platform-used-until-today-0123"
NEW = "the-secret-it-uses-from-today-on-9876543210-xyz"


def _settings(tmp_path: Path, previous: list[str]) -> Settings:
    return Settings(
        state_dir=tmp_path,
        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'db.sqlite'}"),
        security=SecuritySettings(
            key_hash_secret=SecretStr(NEW),
            previous_key_hash_secrets=[SecretStr(old) for old in previous],
        ),
    )


def test_an_access_token_issued_under_the_previous_secret_still_signs_in(tmp_path: Path) -> None:
    upgrade(f"sqlite:///{tmp_path / 'db.sqlite'}")
    runtime = build_runtime(_settings(tmp_path, [OLD.decode()]))
    with transaction(runtime.session_factory) as session:
        user = ensure_user(session, "ops@platform.example")
        old_token = issue_access_token(session, OLD, user).access_token
        new_token = issue_access_token(session, runtime.server_secret, user).access_token
    try:
        with TestClient(create_controlplane_app(runtime)) as client:
            for token in (old_token, new_token):
                me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
                assert me.status_code == 200, me.text
                assert me.json()["email"] == "ops@platform.example"
    finally:
        runtime.close()


def test_previous_secrets_come_from_the_environment_as_a_json_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRUNKLINE_SECURITY__PREVIOUS_KEY_HASH_SECRETS", f'["{OLD.decode()}"]')
    settings = Settings()
    assert [old.get_secret_value() for old in settings.security.previous_key_hash_secrets] == [
        OLD.decode()
    ]
    assert OLD.decode() not in repr(settings)


def test_production_refuses_a_weak_previous_secret() -> None:
    settings: Any = Settings(
        environment="production",
        database=DatabaseSettings(url="postgresql+psycopg://db/trunkline"),
        redis={"url": "redis://redis:6379/0"},  # type: ignore[arg-type]
        security=SecuritySettings(
            key_hash_secret=SecretStr(NEW),
            previous_key_hash_secrets=[SecretStr("changeme")],
            dev_login=False,
        ),
    )
    with pytest.raises(ConfigurationError, match="PREVIOUS_KEY_HASH_SECRETS"):
        settings.check_production()
