"""Transactions that may change the configuration take its lock first (``changing``: every
API request that may change something, every CLI unit of work, ``tenants apply``), so two of
them never wait on each other in a cycle (PostgreSQL). Before, most took it at their commit,
after their own row locks: a change written before ``tenants apply`` (which holds the lock
from its start) needed a row the apply had locked, or ``remove_member`` (which took it first)
beside a key's revocation, deadlocked, and PostgreSQL aborted one of them.

Each test holds the API's change open (written, not committed) in a ``changing``
transaction, as the API's session provider makes it, runs the other side in a thread, lets
the change commit once the other waits on a lock, and checks both ended.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from integration.controlplane.test_manifests_concurrency import (
    TIERS_WITHOUT_QUOTA,
    _apply_beside,
    _ids,
    _manifests,
    _tenant,
    pg_runtime,
)
from support.held_transaction import beside_a_held_transaction
from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.runtime import Runtime
from trunkline.auth.principal import Principal
from trunkline.errors import NotFound
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.keys.service import create_key, revoke_key, rotate_key
from trunkline.models import ApiKey, Project, Role
from trunkline.pools.catalog_models import remove_alias
from trunkline.pools.entitlements import grant_entitlement, revoke_entitlement
from trunkline.tenancy.changes import changing
from trunkline.tenancy.manifests import ApplyReport, apply_manifests
from trunkline.tenancy.schemas import MemberUpdate, TenantCreate, TierUpdate
from trunkline.tenancy.service import (
    create_tenant,
    delete_project,
    remove_member,
    update_member,
    update_tier,
)
from unit.controlplane.cp_support import build_world

__all__ = ["pg_runtime"]

SECRET = b"x" * 32
SILVER = (
    "description: Middle priority; under overload queued briefly, then rejected with Retry-After."
)


@pytest.fixture(params=["tiers with quotas", "tiers without"])
def tiers(request: pytest.FixtureRequest) -> str | None:
    """With quotas (the shipped tiers), an apply held the lock from its first tier; without,
    from its tenants."""
    return None if request.param == "tiers with quotas" else TIERS_WITHOUT_QUOTA


def _both_ended(applied: Future[ApplyReport], changed: Future[object]) -> ApplyReport:
    assert changed.exception() is None, repr(changed.exception())
    assert applied.exception() is None, repr(applied.exception())
    return applied.result()


def _project(runtime: Runtime, name: str) -> uuid.UUID:
    with runtime.session_factory() as session:
        return session.scalars(select(Project.id).where(Project.name == name)).one()


def test_an_entitlement_granted_beside_an_apply_granting_it(
    pg_runtime: Runtime, tmp_path: Path, tiers: str | None
) -> None:
    t1 = _tenant("t1", {"a@t.example": "tenant_admin"})
    apply_manifests(pg_runtime.session_factory, _manifests(tmp_path / "one", t1, tiers))
    tenant_id, _ = _ids(pg_runtime, "t1", "a@t.example")
    path = _manifests(tmp_path / "two", t1 + "models: [llama-3.1-8b]\n", tiers)
    applied, granted = _apply_beside(
        pg_runtime, path, lambda s: grant_entitlement(s, tenant_id, "llama-3.1-8b"), changing
    )
    assert _both_ended(applied, granted).lines() == ["no changes"]


def test_an_entitlement_revoked_beside_an_apply_revoking_it(
    pg_runtime: Runtime, tmp_path: Path, tiers: str | None
) -> None:
    t1 = _tenant("t1", {"a@t.example": "tenant_admin"})
    both = _manifests(tmp_path / "one", t1 + "models: [llama-3.1-8b, bge-small]\n", tiers)
    apply_manifests(pg_runtime.session_factory, both)
    tenant_id, _ = _ids(pg_runtime, "t1", "a@t.example")
    path = _manifests(tmp_path / "two", t1 + "models: [bge-small]\n", tiers)
    applied, revoked = _apply_beside(
        pg_runtime, path, lambda s: revoke_entitlement(s, tenant_id, "llama-3.1-8b"), changing
    )
    assert _both_ended(applied, revoked).lines() == ["no changes"]


def test_a_project_deleted_beside_an_apply_describing_it(
    pg_runtime: Runtime, tmp_path: Path, tiers: str | None
) -> None:
    t1 = _tenant("t1", {"a@t.example": "tenant_admin"})
    old = t1 + "projects:\n  - {name: p1, description: old}\n"
    apply_manifests(pg_runtime.session_factory, _manifests(tmp_path / "one", old, tiers))
    tenant_id, _ = _ids(pg_runtime, "t1", "a@t.example")
    project_id = _project(pg_runtime, "p1")
    new = t1 + "projects:\n  - {name: p1, description: new}\n"
    path = _manifests(tmp_path / "two", new, tiers)
    applied, deleted = _apply_beside(
        pg_runtime, path, lambda s: delete_project(s, tenant_id, project_id), changing
    )
    assert any("+project p1" in line for line in _both_ended(applied, deleted).lines())


def test_a_tenant_created_beside_an_apply_creating_it(
    pg_runtime: Runtime, tmp_path: Path, tiers: str | None
) -> None:
    t1 = _tenant("t1", {"a@t.example": "tenant_admin"})
    apply_manifests(pg_runtime.session_factory, _manifests(tmp_path / "one", t1, tiers))
    path = _manifests(tmp_path / "two", _tenant("t9", {"a@t.example": "tenant_admin"}), tiers)
    applied, created = _apply_beside(
        pg_runtime,
        path,
        lambda s: create_tenant(s, TenantCreate(slug="t9", name="From the API", tier="gold")),
        changing,
    )
    lines = _both_ended(applied, created).lines()
    assert any(line.startswith("Tenant t9 updated: name 'From the API'") for line in lines)


def test_an_alias_removed_beside_an_apply_granting_it(
    pg_runtime: Runtime, tmp_path: Path, tiers: str | None
) -> None:
    """The apply puts the alias back (it is in the catalog manifest) and grants it."""
    t1 = _tenant("t1", {"a@t.example": "tenant_admin"})
    apply_manifests(pg_runtime.session_factory, _manifests(tmp_path / "one", t1, tiers))
    path = _manifests(tmp_path / "two", t1 + "models: [bge-small]\n", tiers)
    applied, removed = _apply_beside(
        pg_runtime, path, lambda s: remove_alias(s, "bge-small"), changing
    )
    _both_ended(applied, removed)


def test_a_tier_updated_beside_an_apply_changing_it(pg_runtime: Runtime, tmp_path: Path) -> None:
    t1 = _tenant("t1", {"a@t.example": "tenant_admin"})
    one = _manifests(tmp_path / "one", t1)
    apply_manifests(pg_runtime.session_factory, one)
    tiers = (one / "tiers.yaml").read_text()
    assert SILVER in tiers
    path = _manifests(tmp_path / "two", t1, tiers.replace(SILVER, "description: manifest", 1))

    def from_the_api(session: Session) -> object:
        tier = update_tier(session, "silver", TierUpdate(description="from the API"))
        session.flush()  # written, as the commit would write it
        return tier

    applied, updated = _apply_beside(pg_runtime, path, from_the_api, changing)
    assert any("description" in line for line in _both_ended(applied, updated).lines())


def _a_developer(runtime: Runtime, tmp_path: Path) -> tuple[uuid.UUID, uuid.UUID, Principal]:
    """Tenant t1 with project p1 and developer d: the tenant's id, d's, and d as a caller."""
    members = {"a@t.example": "tenant_admin", "d@t.example": "developer"}
    t1 = _tenant("t1", members, "projects:\n  - {name: p1}\n")
    apply_manifests(runtime.session_factory, _manifests(tmp_path / "one", t1))
    tenant_id, d_id = _ids(runtime, "t1", "d@t.example")
    return tenant_id, d_id, Principal(d_id, "d@t.example", memberships={tenant_id: Role.DEVELOPER})


@pytest.mark.parametrize("operation", ["revoke", "rotate"])
def test_a_members_key_revoked_or_rotated_beside_the_members_removal(
    pg_runtime: Runtime, tmp_path: Path, operation: str
) -> None:
    tenant_id, d_id, developer = _a_developer(pg_runtime, tmp_path)
    with changing(pg_runtime.session_factory) as session:
        made = ApiKeyCreate(project_id=_project(pg_runtime, "p1"), name="k")
        key_id = create_key(session, developer, SECRET, tenant_id, made).key.key_id
    operations: dict[str, Callable[[Session], object]] = {
        "revoke": lambda s: revoke_key(s, developer, tenant_id, key_id),
        "rotate": lambda s: rotate_key(s, developer, SECRET, tenant_id, key_id),
    }

    def remove() -> None:
        with changing(pg_runtime.session_factory) as session:
            remove_member(session, tenant_id, d_id)

    removed, keyed = beside_a_held_transaction(
        pg_runtime.session_factory, operations[operation], remove, changing
    )
    assert keyed.exception() is None, repr(keyed.exception())
    assert removed.exception() is None, repr(removed.exception())


def test_a_key_a_member_asks_for_while_being_removed_is_refused(
    pg_runtime: Runtime, tmp_path: Path
) -> None:
    """The caller's memberships were read as its request began; its hold on the configuration
    waits for the removal, which revokes the member's keys, so the key it would then issue must
    be refused, or it stays live."""
    tenant_id, d_id, developer = _a_developer(pg_runtime, tmp_path)

    def issue() -> str:
        with changing(pg_runtime.session_factory) as session:
            made = ApiKeyCreate(project_id=_project(pg_runtime, "p1"), name="late")
            return create_key(session, developer, SECRET, tenant_id, made).key.key_id

    issued, removed = beside_a_held_transaction(
        pg_runtime.session_factory,
        lambda session: remove_member(session, tenant_id, d_id),
        issue,
        changing,
    )
    assert removed.exception() is None
    assert isinstance(issued.exception(), NotFound)
    with pg_runtime.session_factory() as session:
        live = select(ApiKey.key_id).where(ApiKey.created_by == d_id, ApiKey.revoked_at.is_(None))
        assert session.scalars(live).all() == []


@pytest.mark.parametrize("change", ["removed", "demoted"])
def test_a_key_a_tenant_admin_rotates_while_being_removed_or_demoted_is_refused(
    pg_runtime: Runtime, tmp_path: Path, change: str
) -> None:
    """A tenant admin rotating a developer's key as another admin removes them, or makes them a
    developer: the rotation waited for the change, then issued the new key (the developer's,
    so a removal left it live) and handed its secret to someone no longer in the tenant, or no
    longer allowed to see another's keys."""
    members = {"a@t.example": "tenant_admin", "b@t.example": "tenant_admin"}
    t1 = _tenant("t1", members | {"d@t.example": "developer"}, "projects:\n  - {name: p1}\n")
    apply_manifests(pg_runtime.session_factory, _manifests(tmp_path / "one", t1))
    tenant_id, a_id = _ids(pg_runtime, "t1", "a@t.example")
    _, d_id = _ids(pg_runtime, "t1", "d@t.example")
    admin = Principal(a_id, "a@t.example", memberships={tenant_id: Role.TENANT_ADMIN})
    developer = Principal(d_id, "d@t.example", memberships={tenant_id: Role.DEVELOPER})
    with changing(pg_runtime.session_factory) as session:
        made = ApiKeyCreate(project_id=_project(pg_runtime, "p1"), name="d's")
        key_id = create_key(session, developer, SECRET, tenant_id, made).key.key_id

    def rotate() -> str:
        with changing(pg_runtime.session_factory) as session:
            return rotate_key(session, admin, SECRET, tenant_id, key_id).key.key_id

    def take_away(session: Session) -> None:
        if change == "removed":
            remove_member(session, tenant_id, a_id)
        else:
            update_member(session, tenant_id, a_id, MemberUpdate(role=Role.DEVELOPER))

    rotated, changed = beside_a_held_transaction(
        pg_runtime.session_factory, take_away, rotate, changing
    )
    assert changed.exception() is None
    assert isinstance(rotated.exception(), NotFound)
    with pg_runtime.session_factory() as session:
        live = select(ApiKey.key_id).where(ApiKey.tenant_id == tenant_id)
        assert session.scalars(live.where(ApiKey.revoked_at.is_(None))).all() == [key_id]


@pytest.mark.parametrize("change", ["removed", "demoted"])
def test_a_tenant_admin_removed_or_demoted_while_their_write_waits_is_refused(
    pg_runtime: Runtime, change: str
) -> None:
    """The route's role was checked on the memberships read as the request began; the write then
    waited on the configuration's lock for the removal or demotion and ran all the same: a
    tenant admin being removed added a tenant_admin of their own, and kept the tenant."""
    with TestClient[Any](create_controlplane_app(pg_runtime)) as client:
        world = build_world(pg_runtime, client)
        acme = world.tenant("acme")
        admin_id, dev_id = (
            world.user_id("acme", f"{who}@acme.example") for who in ("admin", "dev")
        )
        world.admin.patch(f"/api/v1/tenants/{acme}/members/{dev_id}", {"role": "tenant_admin"})

        def take_away(session: Session) -> None:
            if change == "removed":
                remove_member(session, uuid.UUID(acme), uuid.UUID(admin_id))
            else:
                update_member(
                    session, uuid.UUID(acme), uuid.UUID(admin_id), MemberUpdate(Role.DEVELOPER)
                )

        def add_an_accomplice() -> Any:
            body = {"email": "accomplice@elsewhere.example", "role": "tenant_admin"}
            path = f"/api/v1/tenants/{acme}/members"
            return world.client.post(path, json=body, headers=world.api("acme-admin").headers)

        added, changed = beside_a_held_transaction(
            pg_runtime.session_factory, take_away, add_an_accomplice, changing
        )
        assert changed.exception() is None
        assert added.result().status_code == (404 if change == "removed" else 403)
        emails = {m["email"] for m in world.admin.get(f"/api/v1/tenants/{acme}/members")}
        assert "accomplice@elsewhere.example" not in emails


def test_a_tenant_admin_demoted_while_their_quota_write_waits_is_refused(
    pg_runtime: Runtime,
) -> None:
    """The quota PUTs take a transaction of their own (``config_writes``), not the request's:
    a tenant admin made a developer meanwhile still lifted their own key's limits."""
    with TestClient[Any](create_controlplane_app(pg_runtime)) as client:
        world = build_world(pg_runtime, client)
        acme = world.tenant("acme")
        admin_id, dev_id = (
            world.user_id("acme", f"{who}@acme.example") for who in ("admin", "dev")
        )
        world.admin.patch(f"/api/v1/tenants/{acme}/members/{dev_id}", {"role": "tenant_admin"})
        key_id = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
        path = f"/api/v1/tenants/{acme}/keys/{key_id}/quota"

        def lift() -> Any:
            body = {"tokens_per_minute": 10_000_000}
            return world.client.put(path, json=body, headers=world.api("acme-admin").headers)

        def demote(session: Session) -> None:
            update_member(
                session, uuid.UUID(acme), uuid.UUID(admin_id), MemberUpdate(Role.DEVELOPER)
            )

        lifted, demoted = beside_a_held_transaction(
            pg_runtime.session_factory, demote, lift, changing
        )
        assert demoted.exception() is None
        assert lifted.result().status_code == 403, lifted.result().text
        assert world.admin.get(path)["overrides"].get("tokens_per_minute") is None
