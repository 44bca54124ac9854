"""Wire schemas of the authentication endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from trunkline.kit.text import END, ONE_LINE
from trunkline.models import Role

Email = Annotated[
    str,
    msgspec.Meta(
        min_length=3,
        max_length=320,
        pattern=r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+" + END,
        description="an e-mail address, compared case-insensitively",
        examples=["dev@acme.example"],
    ),
]
PersonName = Annotated[str, msgspec.Meta(max_length=200, pattern=ONE_LINE)]


class DevLogin(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    name: PersonName = ""


class MembershipView(msgspec.Struct):
    tenant_id: uuid.UUID
    role: Role


class UserView(msgspec.Struct):
    id: uuid.UUID
    email: str
    name: str
    is_platform_admin: bool
    memberships: list[MembershipView] = msgspec.field(default_factory=list)


class AccessTokenIssued(msgspec.Struct):
    access_token: str
    """Shown once; send it as ``Authorization: Bearer <access_token>``."""
    token_type: str
    expires_at: datetime | None
    user: UserView
