"""Integration fixtures: the control-plane world on every database engine, SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from support.platform import REPO, Platform
from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.runtime import Runtime
from unit.controlplane.cp_support import World, build_world, make_runtime


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh PostgreSQL database (``postgres_url``)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'controlplane.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    runtime = make_runtime(database_url, tmp_path / "state")
    yield runtime
    runtime.close()


@pytest.fixture
def world(runtime: Runtime) -> Iterator[World]:
    with TestClient[Any](create_controlplane_app(runtime)) as client:
        yield build_world(runtime, client)


@pytest.fixture
def platform(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[Platform]:
    """The production processes' world: ``tenants/`` copied into ``tmp_path``, their cwd."""
    shutil.copytree(REPO / "tenants", tmp_path / "tenants")
    world = Platform(tmp_path, postgres_url, redis_url)
    try:
        yield world
    finally:
        world.close()
