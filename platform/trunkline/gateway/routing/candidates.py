"""The endpoints a request may use: filters for model, residency and tier (burst pools, pools
placed for other tiers) over the snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trunkline.snapshot import (
    AliasEntry,
    EndpointEntry,
    PoolEntry,
    Snapshot,
    TenantEntry,
    TierEntry,
)

__all__ = ["Candidate", "eligible", "open_pools", "open_to", "placed_away", "poolless", "stranded"]


@dataclass(frozen=True, slots=True)
class Candidate:
    pool: PoolEntry
    endpoint: EndpointEntry


def eligible(
    snapshot: Snapshot, alias: AliasEntry, tenant: TenantEntry, tier: TierEntry
) -> list[Candidate]:
    """Every endpoint that serves the alias inside the tenant's regions and tier."""
    return [
        Candidate(pool, endpoint)
        for pool in open_pools(snapshot, alias.pools, tenant, tier)
        for endpoint in pool.endpoints
    ]


def open_pools(
    snapshot: Snapshot, names: Sequence[str], tenant: TenantEntry, tier: TierEntry
) -> list[PoolEntry]:
    """The pools of ``names`` inside the tenant's regions and open to its tier (burst pools
    only for tiers that may use them; pools placed for some tiers only for those), with
    endpoints or not."""
    regions = set(tenant.regions)
    pools = (snapshot.pools.get(name) for name in names)
    return [
        pool
        for pool in pools
        if pool is not None
        and (not regions or pool.region in regions)
        and (tier.may_use_burst or not pool.burst)
        and open_to(pool.tiers, tier.name)
    ]


def open_to(tiers: tuple[str, ...] | frozenset[str] | None, tier: str) -> bool:
    """Whether a pool placed for ``tiers`` (None: every tier) may serve ``tier``'s requests."""
    return tiers is None or tier in tiers


def placed_away(
    snapshot: Snapshot, alias: AliasEntry, tenant: TenantEntry, tier: TierEntry
) -> bool:
    """Whether the alias has pools (of either model of a cascade) but none inside the tenant's
    regions and open to the tier. An alias without pools is being deployed, not placed away."""
    names = alias.pools + (alias.cascade.pools if alias.cascade else ())
    return bool(names) and not open_pools(snapshot, names, tenant, tier)


def stranded(snapshot: Snapshot) -> list[tuple[TenantEntry, AliasEntry]]:
    """Every entitlement placement leaves without a pool: (tenant, alias) where the alias is
    :func:`placed_away` for the tenant's own tier. Its requests get a 403."""
    found = []
    for tenant in sorted(snapshot.tenants.values(), key=lambda t: t.slug):
        tier = snapshot.tiers.get(tenant.tier)
        for name in sorted(tenant.aliases):
            alias = snapshot.aliases.get(name)
            if (
                tier is not None
                and alias is not None
                and placed_away(snapshot, alias, tenant, tier)
            ):
                found.append((tenant, alias))
    return found


def poolless(snapshot: Snapshot) -> list[tuple[AliasEntry, int]]:
    """Every alias tenants are entitled to that no pool serves (of either model of a cascade),
    with how many tenants are: their requests get a 503 until a pool of its model is added
    (an alias moved to a model deployed nowhere yet, or a model's pools removed)."""
    entitled: dict[str, int] = {}
    for tenant in snapshot.tenants.values():
        for name in tenant.aliases:
            entitled[name] = entitled.get(name, 0) + 1
    found = []
    for name in sorted(entitled):
        alias = snapshot.aliases.get(name)
        if alias is not None and not alias.pools + (alias.cascade.pools if alias.cascade else ()):
            found.append((alias, entitled[name]))
    return found
