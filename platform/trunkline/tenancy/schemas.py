"""Wire schemas of tiers, tenants, members and projects (msgspec, apart from the ORM)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from trunkline import models as orm
from trunkline.auth.schemas import Email, PersonName
from trunkline.kit.text import ACCOUNT_NAME, END, PARAGRAPHS
from trunkline.models import Role

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9](?:[a-z0-9.-]{0,62}[a-z0-9])?" + END)]
"""Lower-case names of tiers, flavors, pools, regions: letters, digits, ``-`` and ``.``."""
TierName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9](?:[a-z0-9.-]{0,30}[a-z0-9])?" + END,
        description="lower-case letters, digits, '-' and '.', at most 32 characters",
        examples=["gold"],
    ),
]
"""A tier's own name: a :data:`Name` that fits the 32 characters the database keeps of it."""
Slug = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?" + END,
        description="lower-case letters, digits and '-', at most 63 characters",
        examples=["acme"],
    ),
]
ProjectName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}" + END)]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=ACCOUNT_NAME)]
"""A tenant's name: its bills' account name."""
Description = Annotated[str, msgspec.Meta(max_length=500, pattern=PARAGRAPHS)]
Millis = Annotated[int, msgspec.Meta(gt=0, le=3_600_000)]
Priority = Annotated[
    int, msgspec.Meta(ge=0, le=1000, description="higher is served first (gold 100, bronze 10)")
]


def given(update: msgspec.Struct) -> dict[str, Any]:
    """The fields of a partial update that the caller actually sent."""
    return {
        name: value for name, value in msgspec.structs.asdict(update).items() if value is not UNSET
    }


class Tier(msgspec.Struct):
    id: uuid.UUID
    name: str
    description: str
    priority: int
    ttft_slo_ms: int
    itl_slo_ms: int | None
    may_use_burst: bool

    @classmethod
    def of(cls, tier: orm.Tier) -> Tier:
        return cls(
            tier.id,
            tier.name,
            tier.description,
            tier.priority,
            tier.ttft_slo_ms,
            tier.itl_slo_ms,
            tier.may_use_burst,
        )


class TierCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: TierName
    priority: Priority
    ttft_slo_ms: Millis
    itl_slo_ms: Millis | None = None
    may_use_burst: bool = False
    description: Description = ""


class TierUpdate(msgspec.Struct, forbid_unknown_fields=True):
    priority: Priority | UnsetType = UNSET
    ttft_slo_ms: Millis | UnsetType = UNSET
    itl_slo_ms: Millis | UnsetType | None = UNSET
    may_use_burst: bool | UnsetType = UNSET
    description: Description | UnsetType = UNSET


class Tenant(msgspec.Struct):
    id: uuid.UUID
    slug: str
    name: str
    tier: str
    regions: list[str]
    created_at: datetime
    cache_isolated: bool
    """Whether the tenant's prompts get their own prefix cache on shared engines."""

    @classmethod
    def of(cls, tenant: orm.Tenant) -> Tenant:
        return cls(
            tenant.id, tenant.slug, tenant.name, tenant.tier.name, list(tenant.regions),
            tenant.created_at, tenant.cache_isolated,
        )  # fmt: skip


class TenantCreate(msgspec.Struct, forbid_unknown_fields=True):
    slug: Slug
    name: DisplayName
    tier: Name
    regions: list[Name] = msgspec.field(default_factory=list)
    """Regions the tenant's requests may be served in; empty means anywhere."""
    cache_isolated: bool = True
    """Salt the tenant's prompts in engines' prefix cache (vLLM ``cache_salt``) so no other
    tenant can share, or probe through timing, what it cached; off shares the cache."""


class TenantUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: DisplayName | UnsetType = UNSET
    tier: Name | UnsetType = UNSET
    regions: list[Name] | UnsetType = UNSET
    cache_isolated: bool | UnsetType = UNSET


class Member(msgspec.Struct):
    user_id: uuid.UUID
    email: str
    name: str
    role: Role
    joined_at: datetime

    @classmethod
    def of(cls, membership: orm.Membership, user: orm.User) -> Member:
        return cls(user.id, user.email, user.name, membership.role, membership.created_at)


class MemberAdd(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    role: Role
    name: PersonName = ""


class MemberUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: Role


class Project(msgspec.Struct):
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    description: str
    created_at: datetime

    @classmethod
    def of(cls, project: orm.Project) -> Project:
        return cls(
            project.id, project.tenant_id, project.name, project.description, project.created_at
        )


class ProjectCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: ProjectName
    description: Description = ""
