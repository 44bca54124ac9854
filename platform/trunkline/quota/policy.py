"""Resolve quota documents into the limits in force: pure functions, no database.

    tenant scope   = tier.tenant  <- tenant.tenant
    project scope  = tier.project <- tenant.project                (each project, counted apart)
    key scope      = key tier.key <- tenant.key <- key override    (``key_tier``: the key's pin, if
                                                                    still in force)

``a <- b``: ``b``'s limits replace ``a``'s where ``b`` sets them (``null``: unlimited).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal

import msgspec
from msgspec import UNSET

from trunkline.quota.limits import NANO_USD, Limits
from trunkline.quota.schemas import QuotaLimits, ScopeLimits
from trunkline.snapshot.schemas import pin_applies

FIELDS = ScopeLimits.__struct_fields__
NO_LIMITS = ScopeLimits(**dict.fromkeys(FIELDS))
"""Every limit given, and none set."""


def overlay(base: ScopeLimits, override: ScopeLimits | None) -> ScopeLimits:
    """``base`` with ``override``'s given limits applied; every field of the result is given."""
    values = {}
    for name in FIELDS:
        chosen = UNSET if override is None else getattr(override, name)
        if chosen is UNSET:
            chosen = getattr(base, name)
        values[name] = None if chosen is UNSET else chosen
    return ScopeLimits(**values)


def resolve(
    tier: QuotaLimits | None,
    tenant: QuotaLimits | None,
    key_tier: QuotaLimits | None = None,
    key: ScopeLimits | None = None,
) -> QuotaLimits:
    """The limits in force for a tenant (and, given ``key``, for one of its keys)."""
    tier = tier or QuotaLimits()
    tenant = tenant or QuotaLimits()
    key_defaults = (key_tier or tier).key
    return QuotaLimits(
        tenant=overlay(tier.tenant, tenant.tenant),
        project=overlay(tier.project, tenant.project),
        key=overlay(overlay(key_defaults, tenant.key), key),
    )


def key_tier(pinned: str | None, tenants: str, priorities: Mapping[str, int]) -> str:
    """The tier a key's requests run in, so the one whose key defaults it gets: its pin when
    that is its tenant's tier or below it, else its tenant's (as ``gateway.authn.key_tier``
    decides per request). A tenant may have moved below its keys' pins since they were made."""
    if pinned is None or pinned not in priorities:
        return tenants
    applies = pin_applies(pinned, priorities[pinned], tenants, priorities.get(tenants, 0))
    return pinned if applies else tenants


def to_limits(scope: ScopeLimits) -> Limits:
    """What the gateway enforces: the same limits, cost in nano-dollars."""
    usd = scope.cost_per_month_usd
    return Limits(
        requests_per_minute=_count(scope.requests_per_minute),
        tokens_per_minute=_count(scope.tokens_per_minute),
        concurrent_requests=_count(scope.concurrent_requests),
        tokens_per_day=_count(scope.tokens_per_day),
        tokens_per_month=_count(scope.tokens_per_month),
        cost_per_month=None if usd is None or usd is UNSET else nano_usd(usd),
    )


def nano_usd(usd: float) -> int:
    """Rounded up: a budget under a nano-dollar is not 0, which refuses everything."""
    return int((Decimal(str(usd)) * NANO_USD).to_integral_value(rounding=ROUND_CEILING))


def _count(value: int | msgspec.UnsetType | None) -> int | None:
    return None if value is None or value is UNSET else value


def merge(current: ScopeLimits, changes: ScopeLimits, forget: tuple[str, ...] = ()) -> ScopeLimits:
    """``current`` with the limits ``changes`` gives, less the ones named in ``forget`` (which
    are inherited again): how the CLI edits one limit at a time."""
    values = {name: getattr(current, name) for name in FIELDS}
    values.update({k: v for k, v in msgspec.structs.asdict(changes).items() if v is not UNSET})
    for name in forget:
        values[name] = UNSET
    return ScopeLimits(**values)
