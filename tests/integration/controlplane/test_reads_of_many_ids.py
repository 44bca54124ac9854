"""Reads given the ids of tenants or keys (the snapshot's key shards pass those of every key in
the shards rebuilt) answer for any number of them: one ``IN (…)`` of 70,000 ids stopped at
PostgreSQL's 65,535 bind parameters (SQLite's 32,766) before they were read in chunks."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from trunkline.apps.runtime import Runtime
from trunkline.kit.db import transaction
from trunkline.models import ApiKey, Project, Tenant, Tier
from trunkline.quota.repository import QuotaRepository, TenantQuotaRepository
from trunkline.quota.schemas import QuotaLimits, ScopeLimits
from trunkline.tenancy.repository import TierRepository

MANY = 70_000


def _tenant_with_key(session: Session) -> tuple[Tenant, ApiKey]:
    tier = TierRepository(session).add(Tier(name="gold", priority=1, ttft_slo_ms=500))
    session.flush()
    tenant = Tenant(slug="acme-many", name="Acme", tier_id=tier.id)
    session.add(tenant)
    session.flush()
    project = Project(tenant_id=tenant.id, name="main")
    session.add(project)
    session.flush()
    key = ApiKey(tenant_id=tenant.id, project_id=project.id, name="k", key_id="k1", secret_hash="x")
    session.add(key)
    session.flush()
    return tenant, key


def test_quota_documents_of_more_ids_than_a_statement_may_list(runtime: Runtime) -> None:
    with transaction(runtime.session_factory) as session:
        tenant, key = _tenant_with_key(session)
        quotas = QuotaRepository(session)
        doc = QuotaLimits(tenant=ScopeLimits(requests_per_minute=7))
        TenantQuotaRepository(session, tenant.id).set_doc(doc)
        own = ScopeLimits(requests_per_minute=3)
        TenantQuotaRepository(session, tenant.id).set_key_doc("k1", own)
        unknown = [uuid.uuid4() for _ in range(MANY)]

        tenant_docs = quotas.tenant_docs([*unknown, tenant.id])
        keys = {row: (f"gone-{n}", None) for n, row in enumerate(unknown)}
        key_docs = quotas.key_docs({**keys, key.id: ("k1", None)})

    assert tenant_docs == {str(tenant.id): doc}
    assert key_docs == {"k1": own}
