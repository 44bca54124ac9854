"""The endpoints a request may use: filters for model, residency and tier (burst pools, pools
placed for other tiers) over the snapshot."""

from __future__ import annotations

from dataclasses import dataclass

from trunkline.snapshot import (
    AliasEntry,
    EndpointEntry,
    PoolEntry,
    Snapshot,
    TenantEntry,
    TierEntry,
)

__all__ = ["Candidate", "eligible", "open_to"]


@dataclass(frozen=True, slots=True)
class Candidate:
    pool: PoolEntry
    endpoint: EndpointEntry


def eligible(
    snapshot: Snapshot, alias: AliasEntry, tenant: TenantEntry, tier: TierEntry
) -> list[Candidate]:
    """Every endpoint that serves the alias inside the tenant's regions and tier."""
    regions = set(tenant.regions)
    out: list[Candidate] = []
    for pool_name in alias.pools:
        pool = snapshot.pools.get(pool_name)
        if pool is None or (regions and pool.region not in regions):
            continue
        if (pool.burst and not tier.may_use_burst) or not open_to(pool.tiers, tier.name):
            continue
        out.extend(Candidate(pool, endpoint) for endpoint in pool.endpoints)
    return out


def open_to(tiers: tuple[str, ...] | frozenset[str] | None, tier: str) -> bool:
    """Whether a pool placed for ``tiers`` (None: every tier) may serve ``tier``'s requests."""
    return tiers is None or tier in tiers
