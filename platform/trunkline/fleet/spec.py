"""What a simulated fleet is made of: pools of engines per flavor and region, tiers, prices.

:func:`build_snapshot` turns a :class:`FleetSpec` and a workload's tenants into the same
:class:`~trunkline.snapshot.Snapshot` the gateway routes on, so the simulator filters endpoints
with the gateway's own :func:`~trunkline.gateway.routing.eligible`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from trunkline.engines.profiles import AcceleratorProfile, get_profile
from trunkline.gateway.routing.phases import ROLES
from trunkline.pools.schemas import prompt_range_problem
from trunkline.snapshot import (
    AliasEntry,
    EndpointEntry,
    PoolEntry,
    Snapshot,
    TenantEntry,
    TierEntry,
)

__all__ = ["DEFAULT_TIERS", "FLAVOR_PRICES", "FleetSpec", "PoolSpec", "build_snapshot"]

# The tier defaults of DESIGN.md and tenants/tiers.yaml.
DEFAULT_TIERS: Mapping[str, TierEntry] = {
    "gold": TierEntry("gold", 100, 500, 50, True),
    "silver": TierEntry("silver", 50, 2000, 100, False),
    "bronze": TierEntry("bronze", 10, 10000, None, False),
}

# USD per accelerator-hour. Assumed round figures of 2025 public-cloud on-demand prices (they vary
# by provider and commitment by 2-3x): set the real price of each pool with PoolSpec.cost_per_hour.
FLAVOR_PRICES: Mapping[str, float] = {
    "h100": 3.00,
    "h200": 3.80,
    "a100": 1.80,
    "l40s": 1.00,
    "gaudi3": 2.00,
    "xeon": 0.60,  # one Xeon 6 socket's share of a cloud instance
}


@dataclass(frozen=True, slots=True)
class PoolSpec:
    name: str
    profile: str | AcceleratorProfile = "h100"
    replicas: int = 1
    region: str = "eu-west"
    burst: bool = False
    cost_per_hour: float | None = None
    """Per replica; default: the flavor's entry in :data:`FLAVOR_PRICES`."""
    kv_scale: float = 1.0
    """KV offload to host memory (as Mooncake's pooled DRAM cache or vLLM's CPU offloading):
    each engine's KV cache holds ``kv_scale`` times the accelerator's blocks. An approximation:
    offloaded blocks count as prefix hits with no transfer time, and the larger cache also admits
    more running sequences. For Llama-3-8B (128 KiB of KV per token) on an H100 (450k tokens),
    ``kv_scale=4`` is about 165 GiB of host memory per replica."""
    min_prompt_tokens: int = 0
    max_prompt_tokens: int | None = None
    """Placement by prompt length: the pool is for prompts of ``min_prompt_tokens`` up to, not
    including, ``max_prompt_tokens`` (the ``prompt-length`` routing filter prefers it for them)."""
    tiers: tuple[str, ...] | None = None
    """Placement by tier: the only tiers whose requests may use the pool (None: every tier)."""
    max_num_batched_tokens: int | None = None
    """vLLM's ``--max-num-batched-tokens`` for the pool's engines (default: the flavor's). It caps
    a step's tokens, so the prefill chunk that shares a step with everyone's decoding: smaller
    chunks trade prefill speed for time per output token."""
    role: str = "both"
    """Prefill/decode disaggregation: ``prefill`` pools prefill prompts of their prompt range
    (counted as the tokens the serving engine lacks) for the ``decode`` and ``both`` pools,
    which serve every request (see :mod:`trunkline.gateway.routing.phases`)."""

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"pool {self.name!r} needs at least one replica")
        if not self.kv_scale >= 1.0:
            raise ValueError(f"pool {self.name!r}: kv_scale must be at least 1")
        problem = prompt_range_problem(self.min_prompt_tokens, self.max_prompt_tokens)
        if problem is not None:
            raise ValueError(f"pool {self.name!r}: max_prompt_tokens {problem}")
        if self.tiers is not None and not self.tiers:
            raise ValueError(f"pool {self.name!r}: tiers must name one at least (None: every)")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ValueError(f"pool {self.name!r}: max_num_batched_tokens must be at least 1")
        if self.role not in ROLES:
            raise ValueError(f"pool {self.name!r}: role must be one of {', '.join(ROLES)}")

    @property
    def engine_profile(self) -> AcceleratorProfile:
        profile = get_profile(self.profile) if isinstance(self.profile, str) else self.profile
        if self.kv_scale != 1.0:
            blocks = int(profile.kv_cache_blocks * self.kv_scale)
            profile = dataclasses.replace(profile, kv_cache_blocks=blocks)
        if self.max_num_batched_tokens is not None:
            profile = dataclasses.replace(
                profile, max_num_batched_tokens=self.max_num_batched_tokens
            )
        return profile

    @property
    def hourly_cost(self) -> float:
        if self.cost_per_hour is not None:
            return self.cost_per_hour
        return FLAVOR_PRICES.get(self.engine_profile.name, 0.0)


@dataclass(frozen=True, slots=True)
class FleetSpec:
    pools: tuple[PoolSpec, ...]
    alias: str = "chat"
    model: str = "llama-3-8b"
    tiers: Mapping[str, TierEntry] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    tenant_regions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Residency: the regions a tenant's requests may run in (absent: anywhere)."""
    seed: int = 0
    kv_transfer_bytes_per_s: float = 12.5e9
    """Each engine's network link for KV transfers (used with prefill pools): 100 Gb/s, an RDMA
    NIC per accelerator at the low end. After its prefill, a prompt's KV crosses the prefill
    engine's link and the serving engine's, each carrying one prompt at a time, before the
    serving engine can start it."""

    @classmethod
    def uniform(
        cls, profile: str, replicas: int, *, seed: int = 0, kv_scale: float = 1.0
    ) -> FleetSpec:
        """One pool of ``replicas`` identical engines."""
        pool = PoolSpec(f"{profile}-pool", profile, replicas, kv_scale=kv_scale)
        return cls(pools=(pool,), seed=seed)


NOMINAL_BATCH = 64
NOMINAL_CONTEXT_TOKENS = 1024


def nominal_tokens_per_s(profile: AcceleratorProfile) -> float:
    """Output tokens/s of one replica decoding :data:`NOMINAL_BATCH` sequences of
    :data:`NOMINAL_CONTEXT_TOKENS` tokens: the pool's ``tokens_per_s`` in the fleet's snapshot
    (cost per token for the ``cost`` scorer, relative capacity for load balancing)."""
    batch = NOMINAL_BATCH
    step = profile.step_time(batch, batch, 0, batch * NOMINAL_CONTEXT_TOKENS)
    return batch / step


def endpoint_id(pool: str, index: int) -> str:
    return f"{pool}/{index}"


def build_snapshot(spec: FleetSpec, tenants: Mapping[str, str]) -> Snapshot:
    pools = {
        pool.name: PoolEntry(
            name=pool.name,
            model=spec.model,
            accelerator=pool.engine_profile.name,
            region=pool.region,
            burst=pool.burst,
            block_size=pool.engine_profile.block_size,
            kv_capacity_tokens=pool.engine_profile.kv_cache_tokens,
            min_prompt_tokens=pool.min_prompt_tokens,
            max_prompt_tokens=pool.max_prompt_tokens,
            tiers=pool.tiers,
            max_num_batched_tokens=pool.max_num_batched_tokens,
            role=pool.role,
            cost_per_hour=pool.hourly_cost,
            tokens_per_s=nominal_tokens_per_s(pool.engine_profile),
            endpoints=tuple(
                EndpointEntry(endpoint_id(pool.name, i), f"sim://{endpoint_id(pool.name, i)}")
                for i in range(pool.replicas)
            ),
        )
        for pool in spec.pools
    }
    alias = AliasEntry(spec.alias, spec.model, "chat", tuple(pools))
    unknown = sorted(set(tenants.values()) - set(spec.tiers))
    if unknown:
        raise ValueError(f"the workload uses tiers the fleet does not define: {unknown}")
    placed = sorted({t for pool in spec.pools for t in pool.tiers or ()} - set(spec.tiers))
    if placed:
        raise ValueError(f"pools are placed for tiers the fleet does not define: {placed}")
    tenant_entries = {
        name: TenantEntry(
            name, name, tier, tuple(spec.tenant_regions.get(name, ())), frozenset({spec.alias})
        )
        for name, tier in tenants.items()
    }
    return Snapshot(
        version=1,
        published_at=0.0,
        tiers=dict(spec.tiers),
        tenants=tenant_entries,
        keys={},
        aliases={spec.alias: alias},
        pools=pools,
    )
