"""Apply the tenant documents of manifests, thousands at a time.

One tenant at a time took about 11 statements per tenant to find nothing changed (its tier,
its row, its entitlements, each alias granted, projects and members one by one, its admins
counted twice, the price book's currency twice, its quota document) and 21 for a first apply:
11,500 and 21,000 for 1,000 tenants. Here what the documents' tenants hold is read
for them all first (``Held``: a statement per table and ``chunked`` list of ids), each
document is compared and changed in memory, in order, with the errors and report lines one
at a time gave, and what is new is written in batches (the unit of work inserts a table's
rows together): the tenants and users added before the documents are gone through, the rest
at the end, the quota documents in one statement.

What is read ahead must still hold when it is written: the configuration's lock is taken
before the read and the tenants' rows are locked as they are read (see LOCKS in
``tenancy.service``), and a row no lock covers that the API added meanwhile is a ``Conflict``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trunkline.auth.service import ensure_user, users_by_email
from trunkline.billing.pricebook_store import held_currency
from trunkline.errors import Conflict, InvalidRequest
from trunkline.kit.db import chunked, driver_message
from trunkline.models import Entitlement, Membership, ModelAlias, Project, Role, Tenant, Tier, User
from trunkline.pools.entitlements import set_entitlements
from trunkline.pools.repository import ModelRepository, entitlements_of
from trunkline.quota.policy import priced
from trunkline.quota.repository import QuotaRepository, Stored, stores_anew
from trunkline.quota.schemas import QuotaLimits
from trunkline.tenancy.changes import assign, flush_or_conflict
from trunkline.tenancy.manifests.documents import Located
from trunkline.tenancy.manifests.schemas import TenantSpec
from trunkline.tenancy.manifests.upsert import ApplyReport, given_values, located_at, upsert
from trunkline.tenancy.repository import MembershipRepository, ProjectRepository, TierRepository
from trunkline.tenancy.service import project_name_taken


@dataclass
class Held:
    """What the database holds for the tenants of the documents, read for all at once."""

    tiers: dict[str, Tier]
    tenants: dict[str, Tenant]
    """By slug; those that exist."""
    aliases: dict[str, ModelAlias]
    entitlements: dict[uuid.UUID, dict[str, Entitlement]]
    projects: dict[uuid.UUID, dict[str, Project]]
    members: dict[uuid.UUID, dict[uuid.UUID, Membership]]
    """Tenant id -> user id -> membership."""
    users: dict[str, User]
    """By normalised e-mail: the documents' members that exist (and those created since)."""
    quotas: dict[uuid.UUID, Stored]
    currency: str | None = None
    """The price book's, read (and held) once, at the first quota document."""
    created: dict[str, Tenant] = field(default_factory=dict)
    """By slug: the tenants the documents add, inserted before the others' rows."""
    quota_writes: dict[uuid.UUID, QuotaLimits] = field(default_factory=dict)


def read_held(session: Session, specs: list[TenantSpec]) -> Held:
    """Read with the tenants that exist locked (``lock_tenant``'s lock) until the transaction
    ends: the API's changes to their members and projects, which take it first, wait for the
    apply to end, or ended before the apply read them."""
    locked = select(Tenant).with_for_update(key_share=True, of=Tenant)
    tenants = {
        tenant.slug: tenant
        for chunk in chunked(session, [spec.slug for spec in specs])
        for tenant in session.scalars(locked.where(Tenant.slug.in_(chunk)))
    }
    ids = [tenant.id for tenant in tenants.values()]
    return Held(
        tiers={tier.name: tier for tier in TierRepository(session).all()},
        tenants=tenants,
        aliases=ModelRepository(session).aliases(),
        entitlements=entitlements_of(session, ids),
        projects=_by_tenant(session, Project, ids, lambda p: p.name),
        members=_by_tenant(session, Membership, ids, lambda m: m.user_id),
        users=users_by_email(session, (m.email for spec in specs for m in spec.members)),
        quotas=QuotaRepository(session).stored_tenant_docs(ids),
    )


R = TypeVar("R", Project, Membership)
K = TypeVar("K")


def _by_tenant(
    session: Session, model: type[R], ids: list[uuid.UUID], key: Callable[[R], K]
) -> dict[uuid.UUID, dict[K, R]]:
    found: dict[uuid.UUID, dict[K, R]] = {tenant_id: {} for tenant_id in ids}
    for chunk in chunked(session, ids):
        for row in session.scalars(select(model).where(model.tenant_id.in_(chunk))):
            found[row.tenant_id][key(row)] = row
    return found


def apply_tenants(session: Session, documents: Iterable[Located], report: ApplyReport) -> None:
    """Apply the tenant documents in ``session``, which holds the configuration's lock
    (``changing``), as every writer of what it reads does: nothing changes under it between
    its read of what the tenants hold and its writes, quotas included."""
    specs = [(d, d.spec) for d in documents if isinstance(d.spec, TenantSpec)]
    if not specs:
        return
    held = read_held(session, [spec for _document, spec in specs])
    _insert_parents(session, held, [spec for _document, spec in specs])
    for document, spec in specs:
        with located_at(document):
            _tenant(session, held, spec, document.given, report)
    _flush(session)
    QuotaRepository(session).set_tenant_docs(held.quota_writes)


def _flush(session: Session) -> None:
    """Write what is pending. A row the API added since ``read_held`` that no lock covers (a
    tenant of the same slug, a user of the same e-mail) is refused by its unique constraint,
    as a ``Conflict``: the transaction is rolled back whole, and applying again reads it.
    Any other refusal (a foreign key, a check) is no such race, and applying again would be
    refused again: it is raised as it is, the database's own words saying what it refused
    (``trunkline tenants apply`` prints them on one line)."""
    flush_or_conflict(session, _raced, unique_only=True)


def _raced(exc: IntegrityError) -> str:
    return (
        "the database changed while applying; apply again (another writer added a row "
        f"first: {driver_message(exc)})"
    )


def _insert_parents(session: Session, held: Held, specs: list[TenantSpec]) -> None:
    """Insert the tenants and users the documents add, before the rows that name them: one
    flush orders tables by their relationships, and a membership or entitlement has none to
    its tenant (its insert came first and failed its foreign key). A user is created as the
    first document naming it would; ``_tenant`` reports each tenant created, in order."""
    for spec in specs:
        tier = held.tiers.get(spec.tier)
        new = spec.slug not in held.tenants and spec.slug not in held.created
        if new and tier is not None:  # else _tenant says what is wrong
            held.created[spec.slug] = _new_tenant(spec, tier)
            session.add(held.created[spec.slug])
        for member in spec.members:
            ensure_user(session, member.email, member.name, known=held.users)
    _flush(session)


def _new_tenant(spec: TenantSpec, tier: Tier) -> Tenant:
    values = _values(spec)
    return Tenant(id=uuid.uuid4(), slug=spec.slug, tier_id=tier.id, tier=tier, **values)


def _values(spec: TenantSpec) -> dict[str, Any]:
    return {"name": spec.name, "regions": list(spec.regions), "cache_isolated": spec.cache_isolated}


def _tenant(
    session: Session, held: Held, spec: TenantSpec, given: frozenset[str], report: ApplyReport
) -> None:
    tier = held.tiers.get(spec.tier)
    if tier is None:  # load_manifests checks this; a hand-built Manifests may not
        raise InvalidRequest(f"unknown tier {spec.tier!r}", param="tier")
    values = _values(spec)
    create = lambda: held.created.pop(spec.slug, None) or _new_tenant(spec, tier)  # noqa: E731
    tenant, details = upsert(
        session,
        report,
        "Tenant",
        spec.slug,
        held.tenants.get(spec.slug),
        create,
        given_values(values, given),
        flush=False,
    )
    held.tenants[spec.slug] = tenant
    if tenant.tier.id != tier.id:
        details.append(f"tier {tenant.tier.name} -> {tier.name}")
        tenant.tier = tier
    if "models" in given:  # written out, the complete list; left out, what the API granted stays
        current = held.entitlements.setdefault(tenant.id, {})
        granted, revoked = set_entitlements(session, tenant.id, spec.models, current, held.aliases)
        details += [f"+model {a}" for a in granted] + [f"-model {a}" for a in revoked]
    details += _projects(session, held, tenant, spec) + _members(session, held, tenant, spec)
    if spec.quota is not None:
        if held.currency is None:
            held.currency = held_currency(session)
        quota = priced(spec.quota, held.currency, "quota.")
        if stores_anew(held.quotas.get(tenant.id), quota):
            held.quota_writes[tenant.id] = quota
            details.append("quota overrides set")
    report.record("Tenant", spec.slug, details)


def _projects(session: Session, held: Held, tenant: Tenant, spec: TenantSpec) -> list[str]:
    projects, details = held.projects.setdefault(tenant.id, {}), []
    repository = ProjectRepository(session, tenant.id)
    for index, project in enumerate(spec.projects):
        row = projects.get(project.name)
        if row is None:
            held_alike = [name for name in projects if name.lower() == project.name.lower()]
            if held_alike:
                taken = project_name_taken(project.name, min(held_alike))
                raise Conflict(taken, param=f"projects[{index}].name")
            description = project.description or ""
            projects[project.name] = repository.add(project.name, description)
            details.append(f"+project {project.name}")
        elif project.description is not None and assign(row, {"description": project.description}):
            details.append(f"project {project.name} description updated")
    return details


def _members(session: Session, held: Held, tenant: Tenant, spec: TenantSpec) -> list[str]:
    members, details = held.members.setdefault(tenant.id, {}), []
    repository = MembershipRepository(session, tenant.id)
    demoted = False
    for member in spec.members:
        user = ensure_user(session, member.email, member.name, known=held.users)
        found = members.get(user.id)
        if found is None:
            members[user.id] = repository.add(user, member.role)
            details.append(f"+member {user.email} ({member.role.value})")
        elif found.role is not member.role:
            details.append(f"member {user.email} {found.role.value} -> {member.role.value}")
            demoted = demoted or found.role is Role.TENANT_ADMIN
            found.role = member.role
    if demoted:  # the API's rule and check (_keep_an_admin): a tenant keeps a tenant_admin,
        _flush(session)  # counted in the database, under the tenant's lock
        repository.lock_tenant()
        if repository.count_admins() < 1:
            raise Conflict(
                f"tenant {tenant.slug}: a tenant keeps at least one tenant_admin",
                reason="last_tenant_admin",
            )
    return details
