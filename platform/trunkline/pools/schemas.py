"""Wire schemas of the catalog (msgspec, apart from the ORM)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from trunkline import models as orm
from trunkline.kit.text import CATALOG_NAME, ONE_LINE
from trunkline.pools.endpoint_schemas import Endpoint
from trunkline.tenancy.schemas import Name

ModelName = Annotated[
    str,
    msgspec.Meta(
        pattern=CATALOG_NAME,
        max_length=200,
        description="the name engines serve the model under (vLLM --served-model-name)",
        examples=["llama-3.1-8b-instruct"],
    ),
]
Alias = Annotated[
    str,
    msgspec.Meta(
        pattern=CATALOG_NAME,
        max_length=200,
        description="the public model name clients ask for",
        examples=["llama-3.1-8b"],
    ),
]
ModelKind = Literal["chat", "completion", "embedding"]
Money = Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
BlockSize = Annotated[int, msgspec.Meta(ge=1, le=1024)]
Capacity = Annotated[
    int, msgspec.Meta(ge=0, le=100_000, description="replicas the pool may run; 0: its endpoints")
]
TokensPerS = Annotated[
    float, msgspec.Meta(gt=0, le=10_000_000, description="nominal output tokens/s per replica")
]
PromptTokens = Annotated[
    int,
    msgspec.Meta(ge=0, le=10_000_000, description="a prompt length in tokens (placement)"),
]


BatchedTokens = Annotated[
    int,
    msgspec.Meta(ge=1, le=10_000_000, description="the engines' vLLM --max-num-batched-tokens"),
]
PoolTiers = Annotated[list[Name], msgspec.Meta(min_length=1, max_length=100)]
"""The tiers that may use a pool: at least one (null, not an empty list, means every tier)."""


def prompt_range_problem(low: int, high: int | None) -> str | None:
    """What is wrong with a pool's prompt-length range (``max_prompt_tokens`` must exceed
    ``min_prompt_tokens``, or no prompt fits), None when it holds some length."""
    if high is not None and high <= low:
        return f"must exceed min_prompt_tokens ({low})"
    return None


def money(value: float) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.0001"))


class Flavor(msgspec.Struct):
    id: uuid.UUID
    name: str
    vendor: str
    memory_gb: int
    cost_per_hour: float

    @classmethod
    def of(cls, flavor: orm.AcceleratorFlavor) -> Flavor:
        return cls(
            flavor.id, flavor.name, flavor.vendor, flavor.memory_gb, float(flavor.cost_per_hour)
        )


class FlavorCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    vendor: Annotated[str, msgspec.Meta(max_length=64, pattern=ONE_LINE)] = ""
    memory_gb: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    cost_per_hour: Money = 0.0


class FlavorUpdate(msgspec.Struct, forbid_unknown_fields=True):
    vendor: Annotated[str, msgspec.Meta(max_length=64, pattern=ONE_LINE)] | UnsetType = UNSET
    memory_gb: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | UnsetType = UNSET
    cost_per_hour: Money | UnsetType = UNSET


class Model(msgspec.Struct):
    id: uuid.UUID
    name: str
    kind: str
    context_length: int
    params_b: float | None
    aliases: list[str]

    @classmethod
    def of(cls, model: orm.Model, aliases: list[str]) -> Model:
        return cls(
            model.id, model.name, model.kind, model.context_length, model.params_b, sorted(aliases)
        )


ContextLength = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]
ParamsB = Annotated[float, msgspec.Meta(gt=0, le=100_000)]


class ModelCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: ModelName
    kind: ModelKind = "chat"
    context_length: ContextLength = 8192
    params_b: ParamsB | None = None
    aliases: list[Alias] = msgspec.field(default_factory=list)


class ModelUpdate(msgspec.Struct, forbid_unknown_fields=True):
    kind: ModelKind | UnsetType = UNSET
    context_length: ContextLength | UnsetType = UNSET
    params_b: ParamsB | UnsetType | None = UNSET


class CascadeChecks(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """When the first (small) model's answer is not good enough; see docs/cascading.md."""

    truncation: bool = True
    """Escalate when the first answer hit its token limit (``finish_reason=length``)."""
    refusal: bool = True
    """Escalate when the first answer refuses."""
    min_mean_logprob: Annotated[float, msgspec.Meta(ge=-100, le=0)] | None = None
    """Escalate when the answer's mean token log-probability is below this (e.g. -1.0)."""
    min_confidence: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    """Ask the first model to rate its confidence in [0, 1]; escalate below this (chat)."""

    def stored(self) -> dict[str, object]:
        """The form kept in the database and the snapshot (``CascadeEntry`` field names)."""
        return {
            "on_truncation": self.truncation,
            "on_refusal": self.refusal,
            "min_mean_logprob": self.min_mean_logprob,
            "min_confidence": self.min_confidence,
        }

    @classmethod
    def of_stored(cls, stored: dict[str, Any]) -> CascadeChecks:
        return cls(
            truncation=bool(stored.get("on_truncation", True)),
            refusal=bool(stored.get("on_refusal", True)),
            min_mean_logprob=stored.get("min_mean_logprob"),
            min_confidence=stored.get("min_confidence"),
        )


class Cascade(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Makes an alias cascading: its model answers first, ``escalate_to`` when a check fails."""

    escalate_to: ModelName
    checks: CascadeChecks = msgspec.field(default_factory=CascadeChecks)


AliasPools = Annotated[list[Name], msgspec.Meta(min_length=1)]
"""The pools an alias may use: at least one (null, not an empty list, means every pool)."""


class AliasCreate(msgspec.Struct, forbid_unknown_fields=True):
    alias: Alias
    model: ModelName
    pools: AliasPools | None = None
    """Pools the alias may use (they must serve its model); omit for every such pool."""
    cascade: Cascade | None = None


class AliasUpdate(msgspec.Struct, forbid_unknown_fields=True):
    model: ModelName | UnsetType = UNSET
    pools: AliasPools | UnsetType | None = UNSET
    cascade: Cascade | UnsetType | None = UNSET


class AliasView(msgspec.Struct):
    alias: str
    model: str
    pools: list[str] | None
    cascade: Cascade | None


class Pool(msgspec.Struct):
    id: uuid.UUID
    name: str
    model: str
    flavor: str
    region: str
    burst: bool
    block_size: int
    endpoints: list[Endpoint]
    cost_per_hour: float
    """What one replica costs per hour: the pool's own price, else its flavor's."""
    own_cost_per_hour: float | None
    """The pool's own price, if it overrides its flavor's."""
    capacity: int
    tokens_per_s: float | None
    min_prompt_tokens: int = 0
    max_prompt_tokens: int | None = None
    """Placement by prompt length: the pool is for prompts of ``min_prompt_tokens`` up to, not
    including, ``max_prompt_tokens`` (None: no limit)."""
    tiers: list[str] | None = None
    """Placement by tier: the only tiers whose requests may use the pool (None: every tier)."""
    max_num_batched_tokens: int | None = None
    """The engines' vLLM ``--max-num-batched-tokens`` (None: the flavor's default)."""


class PoolCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    model: ModelName
    flavor: Name
    region: Name
    burst: bool = False
    """Scales to zero between peaks; only tiers that may use burst pools are routed here."""
    block_size: BlockSize = 16
    cost_per_hour: Money | None = None
    """Overrides the flavor's cost per hour (e.g. reserved or spot prices)."""
    capacity: Capacity = 0
    tokens_per_s: TokensPerS | None = None
    min_prompt_tokens: PromptTokens = 0
    """Placement by prompt length: routing prefers this pool for prompts of at least this many
    tokens (and below ``max_prompt_tokens``); other prompts go elsewhere while another pool of
    the alias takes them."""
    max_prompt_tokens: PromptTokens | None = None
    """Prompts of this many tokens or more prefer other pools (None: no upper limit)."""
    tiers: PoolTiers | None = None
    """Placement by tier: only these tiers' requests are routed to the pool (e.g. an H100 pool
    kept for gold); omit for every tier."""
    max_num_batched_tokens: BatchedTokens | None = None
    """What the engines run with (vLLM ``--max-num-batched-tokens``), for the gateway's TTFT
    prediction; omit for the flavor's vLLM default."""


class PoolUpdate(msgspec.Struct, forbid_unknown_fields=True):
    model: ModelName | UnsetType = UNSET
    flavor: Name | UnsetType = UNSET
    region: Name | UnsetType = UNSET
    burst: bool | UnsetType = UNSET
    block_size: BlockSize | UnsetType = UNSET
    cost_per_hour: Money | UnsetType | None = UNSET
    """``null`` goes back to the flavor's price."""
    capacity: Capacity | UnsetType = UNSET
    tokens_per_s: TokensPerS | UnsetType | None = UNSET
    min_prompt_tokens: PromptTokens | UnsetType = UNSET
    max_prompt_tokens: PromptTokens | UnsetType | None = UNSET
    """``null`` removes the upper limit."""
    tiers: PoolTiers | UnsetType | None = UNSET
    """``null`` opens the pool to every tier."""
    max_num_batched_tokens: BatchedTokens | UnsetType | None = UNSET
    """``null`` goes back to the flavor's default."""


class Entitlement(msgspec.Struct):
    tenant_id: uuid.UUID
    alias: str
    model: str
    granted_at: datetime


class AvailableModel(msgspec.Struct):
    alias: str
    model: str
    kind: str
    context_length: int
    tenant_count: int
    """How many of the caller's tenants (every tenant, for a platform admin) are entitled to
    this alias: ``GET /tenants?entitled_to=ALIAS`` lists them, a page at a time. A count, not
    the ids: a shared model's entry would carry thousands of them for a platform admin."""
