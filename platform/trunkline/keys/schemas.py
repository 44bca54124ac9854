"""Wire schemas of API keys. No schema here ever carries the key's hash."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from trunkline import models as orm
from trunkline.auth.secrets import API_KEY_PREFIX
from trunkline.kit.ids import utcnow
from trunkline.kit.text import ONE_LINE
from trunkline.pools.schemas import Alias
from trunkline.tenancy.schemas import Name

KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=ONE_LINE)]
MAX_TTL_DAYS = 3650
"""The longest a key may live, however its expiry is given (ten years)."""
TtlDays = Annotated[int, msgspec.Meta(ge=1, le=MAX_TTL_DAYS)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class ApiKey(msgspec.Struct):
    key_id: str
    prefix: str
    """How the secret begins (``tlk_<key_id>_``), to recognise a key without its secret."""
    name: str
    tenant_id: uuid.UUID
    project_id: uuid.UUID
    project: str
    allowed_models: list[str] | None
    """``null`` means every alias the tenant is entitled to."""
    tier: str | None
    status: Literal["active", "revoked", "expired"]
    created_by: uuid.UUID | None
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: orm.ApiKey, project: str) -> ApiKey:
        return cls(
            key_id=key.key_id,
            prefix=f"{API_KEY_PREFIX}_{key.key_id}_",
            name=key.name,
            tenant_id=key.tenant_id,
            project_id=key.project_id,
            project=project,
            allowed_models=None if key.allowed_models is None else list(key.allowed_models),
            tier=key.tier_name,
            status=status(key),
            created_by=key.created_by,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
        )


def status(key: orm.ApiKey) -> Literal["active", "revoked", "expired"]:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= utcnow():
        return "expired"
    return "active"


class ApiKeyCreated(msgspec.Struct):
    secret: str
    """The whole key. Shown this once; Trunkline keeps only a keyed hash."""
    key: ApiKey


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    project_id: uuid.UUID
    name: KeyName
    allowed_models: list[Alias] | None = None
    """Aliases the key may call, each entitled to the tenant; omit for all of them."""
    tier: Name | None = None
    """Pin the key to a tier of lower or equal priority than the tenant's."""
    expires_at: AwareDatetime | None = None
    ttl_days: TtlDays | None = None
    """Alternative to ``expires_at``; give at most one of the two."""


MAX_BATCH = 1000


class ApiKeyBatch(msgspec.Struct, forbid_unknown_fields=True):
    """Keys to create in one transaction and one publish of the gateways' configuration."""

    keys: Annotated[list[ApiKeyCreate], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
