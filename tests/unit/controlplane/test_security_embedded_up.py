"""``trunkline up`` is the development platform: it applies ``tenants/`` (example tenants),
points the simulated pools at loopback engines and keeps a demo key's plaintext on disk. Run
with production's settings (or a Redis), it must refuse before it touches any database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cp_support import TENANTS_DIR, make_settings

from trunkline.apps.embedded import run_embedded
from trunkline.errors import ConfigurationError
from trunkline.settings import RedisSettings

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def test_up_refuses_production_settings(tmp_path: Path) -> None:
    settings = make_settings("postgresql+psycopg://trunkline@127.0.0.1:1/trunkline", tmp_path)
    settings.environment = "production"
    settings.security.dev_login = False
    settings.redis = RedisSettings(url=UNREACHABLE_REDIS)
    settings.check_production()  # what production asks for is all there

    with pytest.raises(ConfigurationError, match="TRUNKLINE_ENVIRONMENT=production"):
        asyncio.run(run_embedded(settings, TENANTS_DIR))
    assert not (tmp_path / "demo-api-key").exists()


def test_up_refuses_a_redis_before_it_changes_the_database(tmp_path: Path) -> None:
    database = tmp_path / "trunkline.db"
    settings = make_settings(f"sqlite:///{database}", tmp_path)
    settings.redis = RedisSettings(url=UNREACHABLE_REDIS)

    with pytest.raises(ConfigurationError, match="TRUNKLINE_REDIS__URL"):
        asyncio.run(run_embedded(settings, TENANTS_DIR))
    assert not database.exists()
