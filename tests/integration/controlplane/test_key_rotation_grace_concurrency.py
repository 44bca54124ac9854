"""A key rotated twice at once with a grace has one successor, on SQLite and on PostgreSQL:
the old key stays active through its grace, so its revocation cannot be what refuses the
second rotation, as it is for a rotation without one."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from integration.controlplane.test_controlplane_concurrency import one_after_another_at_once
from trunkline.auth.principal import Principal
from trunkline.errors import Conflict
from trunkline.keys import service as keys
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.models import ApiKey, Project, Tenant
from unit.controlplane.cp_support import World


def test_a_key_rotated_twice_at_once_with_a_grace_has_one_successor(world: World) -> None:
    runtime, system = world.runtime, Principal.system()
    with runtime.session_factory() as session, session.begin():
        tenant = session.scalars(select(Tenant.id).where(Tenant.slug == "acme")).one()
        project = session.scalars(select(Project.id).where(Project.tenant_id == tenant)).first()
        assert project is not None
        created = keys.create_key(
            session, system, runtime.server_secret, tenant, ApiKeyCreate(project, "graced")
        )
    key_id = created.key.key_id

    def rotate(session: Session) -> object:
        return keys.rotate_key(session, system, runtime.server_secret, tenant, key_id, grace_s=60)

    raised = one_after_another_at_once(runtime, rotate, rotate)

    assert isinstance(raised, Conflict), raised
    with runtime.session_factory() as session:
        old = session.scalars(select(ApiKey).where(ApiKey.key_id == key_id)).one()
        successors = session.scalars(select(ApiKey).where(ApiKey.rotated_from == old.id)).all()
    assert old.revoked_at is None
    assert len(successors) == 1
