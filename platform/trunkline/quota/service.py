"""Quota operations shared by the REST API and the CLI.

Callers have checked the caller's role already (controllers through guards). Reads of a
tenant's or a key's quota go through the tenancy and key services, so another tenant's tenant
or key, or another developer's key, reads as missing. A change marks the unit of work, and the
snapshot is published after commit: every gateway enforces it within its next poll. Cost
budgets are amounts of the price book's currency, which the read views name (``currency``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from trunkline.auth.principal import Principal
from trunkline.billing.pricebook_store import held_currency, price_book_currency
from trunkline.errors import NotFound
from trunkline.keys.repository import successors
from trunkline.keys.service import get_key
from trunkline.quota.limits import MONTH_COST, NANO, UNLIMITED
from trunkline.quota.policy import key_tier, priced, resolve, to_limits
from trunkline.quota.repository import QuotaRepository, TenantQuotaRepository
from trunkline.quota.rules import Vector
from trunkline.quota.schemas import (
    KeyQuota,
    LimitUsage,
    QuotaLimits,
    ScopeLimits,
    ScopeUsage,
    TenantQuota,
)
from trunkline.quota.windows import Windows, windows_at
from trunkline.tenancy.changes import mark_config_changed, mark_keys_changed
from trunkline.tenancy.repository import TierRepository
from trunkline.tenancy.service import tenant_row

UsageReader = Callable[[str, Sequence[tuple[str, str]]], tuple[int, list[Vector]] | None]
"""``(tenant id, [(scope kind, scope id)])`` -> (now in epoch ms, the scopes' counters), or
``None`` when the quota store cannot be reached."""


def get_tier_quota(session: Session, name: str) -> QuotaLimits:
    tier = _tier_id(session, name)
    return QuotaRepository(session).tier_doc(tier) or QuotaLimits()


def set_tier_quota(session: Session, name: str, data: QuotaLimits) -> QuotaLimits:
    tier = _tier_id(session, name)
    data = priced(data, held_currency(session))
    if QuotaRepository(session).set_tier_doc(tier, data):
        mark_config_changed(session)
    return data


def tenant_quota(
    session: Session, principal: Principal, tenant_id: uuid.UUID, read_usage: UsageReader
) -> TenantQuota:
    tenant = tenant_row(session, principal, tenant_id)
    overrides = TenantQuotaRepository(session, tenant.id).doc() or QuotaLimits()
    limits = resolve(QuotaRepository(session).tier_doc(tenant.tier_id), overrides)
    currency = price_book_currency(session)
    scopes = [("tenant", str(tenant.id))]
    usage = _usage(read_usage, str(tenant.id), scopes, [limits.tenant], currency)
    return TenantQuota(
        tenant.id,
        tenant.tier.name,
        overrides,
        limits,
        None if usage is None else usage[0],
        currency,
    )


def set_tenant_quota(session: Session, tenant_id: uuid.UUID, data: QuotaLimits) -> QuotaLimits:
    """Replace the tenant's overrides; what was stored. Read the view back (``tenant_quota``)
    after the commit: its usage comes from the quota store, which a transaction that changes
    the configuration must not wait on (it holds the configuration's lock)."""
    tenant_row(session, Principal.system(), tenant_id)
    data = priced(data, held_currency(session))
    if TenantQuotaRepository(session, tenant_id).set_doc(data):
        mark_config_changed(session)
    return data


def key_quota(
    session: Session,
    principal: Principal,
    tenant_id: uuid.UUID,
    key_id: str,
    read_usage: UsageReader,
) -> KeyQuota:
    key = get_key(session, principal, tenant_id, key_id)
    tenant = tenant_row(session, principal, tenant_id)
    quotas = QuotaRepository(session)
    scoped = TenantQuotaRepository(session, tenant_id)
    own = scoped.key_doc(key_id) or ScopeLimits()
    tiers = TierRepository(session)
    pinned = tiers.by_name(key.tier) if key.tier else None
    priorities = {tenant.tier.name: tenant.tier.priority}
    if pinned is not None:
        priorities[pinned.name] = pinned.priority
    tier = key_tier(key.tier, tenant.tier.name, priorities)
    limits = resolve(
        quotas.tier_doc(tenant.tier_id),
        scoped.doc(),
        quotas.tier_doc(_tier_id(session, tier)),
        own,
    )
    by_scope = {"key": limits.key, "project": limits.project, "tenant": limits.tenant}
    idents = {"key": key.key_id, "project": str(key.project_id), "tenant": str(tenant_id)}
    scopes = [(kind, idents[kind]) for kind in by_scope]
    currency = price_book_currency(session)
    usage = _usage(read_usage, str(tenant_id), scopes, list(by_scope.values()), currency)
    return KeyQuota(
        key.key_id,
        tier,
        own,
        by_scope,
        None if usage is None else dict(zip(by_scope, usage, strict=True)),
        currency,
    )


def set_key_quota(
    session: Session,
    principal: Principal,
    tenant_id: uuid.UUID,
    key_id: str,
    data: ScopeLimits,
) -> ScopeLimits:
    """Replace the key's overrides; what was stored. Read the view back (``key_quota``) after
    the commit, as ``set_tenant_quota``'s."""
    get_key(session, principal, tenant_id, key_id)
    data = priced(data, held_currency(session))
    scoped = TenantQuotaRepository(session, tenant_id)
    if scoped.set_key_doc(key_id, data):
        # its successors (keys rotated from it) keep its limits unless they have their own
        row_id = scoped.key_row_id(key_id)
        successors_of = set() if row_id is None else successors(session, row_id)
        mark_keys_changed(session, {key_id} | successors_of)
    return data


def _tier_id(session: Session, name: str) -> uuid.UUID:
    tier = TierRepository(session).by_name(name)
    if tier is None:
        raise NotFound(f"tier {name!r} not found", param="name")
    return tier.id


def _usage(
    read_usage: UsageReader,
    tenant_id: str,
    scopes: Sequence[tuple[str, str]],
    limits: Sequence[ScopeLimits],
    currency: str,
) -> list[ScopeUsage] | None:
    read = read_usage(tenant_id, scopes)
    if read is None:
        return None
    now_ms, counters = read
    windows = windows_at(now_ms)
    return [
        scope_usage(lim, used, windows, currency)
        for lim, used in zip(limits, counters, strict=True)
    ]


def scope_usage(limits: ScopeLimits, used: Vector, windows: Windows, currency: str) -> ScopeUsage:
    """A scope's counters against its limits, each with when its window resets; the cost
    budget in ``currency`` (the price book's), under its deprecated name too when that is USD."""
    bounds = to_limits(limits).vector()
    ends = (
        windows.minute_end_ms, windows.minute_end_ms, None, windows.day_end_ms,
        windows.month_end_ms, windows.month_end_ms,
    )  # fmt: skip
    entries = []
    for field, (bound, count, end) in enumerate(zip(bounds, used, ends, strict=True)):
        scale = NANO if field == MONTH_COST else 1
        limit = None if bound == UNLIMITED else bound / scale if scale > 1 else bound
        value = count / scale if scale > 1 else count
        # Subtracted in whole units first: 100.0 - 99.7 reads 0.29999999999999716.
        left = max(bound - count, 0)
        remaining = None if limit is None else left / scale if scale > 1 else left
        resets = None if end is None else datetime.fromtimestamp(end / 1000, UTC)
        entries.append(LimitUsage(limit, value, remaining, resets))
    usage = ScopeUsage(*entries)
    if currency == "USD":  # consumers from before budgets had a currency read it there
        usage.cost_per_month_usd = usage.cost_per_month
    return usage
