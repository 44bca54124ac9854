"""Usage made with the keys of a project deleted since: its developer still sees it, and usage by
key still names its keys. Deleting a project deletes its keys, and the usage API found the
keys a developer created, and the keys' names, among the keys left: a developer's usage of the
month (and of every month before) dropped to what their remaining keys had made, and a tenant
admin's usage by key showed bare key ids."""

from __future__ import annotations

import pytest

from integration.metering.test_usage_and_export_api import account
from unit.controlplane.cp_support import World
from unit.metering.usage_support import at, event, ingest

T = "/api/v1/tenants"


@pytest.fixture
def scratch(world: World) -> dict[str, str]:
    """acme's developer spends with a key of a project "scratch", and so does its admin with
    another; then the project is deleted; the developer's key of "demo" stays. Returns the
    key ids."""
    acme = world.tenant("acme")
    admin = world.api("acme-admin")
    project = admin.post(f"{T}/{acme}/projects", {"name": "scratch"})["id"]
    gone = world.create_key("acme-dev", "acme", "scratch", name="experiments")["key"]["key_id"]
    kept = world.create_key("acme-dev", "acme", "demo", name="service")["key"]["key_id"]
    admins = world.create_key("acme-admin", "acme", "scratch", name="load")["key"]["key_id"]
    ingest(
        world.runtime.session_factory,
        [
            event(account(world, "acme", "scratch", gone, "gold"), when=at(3), prompt=700),
            event(account(world, "acme", "demo", kept, "gold"), when=at(4), prompt=300),
            event(account(world, "acme", "scratch", admins, "gold"), when=at(4), prompt=5),
        ],
    )
    admin.delete(f"{T}/{acme}/projects/{project}")
    return {"gone": gone, "kept": kept, "admins": admins}


def test_a_developer_still_sees_the_usage_of_their_keys_of_a_deleted_project(
    world: World, scratch: dict[str, str]
) -> None:
    acme = world.tenant("acme")
    mine = world.api("acme-dev").get(
        f"{T}/{acme}/usage", params={"period": "2026-11", "group_by": "key"}
    )
    rows = {r["group"]: r for r in mine["rows"]}
    assert set(rows) == {scratch["gone"], scratch["kept"]}  # not the admin's key
    assert rows[scratch["gone"]]["label"] == "experiments"
    assert mine["total"]["prompt_tokens"] == 1000
    by_project = world.api("acme-dev").get(
        f"{T}/{acme}/usage", params={"period": "2026-11", "group_by": "project"}
    )
    assert sorted(r["label"] for r in by_project["rows"]) == ["demo", "scratch"]


def test_usage_by_key_names_the_keys_of_a_deleted_project(
    world: World, scratch: dict[str, str]
) -> None:
    acme = world.tenant("acme")
    by_key = world.api("acme-admin").get(
        f"{T}/{acme}/usage", params={"period": "2026-11", "group_by": "key"}
    )
    labels = {r["group"]: r["label"] for r in by_key["rows"]}
    assert labels == {
        scratch["gone"]: "experiments",
        scratch["kept"]: "service",
        scratch["admins"]: "load",
    }
