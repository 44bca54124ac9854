"""Statements over tiers, tenants, memberships and projects.

Tenant scoping lives here, once per model: a repository built for a tenant (or
for the set of tenants a caller may see) cannot return another tenant's rows,
so a foreign id reads exactly like a missing one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session

from trunkline.kit.pagination import Keyset, Page, PageRequest
from trunkline.models import (
    Entitlement,
    Membership,
    ModelAlias,
    Project,
    Role,
    Tenant,
    Tier,
    User,
)

TENANTS = Keyset("tenants", (Tenant.slug,))
MEMBERS = Keyset("members", (User.email,))
PROJECTS = Keyset("projects", (Project.name,))


def lock_tenant(session: Session, tenant_id: uuid.UUID) -> None:
    """Lock the tenant's row until the transaction ends (SQLite, which has one writer at a
    time, ignores it): changes to its members and projects made under the lock are serialised,
    with each other and with `tenants apply` (which locks its tenants' rows as it reads them).
    ``FOR NO KEY UPDATE``: rows that only refer to the tenant (its keys, its usage) are still
    inserted meanwhile."""
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True))


class TierRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def all(self) -> Sequence[Tier]:
        return self._session.scalars(select(Tier).order_by(Tier.priority.desc())).all()

    def by_name(self, name: str) -> Tier | None:
        return self._session.scalars(select(Tier).where(Tier.name == name)).one_or_none()

    def add(self, tier: Tier) -> Tier:
        self._session.add(tier)
        return tier


class TenantRepository:
    def __init__(self, session: Session, visible: frozenset[uuid.UUID] | None = None) -> None:
        """``visible``: the tenant ids the caller may see; ``None`` for every tenant."""
        self._session = session
        self._visible = visible

    def _select(self) -> Select[Tenant]:
        statement = select(Tenant)
        if self._visible is not None:
            statement = statement.where(Tenant.id.in_(self._visible))
        return statement

    def page(self, request: PageRequest, entitled_to: str | None = None) -> Page[Tenant]:
        """The visible tenants, or those of them entitled to the alias ``entitled_to``."""
        statement = self._select()
        if entitled_to is not None:
            entitled = (
                select(Entitlement.id)
                .join(ModelAlias, Entitlement.alias_id == ModelAlias.id)
                .where(Entitlement.tenant_id == Tenant.id, ModelAlias.alias == entitled_to)
            )
            statement = statement.where(exists(entitled))
        return TENANTS.scalars(self._session, statement, request)

    def get(self, tenant_id: uuid.UUID) -> Tenant | None:
        return self._session.scalars(self._select().where(Tenant.id == tenant_id)).one_or_none()

    def by_slug(self, slug: str) -> Tenant | None:
        return self._session.scalars(self._select().where(Tenant.slug == slug)).one_or_none()

    def add(self, tenant: Tenant) -> Tenant:
        self._session.add(tenant)
        return tenant


class MembershipRepository:
    def __init__(self, session: Session, tenant_id: uuid.UUID) -> None:
        self._session = session
        self._tenant_id = tenant_id

    def _select(self) -> Select[Membership, User]:
        return (
            select(Membership, User)
            .join(User, Membership.user_id == User.id)
            .where(Membership.tenant_id == self._tenant_id)
        )

    def page(self, request: PageRequest) -> Page[tuple[Membership, User]]:
        return MEMBERS.page(self._session, self._select(), request)

    def get(self, user_id: uuid.UUID) -> tuple[Membership, User] | None:
        row = self._session.execute(self._select().where(User.id == user_id))
        return row.one_or_none()

    def add(self, user: User, role: Role) -> Membership:
        membership = Membership(user_id=user.id, tenant_id=self._tenant_id, role=role)
        self._session.add(membership)
        return membership

    def delete(self, membership: Membership) -> None:
        if membership.tenant_id != self._tenant_id:
            raise ValueError("membership of another tenant")
        self._session.delete(membership)

    def lock_tenant(self) -> None:
        lock_tenant(self._session, self._tenant_id)

    def count_admins(self) -> int:
        statement = select(func.count(Membership.id)).where(
            Membership.tenant_id == self._tenant_id, Membership.role == Role.TENANT_ADMIN
        )
        return int(self._session.scalar(statement) or 0)


class ProjectRepository:
    def __init__(self, session: Session, tenant_id: uuid.UUID) -> None:
        self._session = session
        self._tenant_id = tenant_id

    def _select(self) -> Select[Project]:
        return select(Project).where(Project.tenant_id == self._tenant_id)

    def page(self, request: PageRequest) -> Page[Project]:
        return PROJECTS.scalars(self._session, self._select(), request)

    def get(self, project_id: uuid.UUID) -> Project | None:
        statement = self._select().where(Project.id == project_id)
        return self._session.scalars(statement).one_or_none()

    def by_name(self, name: str) -> Project | None:
        return self._session.scalars(self._select().where(Project.name == name)).one_or_none()

    def named_alike(self, name: str) -> Project | None:
        """The project whose name differs from ``name`` in case at most (names are ASCII, so
        ``lower`` folds them alike on SQLite and PostgreSQL)."""
        alike = self._select().where(func.lower(Project.name) == name.lower())
        return self._session.scalars(alike.order_by(Project.name).limit(1)).first()

    def add(self, name: str, description: str = "") -> Project:
        project = Project(tenant_id=self._tenant_id, name=name, description=description)
        self._session.add(project)
        return project

    def delete(self, project: Project) -> None:
        if project.tenant_id != self._tenant_id:
            raise ValueError("project of another tenant")
        self._session.delete(project)
