"""Wire schemas of quotas (msgspec): what admins set, and what callers read back.

A quota document holds limits per scope. In a **tier** it sets the defaults of every tenant on
the tier (an absent or ``null`` limit: no limit). In a **tenant** or **key** document it
overrides them: an absent limit is inherited, ``null`` removes it (unlimited), a number
replaces it. Money is in the price book's currency (``currency`` in the read views); the
gateway counts billionths of it. ``cost_per_month_usd`` is the deprecated name of
``cost_per_month`` from when every budget read as dollars: ``policy.priced`` takes it while the
price book is in US dollars and refuses it otherwise.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

Count = Annotated[int, msgspec.Meta(ge=0, le=10**15)]
Money = Annotated[float, msgspec.Meta(ge=0, le=1_000_000_000)]
DeprecatedUsd = Annotated[
    Money | None,
    msgspec.Meta(
        description="Deprecated: cost_per_month, accepted only while the price book is in USD.",
        extra_json_schema={"deprecated": True},
    ),
]


class ScopeLimits(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Limits of one scope. Absent: inherited; null: unlimited; a number: that limit."""

    requests_per_minute: Count | UnsetType | None = UNSET
    tokens_per_minute: Count | UnsetType | None = UNSET
    """Prompt plus completion tokens per UTC minute."""
    concurrent_requests: Count | UnsetType | None = UNSET
    tokens_per_day: Count | UnsetType | None = UNSET
    """Per UTC day."""
    tokens_per_month: Count | UnsetType | None = UNSET
    """Per UTC calendar month."""
    cost_per_month: Money | UnsetType | None = UNSET
    """List price of the tokens used in the UTC calendar month, in the price book's currency."""
    cost_per_month_usd: DeprecatedUsd | UnsetType = UNSET
    """Deprecated alias of ``cost_per_month`` (US dollars): accepted on writes while the price
    book is in USD, never returned (the repository stores budgets under this name, which the
    previous release reads: ``quota.repository.STORED_BUDGET``)."""


class QuotaLimits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Limits per scope: of the tenant as a whole, of each of its projects, of each key."""

    tenant: ScopeLimits = msgspec.field(default_factory=ScopeLimits)
    project: ScopeLimits = msgspec.field(default_factory=ScopeLimits)
    key: ScopeLimits = msgspec.field(default_factory=ScopeLimits)


class LimitUsage(msgspec.Struct):
    limit: int | float | None
    """``null``: no limit."""
    used: int | float
    remaining: int | float | None
    resets_at: datetime | None
    """When the window ends (``null`` for concurrency)."""


class ScopeUsage(msgspec.Struct, omit_defaults=True):
    """What a scope used in its current windows, against its limits."""

    requests_per_minute: LimitUsage
    tokens_per_minute: LimitUsage
    concurrent_requests: LimitUsage
    tokens_per_day: LimitUsage
    tokens_per_month: LimitUsage
    cost_per_month: LimitUsage
    """In the price book's currency (``currency`` beside it)."""
    cost_per_month_usd: LimitUsage | UnsetType = UNSET
    """Deprecated: ``cost_per_month`` again, given while the price book is in USD alone."""


class TenantQuota(msgspec.Struct):
    tenant_id: uuid.UUID
    tier: str
    overrides: QuotaLimits
    """What this tenant sets over its tier's defaults."""
    limits: QuotaLimits
    """In force: the tier's defaults with the overrides applied."""
    usage: ScopeUsage | None
    """The tenant's own counters; ``null`` while the quota store is unreachable."""
    currency: str
    """The price book's (ISO 4217), which cost budgets are amounts of."""


class KeyQuota(msgspec.Struct):
    key_id: str
    tier: str
    overrides: ScopeLimits
    """Set for this key (or for the key it was rotated from)."""
    limits: dict[str, ScopeLimits]
    """In force for the ``key``, its ``project`` and its ``tenant``: a request must pass all."""
    usage: dict[str, ScopeUsage] | None
    """The counters of those three scopes; ``null`` while the quota store is unreachable."""
    currency: str
    """The price book's (ISO 4217), which cost budgets are amounts of."""
