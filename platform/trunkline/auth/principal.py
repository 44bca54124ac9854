"""The authenticated caller of a control-plane operation and its roles.

Roles: a platform admin may do everything; inside a tenant a member is a
``tenant_admin`` or a ``developer``. A caller who is not a member of a tenant is
told that the tenant does not exist (404), so ids of other tenants leak nothing;
a member who lacks the role is told so (403).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from trunkline.errors import Forbidden, NotFound
from trunkline.models import Role


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID | None
    """``None`` for the system itself (CLI, manifests, embedded launcher)."""
    email: str
    is_platform_admin: bool = False
    memberships: Mapping[uuid.UUID, Role] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def system(cls) -> Principal:
        return cls(user_id=None, email="system", is_platform_admin=True)

    def role_in(self, tenant_id: uuid.UUID) -> Role | None:
        return self.memberships.get(tenant_id)

    def visible_tenants(self) -> frozenset[uuid.UUID] | None:
        """Tenant ids this caller may see; ``None`` means every tenant."""
        return None if self.is_platform_admin else frozenset(self.memberships)

    def is_tenant_admin(self, tenant_id: uuid.UUID) -> bool:
        return self.is_platform_admin or self.role_in(tenant_id) is Role.TENANT_ADMIN

    def require_platform_admin(self) -> None:
        if not self.is_platform_admin:
            raise Forbidden("this operation needs a platform admin", reason="platform_admin")

    def require_member(self, tenant_id: uuid.UUID) -> None:
        if not self.is_platform_admin and tenant_id not in self.memberships:
            raise NotFound("tenant not found", param="tenant_id")

    def require_tenant_admin(self, tenant_id: uuid.UUID) -> None:
        self.require_member(tenant_id)
        if not self.is_tenant_admin(tenant_id):
            raise Forbidden("this operation needs the tenant_admin role", reason="tenant_admin")
