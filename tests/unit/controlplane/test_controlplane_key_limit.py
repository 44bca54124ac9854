"""A tenant's live API keys are bounded (``TRUNKLINE_CONTROLPLANE__MAX_LIVE_KEYS_PER_TENANT``):
every live key is in every gateway's configuration, and before, one member's script creating
keys in a loop (1,000 a batch) grew it, and each publish, for every tenant without end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cp_support import World, build_world, make_settings, problem_of, snapshot
from litestar.testing import TestClient

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.runtime import build_runtime
from trunkline.kit.migrate import upgrade
from trunkline.settings import ControlPlaneSettings

LIMIT = 3


@pytest.fixture
def bounded(tmp_path: Path) -> Iterator[World]:
    url = f"sqlite:///{tmp_path / 'controlplane.db'}"
    upgrade(url)
    settings = make_settings(url, tmp_path / "state").model_copy(
        update={"controlplane": ControlPlaneSettings(max_live_keys_per_tenant=LIMIT)}
    )
    runtime = build_runtime(settings)
    with TestClient(create_controlplane_app(runtime)) as client:
        yield build_world(runtime, client)
    runtime.close()


def _keys(world: World, slug: str = "acme") -> str:
    return f"/api/v1/tenants/{world.tenant(slug)}/keys"


def _body(world: World, name: str = "k") -> dict[str, Any]:
    return {"project_id": world.project("acme", "demo"), "name": name}


def test_a_tenant_at_its_limit_is_refused_more_keys_until_it_revokes_one(bounded: World) -> None:
    created = [bounded.create_key("acme-dev", "acme", "demo") for _ in range(LIMIT)]
    refused = problem_of(
        bounded.client.post(
            _keys(bounded), json=_body(bounded), headers=bounded.api("acme-admin").headers
        ),
        409,
    )
    assert f"{LIMIT:,} live keys of the {LIMIT:,}" in refused["detail"]
    assert len(snapshot(bounded.runtime).keys) == LIMIT

    # rotating one at the limit replaces it: still allowed
    old = created[0]["key"]["key_id"]
    bounded.api("acme-dev").post(f"{_keys(bounded)}/{old}/rotate")
    revoked = created[1]["key"]["key_id"]
    bounded.api("acme-dev").post(f"{_keys(bounded)}/{revoked}/revoke", expect=200)
    bounded.create_key("acme-dev", "acme", "demo")


def test_a_batch_past_the_limit_creates_none_of_its_keys(bounded: World) -> None:
    bounded.create_key("acme-dev", "acme", "demo")
    batch = {"keys": [_body(bounded, f"k{i}") for i in range(LIMIT)]}
    problem_of(
        bounded.client.post(
            f"{_keys(bounded)}/batch", json=batch, headers=bounded.api("acme-dev").headers
        ),
        409,
    )
    assert len(bounded.admin.get(_keys(bounded))) == 1
    batch["keys"] = batch["keys"][: LIMIT - 1]
    assert len(bounded.api("acme-dev").post(f"{_keys(bounded)}/batch", batch)) == LIMIT - 1


def test_the_limit_is_per_tenant_and_says_nothing_to_another_tenant(bounded: World) -> None:
    for _ in range(LIMIT):
        bounded.create_key("acme-dev", "acme", "demo")
    outsider = problem_of(
        bounded.client.post(
            _keys(bounded), json=_body(bounded), headers=bounded.api("globex-admin").headers
        ),
        404,
    )
    assert "live keys" not in outsider["detail"]
    globex = bounded.admin.get(f"/api/v1/tenants/{bounded.tenant('globex')}/projects")[0]
    body = {"project_id": globex["id"], "name": "k"}
    bounded.api("globex-admin").post(_keys(bounded, "globex"), body)


def test_a_rotation_with_a_grace_needs_room_for_both_keys(bounded: World) -> None:
    keys = [bounded.create_key("acme-dev", "acme", "demo")["key"]["key_id"] for _ in range(LIMIT)]
    refused = bounded.client.post(
        f"{_keys(bounded)}/{keys[0]}/rotate?grace_s=60", headers=bounded.api("acme-dev").headers
    )
    problem_of(refused, 409)
    assert bounded.api("acme-dev").get(f"{_keys(bounded)}/{keys[0]}")["expires_at"] is None
