"""HTTP endpoints of quotas: tier defaults, a tenant's overrides and usage, a key's.

GET  /api/v1/tiers/{name}/quota                       any authenticated caller
PUT  /api/v1/tiers/{name}/quota                       platform admin
GET  /api/v1/tenants/{tenant_id}/quota                member of the tenant
PUT  /api/v1/tenants/{tenant_id}/quota                platform admin
GET  /api/v1/tenants/{tenant_id}/keys/{key_id}/quota  member who may see the key
PUT  /api/v1/tenants/{tenant_id}/keys/{key_id}/quota  tenant admin
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

from litestar import Controller, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from trunkline.auth.guards import authenticated, platform_admin, tenant_admin, tenant_member
from trunkline.auth.params import Caller, ConfigWrites, DbSession, SessionFactory, TenantId
from trunkline.auth.principal import Principal
from trunkline.quota import service
from trunkline.quota.rules import Vector
from trunkline.quota.schemas import KeyQuota, QuotaLimits, ScopeLimits, TenantQuota
from trunkline.quota.service import UsageReader
from trunkline.quota.store import QuotaStore, StoreUnavailable
from trunkline.quota.windows import Clock, system_clock

USAGE_TIMEOUT_S = 2.0
"""How long a handler waits for the quota store's usage (the control plane's Redis calls time
out after as long: ``apps.runtime.REDIS_TIMEOUT_S``); the view then says ``usage: null``."""
QuotaUsage: TypeAlias = NamedDependency[UsageReader]
"""What the scopes used of their limits, money included (``quota_usage``, from the app)."""


class Outage(Protocol):
    """Whether the quota store failed a call lately (``apps.store_outage.StoreOutage``: on the
    control plane, the one its snapshot publishes share, the same Redis)."""

    def suspected(self) -> bool: ...
    def failed(self, error: BaseException) -> None: ...
    def answered(self) -> None: ...


def usage_reader_provider(
    store: QuotaStore,
    clock: Clock = system_clock,
    *,
    timeout_s: float = USAGE_TIMEOUT_S,
    outage: Outage | None = None,
) -> Any:
    """A dependency provider for ``quota_usage`` (register it with ``sync_to_thread=False``):
    the handlers run in worker threads, the store on the app's event loop.

    A read waits ``timeout_s`` at most; after one failed (``outage``), reads give no usage
    without asking the store until it is no longer ``suspected``: a Redis that does not answer
    held a worker thread for each read's timeout."""

    def provide_quota_usage() -> UsageReader:
        loop = asyncio.get_running_loop()

        def read(
            tenant_id: str, scopes: Sequence[tuple[str, str]]
        ) -> tuple[int, list[Vector]] | None:
            if outage is not None and outage.suspected():
                return None
            now = clock()
            pending = asyncio.run_coroutine_threadsafe(store.usage(tenant_id, scopes, now), loop)
            try:
                counters = pending.result(timeout=timeout_s)
            except (StoreUnavailable, TimeoutError) as exc:
                pending.cancel()
                if outage is not None:
                    outage.failed(exc)
                return None
            if outage is not None:
                outage.answered()
            return now, counters

        return read

    return provide_quota_usage


class TierQuotaController(Controller):
    path = "/api/v1/tiers/{name:str}/quota"
    tags = ["quotas"]

    @get("/", guards=[authenticated], sync_to_thread=True)
    def get_tier_quota(self, db_session: DbSession, name: FromPath[str]) -> QuotaLimits:
        """The tier's default limits per scope. Role: any authenticated caller."""
        return service.get_tier_quota(db_session, name)

    @put("/", guards=[platform_admin], sync_to_thread=True)
    def set_tier_quota(
        self, db_session: DbSession, name: FromPath[str], data: JSONBody[QuotaLimits]
    ) -> QuotaLimits:
        """Replace the tier's defaults. Role: platform admin."""
        return service.set_tier_quota(db_session, name, data)


class TenantQuotaController(Controller):
    path = "/api/v1/tenants/{tenant_id:uuid}/quota"
    tags = ["quotas"]

    @get("/", guards=[tenant_member], sync_to_thread=True)
    def get_tenant_quota(
        self, db_session: DbSession, principal: Caller, tenant_id: TenantId, quota_usage: QuotaUsage
    ) -> TenantQuota:
        """Limits in force for the tenant, its projects and keys, and what the tenant used
        and has left in the current windows. Role: member of the tenant."""
        return service.tenant_quota(db_session, principal, tenant_id, quota_usage)

    @put("/", guards=[platform_admin], sync_to_thread=True)
    def set_tenant_quota(
        self,
        config_writes: ConfigWrites,
        session_factory: SessionFactory,
        tenant_id: TenantId,
        data: JSONBody[QuotaLimits],
        quota_usage: QuotaUsage,
    ) -> TenantQuota:
        """Replace the tenant's overrides of its tier's defaults, and read them back as the GET
        does (``usage: null`` while the quota store is unreachable). Role: platform admin."""
        with config_writes() as session:
            service.set_tenant_quota(session, tenant_id, data)
        # Usage is read after the commit: the configuration's lock, which every write waits
        # for, is not held while Redis answers, or does not.
        with session_factory() as session:
            return service.tenant_quota(session, Principal.system(), tenant_id, quota_usage)


class KeyQuotaController(Controller):
    path = "/api/v1/tenants/{tenant_id:uuid}/keys/{key_id:str}/quota"
    tags = ["quotas"]

    @get("/", guards=[tenant_member], sync_to_thread=True)
    def get_key_quota(
        self,
        db_session: DbSession,
        principal: Caller,
        tenant_id: TenantId,
        key_id: FromPath[str],
        quota_usage: QuotaUsage,
    ) -> KeyQuota:
        """Limits in force for the key, its project and tenant, and what each has left.
        Role: member of the tenant who may see the key (developers: their own keys)."""
        return service.key_quota(db_session, principal, tenant_id, key_id, quota_usage)

    @put("/", guards=[tenant_admin], sync_to_thread=True)
    def set_key_quota(
        self,
        config_writes: ConfigWrites,
        session_factory: SessionFactory,
        principal: Caller,
        tenant_id: TenantId,
        key_id: FromPath[str],
        data: JSONBody[ScopeLimits],
        quota_usage: QuotaUsage,
    ) -> KeyQuota:
        """Replace the key's overrides (the tenant's limits still apply), and read them back as
        the GET does. Role: tenant admin."""
        with config_writes() as session:
            service.set_key_quota(session, principal, tenant_id, key_id, data)
        with session_factory() as session:  # after the commit, as the tenant's PUT
            return service.key_quota(session, principal, tenant_id, key_id, quota_usage)
