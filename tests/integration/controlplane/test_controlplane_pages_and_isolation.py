"""Paged listings on SQLite and PostgreSQL: each database's cursor comparison agrees with its own
ORDER BY, and no cursor widens what a caller sees (the platform admin's cursors name rows the
other callers may not list: they only position the callers' own listings)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import update

from trunkline.kit.db import transaction
from trunkline.models import ApiKey
from unit.controlplane.cp_support import World

T = "/api/v1/tenants"


def flat(pages: list[list[Any]]) -> list[Any]:
    return [row for page in pages for row in page]


def test_keys_created_at_one_instant_are_paged_by_key_id(world: World) -> None:
    acme, project = world.tenant("acme"), world.project("acme", "demo")
    batch = {"keys": [{"project_id": project, "name": f"k{i}"} for i in range(7)]}
    world.admin.post(f"{T}/{acme}/keys/batch", batch)
    with transaction(world.runtime.session_factory) as session:
        session.execute(update(ApiKey).values(created_at=datetime(2026, 12, 1, tzinfo=UTC)))
    path = f"{T}/{acme}/keys"
    whole = world.admin.get(path)

    for limit in (1, 2, 3):
        assert flat(world.admin.pages(path, limit=limit)) == whole
    assert len({key["key_id"] for key in whole}) == 7


def test_names_of_any_case_and_punctuation_are_paged_as_the_database_orders_them(
    world: World,
) -> None:
    acme = world.tenant("acme")
    path = f"{T}/{acme}/projects"
    # Names differing only in case are one name (a 409): these differ in more than case.
    for name in ("Alpha", "alpha1", "Beta-2", "beta", "beta.1", "Zeta_x", "zeta", "a-b", "10", "9"):
        world.api("acme-admin").post(path, {"name": name})
    whole = world.admin.get(path)

    for limit in (1, 4):
        assert flat(world.admin.pages(path, limit=limit)) == whole
    assert len(whole) == 11  # with demo


@pytest.fixture
def keyed(world: World) -> World:
    """Keys of acme's admin and developer, and one of globex."""
    for creator in ("acme-admin", "acme-dev", "acme-admin"):
        world.create_key(creator, "acme", "demo")
    world.create_key("globex-admin", "globex", "support-bot")
    return world


@pytest.mark.parametrize(
    ("who", "path"),
    [
        ("acme-dev", T + "/{acme}/keys"),
        ("acme-admin", T + "/{acme}/keys"),
        ("acme-dev", T),
        ("globex-admin", T),
        ("acme-dev", T + "?entitled_to=llama-3.1-8b"),
        ("globex-admin", T + "?entitled_to=llama-3.1-8b"),
        ("acme-dev", "/api/v1/models"),
        ("globex-admin", "/api/v1/models"),
    ],
)
def test_the_admins_cursors_position_a_members_own_listing_only(
    keyed: World, who: str, path: str
) -> None:
    path = path.format(acme=keyed.tenant("acme"))
    own = keyed.api(who).get(path)

    for after in keyed.admin.cursors(path):
        seen = flat(keyed.api(who).pages(path, limit=1, after=after))
        assert seen == own[len(own) - len(seen) :], after  # a tail of their own listing


def test_another_tenants_cursors_open_nothing_of_it(keyed: World) -> None:
    acme, globex = keyed.tenant("acme"), keyed.tenant("globex")
    globex_keys = keyed.api("globex-admin").get(f"{T}/{globex}/keys")

    for after in keyed.admin.cursors(f"{T}/{acme}/keys"):
        keyed.api("globex-admin").get(f"{T}/{acme}/keys", 404, params={"after": after})
        keyed.api("acme-dev").get(f"{T}/{acme}/members", 403, params={"after": after})
        seen = keyed.api("globex-admin").get(f"{T}/{globex}/keys", params={"after": after})
        assert all(key in globex_keys for key in seen)
