"""Wire schema of the gateway snapshot (msgspec, encoded as msgpack)."""

from __future__ import annotations

import msgspec

from trunkline.auth.secrets import without_password
from trunkline.quota.limits import QuotaBook


class TierEntry(msgspec.Struct, frozen=True):
    name: str
    priority: int
    ttft_slo_ms: int
    itl_slo_ms: int | None
    may_use_burst: bool


def pin_applies(pinned: str, pinned_priority: int, tier: str, tier_priority: int) -> bool:
    """Whether a key pinned to tier ``pinned`` runs in it when its tenant is on ``tier``: when
    that is its tenant's tier or below it (a batch key on bronze). The pin was checked when the
    key was made; the tenant may have moved down since, and a pin must never reach above it
    (priority, burst pools, pools kept for a tier, the tier's key limits). The one rule the
    gateway serves a request by and the control plane sets the key's limits by."""
    return pinned == tier or pinned_priority < tier_priority


class TenantEntry(msgspec.Struct, frozen=True):
    id: str
    slug: str
    tier: str
    regions: tuple[str, ...]
    aliases: frozenset[str]
    cache_salt: str | None = None
    """Sent to engines as vLLM ``cache_salt`` when the tenant's prefix cache is isolated."""


class KeyEntry(msgspec.Struct, frozen=True):
    key_id: str
    secret_hash: str
    tenant_id: str
    project_id: str
    allowed_aliases: frozenset[str] | None
    tier: str | None
    expires_at: float | None
    """Seconds since the epoch; checked per request so expiry needs no republish."""


class EndpointEntry(msgspec.Struct, frozen=True):
    id: str
    url: str
    kv_events: str | None = None
    """ZMQ address of the engine's KV-cache event publisher (``tcp://host:port``), if it has one."""
    kv_replay: str | None = None
    """ZMQ address where that publisher replays missed events (vLLM's ``replay_endpoint``)."""

    @property
    def shown_url(self) -> str:
        """``url`` as logged and metered: without the password it may hold
        (``http://user:password@host``, for a proxy in front of the engine)."""
        return without_password(self.url)


class PoolEntry(msgspec.Struct, frozen=True):
    name: str
    model: str
    accelerator: str
    region: str
    burst: bool
    block_size: int
    endpoints: tuple[EndpointEntry, ...]
    cost_per_hour: float = 0.0
    """Price of one replica per hour (the pool's own, else its flavor's)."""
    tokens_per_s: float | None = None
    """Nominal output tokens/s of one replica, for cost per token; None when unknown."""
    capacity: int = 0
    """Replicas the pool may run (0: as many as it has endpoints)."""
    kv_capacity_tokens: int = 0
    """Tokens one replica's KV cache holds, for the approximate prefix index (0: unknown)."""
    min_prompt_tokens: int = 0
    max_prompt_tokens: int | None = None
    """The pool is placed for prompts of ``min_prompt_tokens`` up to, not including,
    ``max_prompt_tokens`` (None: no limit); the ``prompt-length`` routing filter."""
    tiers: tuple[str, ...] | None = None
    """The only tiers whose requests may use the pool (None: every tier); the ``tier-pools``
    routing filter."""
    max_num_batched_tokens: int | None = None
    """The engines' vLLM ``--max-num-batched-tokens`` (None: the flavor's default), for TTFT
    prediction."""
    role: str = "both"
    """Which phases its engines run: ``both``, ``prefill`` (they prefill prompts for other
    pools' engines) or ``decode`` (see :mod:`trunkline.gateway.routing.phases`)."""


class CascadeEntry(msgspec.Struct, frozen=True):
    """A cascading alias: the alias's own model answers first; these checks on its answer
    decide whether to ask ``model`` (the large one) instead. See docs/cascading.md."""

    model: str
    """Served name of the model escalated to."""
    pools: tuple[str, ...]
    """Pools serving ``model``."""
    on_truncation: bool = True
    """Escalate when the first answer stopped at its token limit (``finish_reason=length``)."""
    on_refusal: bool = True
    """Escalate when the first answer refuses (``I can't help with that``, ...)."""
    min_mean_logprob: float | None = None
    """Escalate when the mean token log-probability of the first answer is below this."""
    min_confidence: float | None = None
    """Ask the first model to rate its confidence in [0, 1]; escalate below this (chat only)."""
    context_length: int | None = None
    """``model``'s context window in tokens, from the catalog (None: not known)."""


class AliasEntry(msgspec.Struct, frozen=True):
    alias: str
    model: str
    kind: str
    pools: tuple[str, ...]
    cascade: CascadeEntry | None = None
    """Set on a cascading alias: ``model`` answers first, ``cascade.model`` on escalation."""
    context_length: int | None = None
    """``model``'s context window in tokens, from the catalog (None: not known): no answer may
    ask for more tokens than it, and none reserves more quota than it."""
    created: int = 0
    """When the alias was created (Unix seconds): ``/v1/models``' ``created``, which must not
    change when the configuration does."""


class Snapshot(msgspec.Struct, frozen=True):
    version: int
    published_at: float
    tiers: dict[str, TierEntry]
    tenants: dict[str, TenantEntry]
    keys: dict[str, KeyEntry]
    aliases: dict[str, AliasEntry]
    pools: dict[str, PoolEntry]
    quotas: QuotaBook = msgspec.field(default_factory=QuotaBook)
    """Resolved quota limits per tenant, project and key, and prices for cost budgets (in the
    price book's currency, which the book names)."""

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(version=0, published_at=0.0, tiers={}, tenants={}, keys={}, aliases={}, pools={})
