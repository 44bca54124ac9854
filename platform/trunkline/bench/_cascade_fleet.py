"""Fleet runs behind the cascade benchmark: requests as a workload, capacity at an SLO, and
the fewest replicas that carry a load (virtual time, the gateway's own routing policy)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trunkline.fleet import FleetResult, PoolSpec
    from trunkline.workloads.schemas import WorkloadRequest

__all__ = ["Capacity", "capacity", "run_on"]

_BISECTIONS = 6


@dataclass(frozen=True, slots=True)
class RequestList:
    """A workload made of given requests, in arrival order."""

    items: Sequence[WorkloadRequest]
    tenants: Mapping[str, str]
    name: str = "cascade-requests"

    @property
    def duration_s(self) -> float:
        return max((r.arrival for r in self.items), default=0.0)

    def requests(self) -> Iterator[WorkloadRequest]:
        return iter(self.items)


@dataclass(frozen=True, slots=True)
class Capacity:
    rate: float
    """Requests per second one replica carries while meeting the SLO."""
    result: FleetResult
    """The one-replica run at that rate."""


def run_on(
    pool: PoolSpec,
    replicas: int,
    requests: Sequence[WorkloadRequest],
    tenants: Mapping[str, str],
    *,
    policy: str,
    seed: int,
) -> FleetResult:
    from trunkline.fleet import FleetSpec, simulate
    from trunkline.gateway.routing import make_policy

    spec = FleetSpec(pools=(replace(pool, replicas=replicas),), seed=seed)
    return simulate(spec, make_policy(policy), RequestList(list(requests), tenants))


def capacity(
    pool: PoolSpec,
    requests: Sequence[WorkloadRequest],
    tenants: Mapping[str, str],
    *,
    attainment: float,
    policy: str,
    seed: int,
) -> Capacity:
    """The highest arrival rate of this request mix one replica serves within the tier's SLO
    (``slo_attainment >= attainment``): the same requests, their arrival times compressed or
    stretched, bisected on a log scale."""
    span = max(r.arrival for r in requests) - min(r.arrival for r in requests)
    base = (len(requests) - 1) / span if span > 0 else float(len(requests))
    results: dict[float, FleetResult] = {}

    def meets(speed: float) -> bool:
        scaled = [replace(r, arrival=r.arrival / speed) for r in requests]
        results[speed] = run_on(pool, 1, scaled, tenants, policy=policy, seed=seed)
        return results[speed].metrics()["slo_attainment"] >= attainment

    low, high = 1.0, 1.0
    if meets(1.0):
        while meets(high * 2):
            low = high = high * 2
        high *= 2
    else:
        while not meets(low / 2) and low > 1e-6:
            high = low = low / 2
        low /= 2
    for _ in range(_BISECTIONS):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if meets(middle) else (low, middle)
    return Capacity(base * low, results[low])
