"""HTTP endpoint of the usage API, under the tenant whose usage it reports.

Role: member of the tenant (developers see the usage of the keys they created).
"""

from __future__ import annotations

import uuid

from litestar import Controller, get
from litestar.params import FromQuery

from trunkline.auth.guards import tenant_member
from trunkline.auth.params import Caller, DbSession, TenantId
from trunkline.metering import service
from trunkline.metering.schemas import GroupBy, UsageReport


class UsageController(Controller):
    path = "/api/v1/tenants/{tenant_id:uuid}/usage"
    tags = ["usage"]
    guards = [tenant_member]

    @get("/", sync_to_thread=True)
    def get_usage(
        self,
        db_session: DbSession,
        principal: Caller,
        tenant_id: TenantId,
        period: FromQuery[str],
        group_by: FromQuery[GroupBy] = "model",
        model: FromQuery[str | None] = None,
        project_id: FromQuery[uuid.UUID | None] = None,
        key_id: FromQuery[str | None] = None,
    ) -> UsageReport:
        """Usage and cost in ``period`` (``YYYY-MM``), grouped by model, project, key, tier
        or day. Figures are as of the last rollup (every few seconds to a minute)."""
        return service.usage_report(
            db_session,
            principal,
            tenant_id,
            period,
            group_by,
            model=model,
            project_id=project_id,
            key_id=key_id,
        )
