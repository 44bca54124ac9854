"""The charge line: one row of a bill, whatever produced it (tokens, GPU-hours, credits)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trunkline.billing.rating import ZERO
from trunkline.models import Project, RetiredProject, Tenant

USAGE, CREDIT = "Usage", "Credit"
TOKENS, PER_MILLION_TOKENS, GPU_HOURS = "Tokens", "1000000 Tokens", "GPU-Hours"

LineKey = tuple[uuid.UUID, str, datetime, str, str, str]


@dataclass(frozen=True, slots=True)
class ChargeLine:
    tenant_id: uuid.UUID
    tenant_slug: str
    tenant_name: str
    category: str
    charge_start: datetime
    charge_end: datetime
    sku_id: str
    description: str
    frequency: str
    project_id: uuid.UUID | None = None
    project_name: str | None = None
    region: str | None = None
    model: str | None = None
    tier: str | None = None
    token_class: str | None = None
    flavor: str | None = None
    consumed_quantity: Decimal | None = None
    consumed_unit: str | None = None
    pricing_quantity: Decimal | None = None
    pricing_unit: str | None = None
    list_unit_price: Decimal | None = None
    contracted_unit_price: Decimal | None = None
    list_cost: Decimal = ZERO
    contracted_cost: Decimal = ZERO
    price_version: int | None = None
    slo_attainment: Decimal | None = None
    correction: bool = False

    @property
    def key(self) -> LineKey:
        project = str(self.project_id) if self.project_id else ""
        return (
            self.tenant_id,
            self.category,
            self.charge_start,
            project,
            self.sku_id,
            self.region or "",
        )


@dataclass(frozen=True, slots=True)
class Names:
    tenants: dict[uuid.UUID, tuple[str, str]]
    projects: dict[uuid.UUID, str]

    @classmethod
    def load(cls, session: Session) -> Names:
        """The names as they are now; a deleted project's as it was when it was deleted."""
        tenants = {
            t: (s, n) for t, s, n in session.execute(select(Tenant.id, Tenant.slug, Tenant.name))
        }
        retired = session.execute(select(RetiredProject.id, RetiredProject.name))
        projects = {pid: name for pid, name in retired}
        projects |= {pid: name for pid, name in session.execute(select(Project.id, Project.name))}
        return cls(tenants, projects)

    def to_document(self) -> dict[str, Any]:
        """JSON for a closed period's snapshot (:meth:`from_document` reads it back)."""
        return {
            "tenants": {str(t): list(names) for t, names in self.tenants.items()},
            "projects": {str(p): name for p, name in self.projects.items()},
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Names:
        tenants = {uuid.UUID(t): (s, n) for t, (s, n) in document["tenants"].items()}
        projects = {uuid.UUID(p): name for p, name in document["projects"].items()}
        return cls(tenants, projects)

    def tenant(self, tenant_id: uuid.UUID) -> tuple[str, str]:
        return self.tenants.get(tenant_id, (str(tenant_id), str(tenant_id)))
