"""Which tenants may use which model aliases (the entitlement half of the catalog service)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

from sqlalchemy.orm import Session

from trunkline.auth.principal import Principal
from trunkline.errors import InvalidRequest, NotFound
from trunkline.kit.pagination import EVERYTHING, Page, PageRequest
from trunkline.models import Entitlement as EntitlementRow
from trunkline.models import Model as ModelRow
from trunkline.models import ModelAlias
from trunkline.pools.repository import EntitlementRepository, ModelRepository, entitled_counts
from trunkline.pools.schemas import AvailableModel, Entitlement
from trunkline.tenancy.changes import mark_config_changed
from trunkline.tenancy.service import tenant_row


def list_entitlements(
    session: Session, tenant_id: uuid.UUID, page: PageRequest = EVERYTHING
) -> Page[Entitlement]:
    tenant_row(session, Principal.system(), tenant_id)
    return EntitlementRepository(session, tenant_id).page(page).map(_entitlement)


def _entitlement(row: tuple[EntitlementRow, ModelAlias, ModelRow]) -> Entitlement:
    entitlement, alias, model = row
    return Entitlement(entitlement.tenant_id, alias.alias, model.name, entitlement.created_at)


def entitled_aliases(session: Session, tenant_id: uuid.UUID) -> set[str]:
    return EntitlementRepository(session, tenant_id).aliases()


def grant_entitlement(session: Session, tenant_id: uuid.UUID, alias: str) -> Entitlement:
    """Let the tenant use ``alias`` (idempotent)."""
    tenant_row(session, Principal.system(), tenant_id)
    row = ModelRepository(session).alias(alias)
    if row is None:
        raise NotFound(f"alias {alias!r} not found", param="alias")
    if EntitlementRepository(session, tenant_id).ensure(row):
        mark_config_changed(session)
    return next(e for e in list_entitlements(session, tenant_id).items if e.alias == alias)


def revoke_entitlement(session: Session, tenant_id: uuid.UUID, alias: str) -> None:
    tenant_row(session, Principal.system(), tenant_id)
    entitlements = EntitlementRepository(session, tenant_id)
    found = entitlements.get(alias)
    if found is None:
        raise NotFound(f"tenant is not entitled to {alias!r}", param="alias")
    entitlements.delete(found)
    session.flush()
    mark_config_changed(session)


def set_entitlements(
    session: Session,
    tenant_id: uuid.UUID,
    aliases: Iterable[str],
    current: Mapping[str, EntitlementRow],
    catalog: Mapping[str, ModelAlias],
) -> tuple[list[str], list[str]]:
    """Make ``aliases`` exactly the tenant's entitlements; returns (granted, revoked).

    ``current`` (the tenant's entitlements by alias) and ``catalog`` (every alias) are read
    beforehand, for many tenants at once (``entitlements_of``, ``ModelRepository.aliases``):
    this reads nothing and writes at the session's next flush.
    """
    wanted = set(aliases)
    granted = sorted(wanted - current.keys())
    revoked = sorted(current.keys() - wanted)
    entitlements = EntitlementRepository(session, tenant_id)
    for alias in granted:
        row = catalog.get(alias)
        if row is None:
            raise InvalidRequest(f"unknown alias {alias!r}", param="models")
        entitlements.add(row)
    for alias in revoked:
        entitlements.delete(current[alias])
    if granted or revoked:
        mark_config_changed(session)
    return granted, revoked


def available_models(
    session: Session,
    principal: Principal,
    tenant_id: uuid.UUID | None = None,
    page: PageRequest = EVERYTHING,
) -> Page[AvailableModel]:
    """Aliases the caller's tenants may use (every alias for a platform admin), by alias.

    ``tenant_id`` narrows the answer to one of the caller's tenants.
    """
    visible = principal.visible_tenants()
    if tenant_id is not None:
        principal.require_member(tenant_id)
        visible = frozenset({tenant_id})
    rows = ModelRepository(session).available(visible, page)
    counts = entitled_counts(session, visible, (a.alias for a, _m in rows.items))

    def available(row: tuple[ModelAlias, ModelRow]) -> AvailableModel:
        alias, model = row
        count = counts.get(alias.alias, 0)
        return AvailableModel(alias.alias, model.name, model.kind, model.context_length, count)

    return rows.map(available)
