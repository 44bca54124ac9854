"""Concurrent changes that each check a rule and then write, on SQLite and on PostgreSQL.

The first change is held uncommitted while the second runs in another thread; the rule must
hold once both are done: a key rotated twice at once has one successor, and two tenant admins
demoted at once leave the tenant one of them. PostgreSQL (read committed) let both pass the
check before either committed; SQLite made the second wait for the first's write lock, then
write without checking again.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from trunkline.apps.runtime import Runtime
from trunkline.auth.principal import Principal
from trunkline.errors import Conflict
from trunkline.keys import service as keys
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.models import ApiKey, Membership, Project, Role, Tenant
from trunkline.pools import entitlements
from trunkline.quota.repository import TenantQuotaRepository
from trunkline.quota.schemas import QuotaLimits, ScopeLimits
from trunkline.tenancy import service as tenancy
from trunkline.tenancy.schemas import MemberAdd, MemberUpdate
from unit.controlplane.cp_support import World

HELD_S = 0.5
"""How long the first change stays uncommitted while the second runs."""


def one_after_another_at_once(
    runtime: Runtime, first: Callable[[Session], object], second: Callable[[Session], object]
) -> BaseException | None:
    """Run ``first`` and keep its transaction open while ``second`` runs in its own (in a
    thread) for :data:`HELD_S`; commit ``first``, let ``second`` finish and commit. What
    ``second`` raised, or None."""
    raised: list[BaseException] = []

    def run_second() -> None:
        try:
            with runtime.session_factory() as session, session.begin():
                second(session)
        except BaseException as exc:  # handed back to the test
            raised.append(exc)

    with runtime.session_factory() as session, session.begin():
        first(session)
        session.flush()
        racer = threading.Thread(target=run_second)
        racer.start()
        time.sleep(HELD_S)
    racer.join(timeout=60)
    assert not racer.is_alive()
    return raised[0] if raised else None


def _acme(session: Session) -> uuid.UUID:
    return session.scalars(select(Tenant.id).where(Tenant.slug == "acme")).one()


def test_a_key_rotated_twice_at_once_has_one_successor(world: World) -> None:
    runtime, system = world.runtime, Principal.system()
    with runtime.session_factory() as session, session.begin():
        tenant = _acme(session)
        project = session.scalars(select(Project.id).where(Project.tenant_id == tenant)).first()
        assert project is not None
        created = keys.create_key(
            session, system, runtime.server_secret, tenant, ApiKeyCreate(project, "rotated")
        )
    key_id = created.key.key_id

    def rotate(session: Session) -> object:
        return keys.rotate_key(session, system, runtime.server_secret, tenant, key_id)

    raised = one_after_another_at_once(runtime, rotate, rotate)

    assert isinstance(raised, Conflict), raised
    with runtime.session_factory() as session:
        old = session.scalars(select(ApiKey).where(ApiKey.key_id == key_id)).one()
        successors = session.scalars(select(ApiKey).where(ApiKey.rotated_from == old.id)).all()
    assert old.revoked_at is not None
    assert len(successors) == 1


@pytest.mark.parametrize("second_change", ["demote", "remove"])
def test_two_tenant_admins_demoted_at_once_leave_the_tenant_one(
    world: World, second_change: str
) -> None:
    runtime = world.runtime
    with runtime.session_factory() as session, session.begin():
        tenant = _acme(session)
        added = tenancy.add_member(
            session, tenant, MemberAdd("second-admin@acme.example", Role.TENANT_ADMIN)
        )
        first_admin = session.scalars(
            select(Membership.user_id).where(
                Membership.tenant_id == tenant,
                Membership.role == Role.TENANT_ADMIN,
                Membership.user_id != added.user_id,
            )
        ).one()

    def demote(user_id: uuid.UUID) -> Callable[[Session], object]:
        return lambda s: tenancy.update_member(s, tenant, user_id, MemberUpdate(Role.DEVELOPER))

    def remove(user_id: uuid.UUID) -> Callable[[Session], object]:
        return lambda s: tenancy.remove_member(s, tenant, user_id)

    second = (demote if second_change == "demote" else remove)(added.user_id)
    raised = one_after_another_at_once(runtime, demote(first_admin), second)

    assert isinstance(raised, Conflict), raised
    with runtime.session_factory() as session:
        admins = session.scalars(
            select(Membership.user_id).where(
                Membership.tenant_id == tenant, Membership.role == Role.TENANT_ADMIN
            )
        ).all()
    assert admins == [added.user_id]


def test_an_alias_granted_twice_at_once_is_granted_once_and_both_succeed(world: World) -> None:
    runtime = world.runtime
    with runtime.session_factory() as session:
        tenant = session.scalars(select(Tenant.id).where(Tenant.slug == "initech")).one()
        granted = entitlements.list_entitlements(session, tenant).items
        assert "bge-small" not in {e.alias for e in granted}

    def grant(session: Session) -> object:
        return entitlements.grant_entitlement(session, tenant, "bge-small")

    raised = one_after_another_at_once(runtime, grant, grant)

    assert raised is None, raised  # idempotent, as documented: no 409 for the second
    with runtime.session_factory() as session:
        granted = entitlements.list_entitlements(session, tenant).items
    assert sorted(e.alias for e in granted) == ["bge-small", "llama-3.1-8b"]


def test_two_first_quota_puts_of_one_scope_at_once_both_succeed_and_the_last_holds(
    world: World,
) -> None:
    """PUT is idempotent: both inserted the scope's first document, and the second was a 409."""
    runtime = world.runtime
    with runtime.session_factory() as session:
        tenant = _acme(session)

    def put(tokens_per_minute: int) -> Callable[[Session], object]:
        doc = QuotaLimits(tenant=ScopeLimits(tokens_per_minute=tokens_per_minute))
        return lambda s: TenantQuotaRepository(s, tenant).set_doc(doc)

    raised = one_after_another_at_once(runtime, put(1000), put(2000))

    assert raised is None, raised
    with runtime.session_factory() as session:
        stored = TenantQuotaRepository(session, tenant).doc()
    assert stored is not None and stored.tenant.tokens_per_minute == 2000
