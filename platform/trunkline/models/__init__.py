"""SQLAlchemy models: the source of truth. The gateway never imports this package."""

from trunkline.models.base import Base
from trunkline.models.billing import (
    BilledUsage,
    BillingCorrection,
    BillingPeriod,
    DedicatedCapacity,
    PriceBookVersion,
)
from trunkline.models.catalog import (
    AcceleratorFlavor,
    Endpoint,
    Entitlement,
    Model,
    ModelAlias,
    Pool,
)
from trunkline.models.config import CONFIG_ROW, ConfigChange, ConfigGeneration
from trunkline.models.keys import AccessToken, ApiKey, RetiredKey
from trunkline.models.metering import UsageRollup, UsageRollupWatermark
from trunkline.models.quotas import KeyQuota, TenantQuota, TierQuota
from trunkline.models.tenancy import (
    Membership,
    Project,
    RetiredProject,
    Role,
    Tenant,
    Tier,
    User,
)
from trunkline.models.usage import UsageEvent

__all__ = [
    "CONFIG_ROW",
    "AcceleratorFlavor",
    "AccessToken",
    "ApiKey",
    "Base",
    "BilledUsage",
    "BillingCorrection",
    "BillingPeriod",
    "ConfigChange",
    "ConfigGeneration",
    "DedicatedCapacity",
    "Endpoint",
    "Entitlement",
    "KeyQuota",
    "Membership",
    "Model",
    "ModelAlias",
    "Pool",
    "PriceBookVersion",
    "Project",
    "RetiredKey",
    "RetiredProject",
    "Role",
    "Tenant",
    "TenantQuota",
    "Tier",
    "TierQuota",
    "UsageEvent",
    "UsageRollup",
    "UsageRollupWatermark",
    "User",
]
