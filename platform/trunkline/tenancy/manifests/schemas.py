"""The schema of tenants-as-code manifests: one YAML document per object, told apart by ``kind``.

``tenants/schema.json`` is generated from these structs (``trunkline tenants
schema``); editors that read JSON schema can check manifests as they are typed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import msgspec

from trunkline.auth.schemas import Email, PersonName
from trunkline.kit.text import ONE_LINE
from trunkline.models import Role
from trunkline.pools.endpoint_schemas import EndpointSpec
from trunkline.pools.endpoint_schemas import Url as Url
from trunkline.pools.schemas import (
    Alias,
    BatchedTokens,
    BlockSize,
    Capacity,
    CascadeChecks,
    ContextLength,
    ModelKind,
    ModelName,
    Money,
    PoolTiers,
    PromptTokens,
    TokensPerS,
)
from trunkline.pools.schemas import ParamsB as ParamsB
from trunkline.quota.schemas import QuotaLimits
from trunkline.tenancy.schemas import (
    Description,
    DisplayName,
    Millis,
    Name,
    Priority,
    ProjectName,
    Slug,
    TierName,
)

SimulatedProfile = Literal["h100", "a100", "l40s", "xeon"]


class _Spec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="kind"):
    pass


class TierSpec(_Spec, tag="Tier"):
    """An SLA tier: latency objectives and priority (higher is served first)."""

    name: TierName
    priority: Priority
    ttft_slo_ms: Millis
    itl_slo_ms: Millis | None = None
    may_use_burst: bool = False
    description: Description = ""
    quota: QuotaLimits | None = None
    """Default limits of every tenant on the tier, its projects and keys; when given, it
    replaces the tier's quota defaults (omit it to leave them as they are)."""


class FlavorSpec(_Spec, tag="Flavor"):
    """An accelerator flavor and what an hour of it costs."""

    name: Name
    vendor: Annotated[str, msgspec.Meta(max_length=64, pattern=ONE_LINE)] = ""
    memory_gb: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    cost_per_hour: Money = 0.0


class ModelSpec(_Spec, tag="Model"):
    """A model as engines serve it, and the public aliases clients call it by."""

    name: ModelName
    type: ModelKind = "chat"
    """What the model serves (``kind`` names the document itself)."""
    context_length: ContextLength = 8192
    params_b: ParamsB | None = None
    aliases: list[Alias] = msgspec.field(default_factory=list)


class Simulated(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Simulated vLLM engines the embedded launcher starts for the pool."""

    replicas: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    profile: SimulatedProfile = "h100"


class PoolSpec(_Spec, tag="Pool"):
    """One model deployed on one flavor in one region."""

    name: Name
    model: ModelName
    flavor: Name
    region: Name
    burst: bool = False
    """Scales to zero between peaks; only tiers that may use burst pools are routed here."""
    block_size: BlockSize = 16
    cost_per_hour: Money | None = None
    """What one replica costs per hour, when not the flavor's price."""
    capacity: Capacity = 0
    """Replicas the pool may run; 0: as many as it has endpoints."""
    tokens_per_s: TokensPerS | None = None
    """Nominal output tokens/s of one replica, for cost per token."""
    min_prompt_tokens: PromptTokens = 0
    max_prompt_tokens: PromptTokens | None = None
    """Placement by prompt length: routing prefers the pool for prompts of ``min_prompt_tokens``
    up to, not including, ``max_prompt_tokens`` (None: no limit)."""
    tiers: PoolTiers | None = None
    """Placement by tier: only these tiers' requests are routed to the pool (e.g. an H100 pool
    kept for gold); null for every tier, the default of a new pool."""
    max_num_batched_tokens: BatchedTokens | None = None
    """The engines' vLLM ``--max-num-batched-tokens`` (omit: the flavor's default)."""
    endpoints: list[Url | EndpointSpec] | None = None
    """The pool's complete endpoint list, each a URL or ``{url, kv_events, kv_replay}``; omit to
    leave endpoints as they are."""
    simulated: Simulated | None = None


class CascadeSpec(_Spec, tag="Cascade"):
    """A cascading public alias: ``model`` answers first; when a check on its answer fails,
    ``escalate_to`` answers instead (see docs/cascading.md)."""

    name: Alias
    """The public alias; tenants list it in ``models`` like any other."""
    model: ModelName
    escalate_to: ModelName
    checks: CascadeChecks = msgspec.field(default_factory=CascadeChecks)


class ProjectSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: ProjectName
    description: Description | None = None
    """Left out (None): a new project's is empty, an existing one's is kept."""


class MemberSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    email: Email
    role: Role
    name: PersonName = ""


class TenantSpec(_Spec, tag="Tenant"):
    """A tenant. ``models``, when given, is its complete entitlement list; projects and members
    are added or updated, never removed (the API may have added more)."""

    slug: Slug
    name: DisplayName
    tier: Name
    regions: list[Name] = msgspec.field(default_factory=list)
    cache_isolated: bool = True
    """Salt the tenant's prompts in the engines' prefix cache so no other tenant shares it."""
    models: list[Alias] = msgspec.field(default_factory=list)
    projects: list[ProjectSpec] = msgspec.field(default_factory=list)
    members: list[MemberSpec] = msgspec.field(default_factory=list)
    quota: QuotaLimits | None = None
    """Overrides of the tier's quota defaults; when given, it replaces the tenant's overrides
    (omit it to leave them as they are, e.g. as set through the API)."""


Manifest = TierSpec | FlavorSpec | ModelSpec | PoolSpec | CascadeSpec | TenantSpec

SCHEMA_ID = "https://trunkline.dev/schemas/tenants-manifest.json"


def manifest_json_schema() -> dict[str, Any]:
    """JSON schema of one manifest document."""
    schema = msgspec.json.schema(Manifest)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Trunkline tenants manifest (one YAML document)",
        **schema,
    }


def manifest_json_schema_text() -> str:
    """The exact text of ``tenants/schema.json``."""
    return json.dumps(manifest_json_schema(), indent=2, sort_keys=True) + "\n"


def spec_name(spec: Manifest) -> str:
    return spec.slug if isinstance(spec, TenantSpec) else spec.name
