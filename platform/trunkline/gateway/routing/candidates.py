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

__all__ = ["Candidate", "eligible", "open_pools", "open_to"]


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
