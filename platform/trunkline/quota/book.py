"""The quota section of the gateway snapshot, resolved from the database (control plane side).

Every tenant, project default and key gets the limits in force for it (``policy.resolve``); a
scope without any limit is left out, so a gateway skips the store for callers nobody limits.
Prices come from the billing price book version in force when the snapshot is built, in
millionths of its currency per million tokens, per served model and tier; the book carries that
currency, which the gateway's refusals name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from trunkline.billing.pricebook import TOKEN_CLASSES
from trunkline.billing.pricebook_store import load_price_book, price_book_currency
from trunkline.errors import TrunklineError
from trunkline.models import Model, Tier
from trunkline.quota.limits import MICRO, Limits, Price, QuotaBook, price_key
from trunkline.quota.policy import key_tier, resolve, to_limits
from trunkline.quota.repository import QuotaRepository
from trunkline.quota.schemas import QuotaLimits, ScopeLimits
from trunkline.snapshot.schemas import KeyEntry, TenantEntry

log = logging.getLogger(__name__)


def build_quota_book(
    session: Session, tenants: Mapping[str, TenantEntry], keys: Mapping[str, KeyEntry]
) -> QuotaBook:
    repository = QuotaRepository(session)
    tier_docs = repository.tier_docs_by_name()
    tenant_docs = repository.all_tenant_docs()
    tenant_limits: dict[str, Limits] = {}
    project_limits: dict[str, Limits] = {}
    for tenant_id, tenant in tenants.items():
        resolved = resolve(tier_docs.get(tenant.tier), tenant_docs.get(tenant_id))
        _keep(tenant_limits, tenant_id, to_limits(resolved.tenant))
        _keep(project_limits, tenant_id, to_limits(resolved.project))
    sources = KeyLimitSources(
        {tid: t.tier for tid, t in tenants.items()},
        tier_docs,
        tenant_docs,
        repository.all_key_docs(),
        tier_priorities(session),
    )
    prices, billable, currency = _pricing(session)
    limits = key_limits(keys, sources)
    return QuotaBook(tenant_limits, project_limits, limits, prices, billable, currency)


@dataclass(frozen=True)
class KeyLimitSources:
    """What the limits of keys are resolved from: for every key asked about, its tenant's tier
    and document and its own (or its nearest ancestor's) document; every tier's."""

    tenant_tiers: Mapping[str, str]
    tier_docs: Mapping[str, QuotaLimits]
    tenant_docs: Mapping[str, QuotaLimits]
    key_docs: Mapping[str, ScopeLimits]
    priorities: Mapping[str, int]


def tier_priorities(session: Session) -> dict[str, int]:
    return {name: priority for name, priority in session.execute(select(Tier.name, Tier.priority))}


def key_limits(keys: Mapping[str, KeyEntry], sources: KeyLimitSources) -> dict[str, Limits]:
    """The limits in force for each of ``keys`` (those it has any of): the whole snapshot's
    and a few shards' rebuilt alone are resolved by this alone."""
    limits_of: dict[str, Limits] = {}
    shared: dict[tuple[str, str], Limits] = {}
    """Limits of keys without a document of their own, by tenant and tier: most keys."""
    for key_id, key in keys.items():
        owner_tier = sources.tenant_tiers.get(key.tenant_id)
        if owner_tier is None:
            continue
        tier = key_tier(key.tier, owner_tier, sources.priorities)
        own = sources.key_docs.get(key_id)
        limits = shared.get((key.tenant_id, tier)) if own is None else None
        if limits is None:
            resolved = resolve(
                sources.tier_docs.get(owner_tier),
                sources.tenant_docs.get(key.tenant_id),
                sources.tier_docs.get(tier),
                own,
            )
            limits = to_limits(resolved.key)
            if own is None:
                shared[(key.tenant_id, tier)] = limits
        _keep(limits_of, key_id, limits)
    return limits_of


def _keep(into: dict[str, Limits], ident: str, limits: Limits) -> None:
    if not limits.unlimited:
        into[ident] = limits


def _pricing(session: Session) -> tuple[dict[str, Price], tuple[str, ...], str]:
    """List prices for every served model and tier, the outcomes the price book in force
    bills, and its currency. A model the price book does not price has none (its cost budgets
    admit it); an unreadable price book gives no prices at all, logged: a broken price book
    must not stop key revocations from being published."""
    try:
        version = load_price_book(session).at(datetime.now(UTC))
    except Exception:
        log.exception("no prices for cost budgets: the price book could not be read")
        return {}, QuotaBook().billable_outcomes, price_book_currency(session)
    tiers = session.scalars(select(Tier.name)).all()
    prices = {}
    for model in session.scalars(select(Model.name)).all():
        for tier in tiers:
            try:
                per_class = [version.token_price(model, tier, c) for c in TOKEN_CLASSES]
            except TrunklineError:
                log.warning("no list price for %s on %s: its cost budgets admit it", model, tier)
                continue
            prices[price_key(model, tier)] = Price(*(_micro(p) for p in per_class))
    return prices, tuple(version.billable_outcomes), version.currency


def _micro(per_million: Decimal) -> int:
    return int(per_million * MICRO)
