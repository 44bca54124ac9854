"""The endpoints a request may use: filters for model, residency and tier over the snapshot."""

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

__all__ = ["Candidate", "eligible"]


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
        if pool.burst and not tier.may_use_burst:
            continue
        out.extend(Candidate(pool, endpoint) for endpoint in pool.endpoints)
    return out
