"""SQLAlchemy models: the source of truth. The gateway never imports this package."""

from trunkline.models.base import Base
from trunkline.models.catalog import (
    AcceleratorFlavor,
    Endpoint,
    Entitlement,
    Model,
    ModelAlias,
    Pool,
)
from trunkline.models.keys import AccessToken, ApiKey
from trunkline.models.tenancy import Membership, Project, Role, Tenant, Tier, User
from trunkline.models.usage import UsageEvent

__all__ = [
    "AcceleratorFlavor",
    "AccessToken",
    "ApiKey",
    "Base",
    "Endpoint",
    "Entitlement",
    "Membership",
    "Model",
    "ModelAlias",
    "Pool",
    "Project",
    "Role",
    "Tenant",
    "Tier",
    "UsageEvent",
    "User",
]
