"""Tiers, tenants, members and projects: the operations the API, CLI and manifests share.

Callers have already checked the caller's role (controllers through guards);
these functions scope every read through the repositories and mark the unit of
work when the gateway snapshot must be republished after commit.

LOCKS. Every transaction that may change something holds the configuration's lock before
anything else (``tenancy.changes.changing``: the API's write requests, the CLI's units of
work, `tenants apply`), so these functions take no lock of it themselves. `tenants apply` then
locks its tenants' rows (``lock_tenant``) as it reads them; a change to a tenant's members or
projects takes its row's lock before reading what it checks, so of two such changes in
transactions of their own the second sees what the first committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from trunkline.auth.principal import Principal
from trunkline.auth.repository import UserRepository
from trunkline.auth.service import ensure_user, normalise_email
from trunkline.errors import Conflict, InvalidRequest, NotFound
from trunkline.keys.repository import ApiKeyRepository
from trunkline.kit.ids import utcnow
from trunkline.kit.pagination import EVERYTHING, Page, PageRequest
from trunkline.models import ApiKey, Membership, RetiredKey, RetiredProject, Role, User
from trunkline.models import Tenant as TenantRow
from trunkline.models import Tier as TierRow
from trunkline.tenancy.changes import assign, flush_or_conflict, mark_config_changed
from trunkline.tenancy.repository import (
    MembershipRepository,
    ProjectRepository,
    TenantRepository,
    TierRepository,
    lock_tenant,
)
from trunkline.tenancy.schemas import (
    Member,
    MemberAdd,
    MemberUpdate,
    Project,
    ProjectCreate,
    Tenant,
    TenantCreate,
    TenantUpdate,
    Tier,
    TierCreate,
    TierUpdate,
    given,
)

# --- tiers ------------------------------------------------------------------------------------


def list_tiers(session: Session) -> list[Tier]:
    return [Tier.of(t) for t in TierRepository(session).all()]


def get_tier(session: Session, name: str) -> Tier:
    return Tier.of(_tier(session, name))


def create_tier(session: Session, data: TierCreate) -> Tier:
    tiers = TierRepository(session)
    if tiers.by_name(data.name) is not None:
        raise Conflict(f"tier {data.name!r} already exists", param="name")
    tier = tiers.add(TierRow(**{f: getattr(data, f) for f in data.__struct_fields__}))
    flush_or_conflict(session, f"tier {data.name!r} already exists")
    mark_config_changed(session)
    return Tier.of(tier)


def update_tier(session: Session, name: str, data: TierUpdate) -> Tier:
    tier = _tier(session, name)
    if assign(tier, given(data)):
        mark_config_changed(session)
    return Tier.of(tier)


def _tier(session: Session, name: str, *, param: str | None = None) -> TierRow:
    tier = TierRepository(session).by_name(name)
    if tier is None:
        if param is not None:
            raise InvalidRequest(f"unknown tier {name!r}", param=param)
        raise NotFound(f"tier {name!r} not found", param="name")
    return tier


# --- tenants ----------------------------------------------------------------------------------


def list_tenants(
    session: Session,
    principal: Principal,
    page: PageRequest = EVERYTHING,
    entitled_to: str | None = None,
) -> Page[Tenant]:
    """Every tenant for a platform admin; the caller's own tenants for anyone else. With
    ``entitled_to``, only those of them entitled to that alias."""
    tenants = TenantRepository(session, principal.visible_tenants())
    return tenants.page(page, entitled_to).map(Tenant.of)


def get_tenant(session: Session, principal: Principal, tenant_id: uuid.UUID) -> Tenant:
    return Tenant.of(tenant_row(session, principal, tenant_id))


def tenant_row(session: Session, principal: Principal, tenant_id: uuid.UUID) -> TenantRow:
    """The tenant if this caller may see it; another tenant's id reads as a missing one."""
    tenant = TenantRepository(session, principal.visible_tenants()).get(tenant_id)
    if tenant is None:
        raise NotFound("tenant not found", param="tenant_id")
    return tenant


def tenant_by_slug(session: Session, slug: str) -> TenantRow:
    tenant = TenantRepository(session).by_slug(slug)
    if tenant is None:
        raise NotFound(f"tenant {slug!r} not found", param="tenant")
    return tenant


def create_tenant(session: Session, data: TenantCreate) -> Tenant:
    tenants = TenantRepository(session)
    if tenants.by_slug(data.slug) is not None:
        raise Conflict(f"tenant {data.slug!r} already exists", param="slug")
    tier = _tier(session, data.tier, param="tier")
    _check_regions(data.regions)
    tenant = tenants.add(
        TenantRow(
            slug=data.slug,
            name=data.name,
            tier=tier,
            regions=list(data.regions),
            cache_isolated=data.cache_isolated,
        )
    )
    flush_or_conflict(session, f"tenant {data.slug!r} already exists")
    mark_config_changed(session)
    return Tenant.of(tenant)


def update_tenant(session: Session, tenant_id: uuid.UUID, data: TenantUpdate) -> Tenant:
    tenant = tenant_row(session, Principal.system(), tenant_id)
    values = given(data)
    if "tier" in values:
        values["tier_id"] = _tier(session, values.pop("tier"), param="tier").id
    _check_regions(values.get("regions", ()))
    if assign(tenant, values):
        session.flush()
        session.refresh(tenant)
        mark_config_changed(session)
    return Tenant.of(tenant)


def _check_regions(regions: Sequence[str]) -> None:
    for index, region in enumerate(regions):
        if region in regions[:index]:
            raise InvalidRequest(f"region {region!r} listed twice", param=f"regions[{index}]")


# --- members ----------------------------------------------------------------------------------


def list_members(
    session: Session, tenant_id: uuid.UUID, page: PageRequest = EVERYTHING
) -> Page[Member]:
    tenant_row(session, Principal.system(), tenant_id)
    return MembershipRepository(session, tenant_id).page(page).map(lambda row: Member.of(*row))


def add_member(session: Session, tenant_id: uuid.UUID, data: MemberAdd) -> Member:
    """Add a user (created on first sight of the e-mail) to the tenant with a role."""
    tenant_row(session, Principal.system(), tenant_id)
    lock_tenant(session, tenant_id)  # before reading who is a member (LOCKS)
    # a user who exists already keeps their name: other tenants show it too, and it is not
    # this tenant's admin's to set
    existing = UserRepository(session).by_email(normalise_email(data.email))
    user = existing or ensure_user(session, data.email, data.name)
    members = MembershipRepository(session, tenant_id)
    if members.get(user.id) is not None:
        raise Conflict(f"{user.email} is already a member", param="email")
    membership = members.add(user, data.role)
    flush_or_conflict(session, f"{user.email} is already a member")
    return Member.of(membership, user)


def update_member(
    session: Session, tenant_id: uuid.UUID, user_id: uuid.UUID, data: MemberUpdate
) -> Member:
    members = MembershipRepository(session, tenant_id)
    members.lock_tenant()  # before writing the membership (LOCKS)
    membership, user = _member(members, user_id)
    demoted = membership.role is Role.TENANT_ADMIN and data.role is not Role.TENANT_ADMIN
    membership.role = data.role
    if demoted:
        _keep_an_admin(session, members)
    return Member.of(membership, user)


def remove_member(session: Session, tenant_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Remove a member and revoke the tenant's keys they created: someone who left the tenant
    must not keep calling its models on its quota. Other members' keys are untouched."""
    members = MembershipRepository(session, tenant_id)
    members.lock_tenant()
    membership, _user = _member(members, user_id)
    was_admin = membership.role is Role.TENANT_ADMIN
    members.delete(membership)
    if was_admin:
        _keep_an_admin(session, members)
    if ApiKeyRepository(session, tenant_id, created_by=user_id).revoke_all(utcnow()):
        mark_config_changed(session)


def _member(members: MembershipRepository, user_id: uuid.UUID) -> tuple[Membership, User]:
    found = members.get(user_id)
    if found is None:
        raise NotFound("member not found", param="user_id")
    return found


def _keep_an_admin(session: Session, members: MembershipRepository) -> None:
    """After demoting or removing a tenant_admin: refuse if the tenant has none left.

    The tenant's row was locked before the change and the change is written before counting,
    so of two concurrent demotions of a tenant's last two admins the second counts after the
    first committed (PostgreSQL waits on the lock; SQLite lets one writer in at a time) and is
    refused, instead of each seeing the other admin still there.
    """
    session.flush()
    if members.count_admins() < 1:
        raise Conflict("a tenant keeps at least one tenant_admin", reason="last_tenant_admin")


# --- projects ---------------------------------------------------------------------------------


def list_projects(
    session: Session, tenant_id: uuid.UUID, page: PageRequest = EVERYTHING
) -> Page[Project]:
    tenant_row(session, Principal.system(), tenant_id)
    return ProjectRepository(session, tenant_id).page(page).map(Project.of)


def get_project(session: Session, tenant_id: uuid.UUID, project_id: uuid.UUID) -> Project:
    project = ProjectRepository(session, tenant_id).get(project_id)
    if project is None:
        raise NotFound("project not found", param="project_id")
    return Project.of(project)


def create_project(session: Session, tenant_id: uuid.UUID, data: ProjectCreate) -> Project:
    tenant_row(session, Principal.system(), tenant_id)
    lock_tenant(session, tenant_id)  # before reading its projects (LOCKS)
    projects = ProjectRepository(session, tenant_id)
    if (alike := projects.named_alike(data.name)) is not None:
        raise Conflict(project_name_taken(data.name, alike.name), param="name")
    project = projects.add(data.name, data.description)
    flush_or_conflict(session, f"project {data.name!r} already exists")
    return Project.of(project)


def project_name_taken(name: str, held: str) -> str:
    """Why a tenant holding a project named ``held`` takes no project ``name``: names that
    differ only in case would be told apart by nobody (usage by project, bills, the CLI's
    ``--project``)."""
    if name == held:
        return f"project {name!r} already exists"
    return f"project {name!r} differs only in case from the tenant's project {held!r}"


def delete_project(session: Session, tenant_id: uuid.UUID, project_id: uuid.UUID) -> None:
    """Delete a project and, through the foreign key, every API key it holds. Its name is kept
    (``RetiredProject``) for the chargeback of the usage it had, and its keys' names and
    creators (``RetiredKey``) for the usage API."""
    projects = ProjectRepository(session, tenant_id)
    project = projects.get(project_id)
    if project is None:
        raise NotFound("project not found", param="project_id")
    now = utcnow()
    session.merge(
        RetiredProject(id=project.id, tenant_id=tenant_id, name=project.name, deleted_at=now)
    )
    keys = select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.project_id == project.id)
    for key in session.scalars(keys):
        retired = RetiredKey(
            key_id=key.key_id,
            tenant_id=tenant_id,
            created_by=key.created_by,
            name=key.name,
            deleted_at=now,
        )
        session.merge(retired)
    projects.delete(project)
    session.flush()
    mark_config_changed(session)
