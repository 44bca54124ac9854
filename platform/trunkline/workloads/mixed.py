"""Several workloads at once: their requests merged in arrival order, their tenants united; and
one workload's requests of some tiers only.

The routing benchmark's heterogeneous-placement scenario replays long-prompt traffic (Azure
code) together with short chats (Azure conversation) onto pools of different flavors; its
tier-placement scenario sizes a pool kept for some tiers on their requests alone.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from trunkline.workloads.schemas import Workload, WorkloadRequest

__all__ = ["MixedWorkload", "TierSlice"]


@dataclass(frozen=True, slots=True)
class MixedWorkload:
    parts: Sequence[Workload]
    name: str = "mixed"

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("a mixed workload needs at least one part")
        tiers: dict[str, str] = {}
        for part in self.parts:
            for tenant, tier in part.tenants.items():
                if tiers.setdefault(tenant, tier) != tier:
                    raise ValueError(
                        f"tenant {tenant!r} has tier {tiers[tenant]!r} in one part of the mix "
                        f"and {tier!r} in {part.name!r}"
                    )

    @property
    def tenants(self) -> Mapping[str, str]:
        merged: dict[str, str] = {}
        for part in self.parts:
            merged.update(part.tenants)
        return merged

    @property
    def duration_s(self) -> float:
        return max(part.duration_s for part in self.parts)

    def requests(self) -> Iterator[WorkloadRequest]:
        return heapq.merge(*(part.requests() for part in self.parts), key=lambda r: r.arrival)


@dataclass(frozen=True, slots=True)
class TierSlice:
    """The requests of ``workload``'s tenants on ``tiers``, as they arrive in it."""

    workload: Workload
    tiers: frozenset[str]

    def __post_init__(self) -> None:
        unknown = sorted(self.tiers - set(self.workload.tenants.values()))
        if unknown:
            raise ValueError(f"{self.workload.name!r} has no tenant on tier(s) {unknown}")

    @property
    def name(self) -> str:
        return f"{self.workload.name}[{'+'.join(sorted(self.tiers))}]"

    @property
    def tenants(self) -> Mapping[str, str]:
        return {t: tier for t, tier in self.workload.tenants.items() if tier in self.tiers}

    @property
    def duration_s(self) -> float:
        return self.workload.duration_s

    def requests(self) -> Iterator[WorkloadRequest]:
        tenants = self.tenants
        return (r for r in self.workload.requests() if r.tenant in tenants)
