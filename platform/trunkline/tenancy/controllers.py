"""HTTP endpoints of tiers, tenants, members and projects."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, Response, delete, get, patch, post
from litestar.params import FromPath, JSONBody, Parameter

from trunkline.auth.guards import authenticated, platform_admin, tenant_admin, tenant_member
from trunkline.auth.params import Caller, DbSession, TenantId
from trunkline.kit.page_links import NEXT_PAGE_LINK, Paging
from trunkline.tenancy import service
from trunkline.tenancy.schemas import (
    Member,
    MemberAdd,
    MemberUpdate,
    Project,
    ProjectCreate,
    Tenant,
    TenantCreate,
    TenantUpdate,
    Tier,
    TierCreate,
    TierUpdate,
)

TENANT_PATH = "/api/v1/tenants/{tenant_id:uuid}"


class TierController(Controller):
    path = "/api/v1/tiers"
    tags = ["tiers"]

    @get("/", guards=[authenticated], sync_to_thread=True)
    def list_tiers(self, db_session: DbSession) -> list[Tier]:
        """Every tier, highest priority first. Role: any authenticated caller."""
        return service.list_tiers(db_session)

    @get("/{name:str}", guards=[authenticated], sync_to_thread=True)
    def get_tier(self, db_session: DbSession, name: FromPath[str]) -> Tier:
        """Role: any authenticated caller."""
        return service.get_tier(db_session, name)

    @post("/", guards=[platform_admin], sync_to_thread=True)
    def create_tier(self, db_session: DbSession, data: JSONBody[TierCreate]) -> Tier:
        """Role: platform admin."""
        return service.create_tier(db_session, data)

    @patch("/{name:str}", guards=[platform_admin], sync_to_thread=True)
    def update_tier(
        self, db_session: DbSession, name: FromPath[str], data: JSONBody[TierUpdate]
    ) -> Tier:
        """Role: platform admin."""
        return service.update_tier(db_session, name, data)


class TenantController(Controller):
    path = "/api/v1/tenants"
    tags = ["tenants"]

    @get("/", guards=[authenticated], sync_to_thread=True, response_headers=NEXT_PAGE_LINK)
    def list_tenants(
        self,
        db_session: DbSession,
        principal: Caller,
        paging: Paging,
        entitled_to: Annotated[
            str | None,
            Parameter(
                min_length=1,
                max_length=200,
                description="only the tenants entitled to this model alias (the `tenant_count` "
                "of its `GET /models` entry counts them)",
            ),
        ] = None,
    ) -> Response[list[Tenant]]:
        """All tenants for a platform admin, the caller's own tenants otherwise; by slug."""
        found = service.list_tenants(db_session, principal, paging.request, entitled_to)
        return paging.answer(found)

    @post("/", guards=[platform_admin], sync_to_thread=True)
    def create_tenant(self, db_session: DbSession, data: JSONBody[TenantCreate]) -> Tenant:
        """Role: platform admin."""
        return service.create_tenant(db_session, data)

    @get("/{tenant_id:uuid}", guards=[tenant_member], sync_to_thread=True)
    def get_tenant(
        self,
        db_session: DbSession,
        principal: Caller,
        tenant_id: TenantId,
    ) -> Tenant:
        """Role: member of the tenant."""
        return service.get_tenant(db_session, principal, tenant_id)

    @patch("/{tenant_id:uuid}", guards=[platform_admin], sync_to_thread=True)
    def update_tenant(
        self,
        db_session: DbSession,
        tenant_id: TenantId,
        data: JSONBody[TenantUpdate],
    ) -> Tenant:
        """Rename, change tier, regions or prefix-cache isolation. Role: platform admin."""
        return service.update_tenant(db_session, tenant_id, data)


class MemberController(Controller):
    path = TENANT_PATH + "/members"
    tags = ["members"]
    guards = [tenant_admin]

    @get("/", sync_to_thread=True, response_headers=NEXT_PAGE_LINK)
    def list_members(
        self, db_session: DbSession, tenant_id: TenantId, paging: Paging
    ) -> Response[list[Member]]:
        """By e-mail address. Role: tenant admin."""
        return paging.answer(service.list_members(db_session, tenant_id, paging.request))

    @post("/", sync_to_thread=True)
    def add_member(
        self,
        db_session: DbSession,
        tenant_id: TenantId,
        data: JSONBody[MemberAdd],
    ) -> Member:
        """Add a user by e-mail (created on first sight). Role: tenant admin."""
        return service.add_member(db_session, tenant_id, data)

    @patch("/{user_id:uuid}", sync_to_thread=True)
    def update_member(
        self,
        db_session: DbSession,
        tenant_id: TenantId,
        user_id: FromPath[uuid.UUID],
        data: JSONBody[MemberUpdate],
    ) -> Member:
        """Change a member's role. Role: tenant admin."""
        return service.update_member(db_session, tenant_id, user_id, data)

    @delete("/{user_id:uuid}", sync_to_thread=True)
    def remove_member(
        self,
        db_session: DbSession,
        tenant_id: TenantId,
        user_id: FromPath[uuid.UUID],
    ) -> None:
        """Role: tenant admin."""
        service.remove_member(db_session, tenant_id, user_id)


class ProjectController(Controller):
    path = TENANT_PATH + "/projects"
    tags = ["projects"]

    @get("/", guards=[tenant_member], sync_to_thread=True, response_headers=NEXT_PAGE_LINK)
    def list_projects(
        self, db_session: DbSession, tenant_id: TenantId, paging: Paging
    ) -> Response[list[Project]]:
        """By name. Role: member of the tenant."""
        return paging.answer(service.list_projects(db_session, tenant_id, paging.request))

    @get("/{project_id:uuid}", guards=[tenant_member], sync_to_thread=True)
    def get_project(
        self,
        db_session: DbSession,
        tenant_id: TenantId,
        project_id: FromPath[uuid.UUID],
    ) -> Project:
        """Role: member of the tenant."""
        return service.get_project(db_session, tenant_id, project_id)

    @post("/", guards=[tenant_admin], sync_to_thread=True)
    def create_project(
        self,
        db_session: DbSession,
        tenant_id: TenantId,
        data: JSONBody[ProjectCreate],
    ) -> Project:
        """Role: tenant admin."""
        return service.create_project(db_session, tenant_id, data)

    @delete("/{project_id:uuid}", guards=[tenant_admin], sync_to_thread=True)
    def delete_project(
        self,
        db_session: DbSession,
        tenant_id: TenantId,
        project_id: FromPath[uuid.UUID],
    ) -> None:
        """Delete the project and its API keys. Role: tenant admin."""
        service.delete_project(db_session, tenant_id, project_id)
