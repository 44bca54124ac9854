"""Control-plane unit fixtures: a migrated SQLite file per test and an app over it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cp_support import EXTRA, TENANTS_DIR, World, build_world, make_runtime
from litestar.testing import TestClient

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.runtime import Runtime


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'controlplane.db'}"


@pytest.fixture
def runtime(sqlite_url: str, tmp_path: Path) -> Iterator[Runtime]:
    runtime = make_runtime(sqlite_url, tmp_path / "state")
    yield runtime
    runtime.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient[Any]]:
    with TestClient(create_controlplane_app(runtime)) as client:
        yield client


@pytest.fixture
def world(runtime: Runtime, client: TestClient[Any]) -> World:
    return build_world(runtime, client)


@pytest.fixture
def manifests_dir(tmp_path: Path) -> Path:
    """The bundled manifests and ``EXTRA`` (as extra.yaml) in a directory of their own."""
    for file in TENANTS_DIR.glob("*.yaml"):
        shutil.copy(file, tmp_path / file.name)
    (tmp_path / "extra.yaml").write_text(EXTRA)
    return tmp_path
