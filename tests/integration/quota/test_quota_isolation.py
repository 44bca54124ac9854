"""Tenant A's members can neither read nor change tenant B's quotas, on SQLite and PostgreSQL.

Aimed at a globex quota, an acme member gets exactly the answer a made-up id gets, and nothing
of globex changes; the pattern of ``test_controlplane_isolation``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.quota.memory import InMemoryQuotaStore
from unit.controlplane.cp_support import World, build_world, make_runtime, random_id

T = "/api/v1/tenants"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cp.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    runtime = make_runtime(url, tmp_path / "state")
    app = create_controlplane_app(runtime, quota_store=InMemoryQuotaStore())
    with TestClient[Any](app) as client:
        yield build_world(runtime, client)
    runtime.close()


def requests(tenant: str, key: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("GET", f"{T}/{tenant}/quota", None),
        ("PUT", f"{T}/{tenant}/quota", {"tenant": {"requests_per_minute": 1}}),
        ("GET", f"{T}/{tenant}/keys/{key}/quota", None),
        ("PUT", f"{T}/{tenant}/keys/{key}/quota", {"requests_per_minute": 1}),
    ]


def answer(world: World, who: str, method: str, path: str, body: Any) -> tuple[int, str]:
    response = world.client.request(method, path, json=body, headers=world.api(who).headers)
    return response.status_code, response.json().get("code", "")


def globex_state(world: World, key: str) -> Any:
    globex = world.tenant("globex")
    return (
        world.admin.get(f"{T}/{globex}/quota")["overrides"],
        world.admin.get(f"{T}/{globex}/keys/{key}/quota")["overrides"],
    )


@pytest.mark.parametrize("who", ["acme-admin", "acme-dev"])
def test_acme_members_cannot_read_or_change_globex_quotas(world: World, who: str) -> None:
    key = world.create_key("globex-dev", "globex", "support-bot")["key"]["key_id"]
    before = globex_state(world, key)
    real = requests(world.tenant("globex"), key)
    fake = requests(random_id(), "NoSuchKey123")
    failures = []
    for (method, path, body), (_m, fake_path, _b) in zip(real, fake, strict=True):
        got = answer(world, who, method, path, body)
        control = answer(world, who, method, fake_path, body)
        if got[0] != 404 or got != control:
            failures.append(f"{method} {path}: {got}, made-up ids {control}")

    assert not failures, "\n".join(failures)
    assert globex_state(world, key) == before, "globex changed"


def test_a_key_of_another_tenant_reads_as_missing_under_ones_own(world: World) -> None:
    key = world.create_key("globex-dev", "globex", "support-bot")["key"]["key_id"]
    acme = world.tenant("acme")
    for who in ("acme-admin", "acme-dev"):
        path = f"{T}/{acme}/keys/{key}/quota"
        assert answer(world, who, "GET", path, None) == (404, "not_found")
    body = {"requests_per_minute": 1}
    assert answer(world, "acme-admin", "PUT", f"{T}/{acme}/keys/{key}/quota", body)[0] == 404
    assert globex_state(world, key)[1] == {}
