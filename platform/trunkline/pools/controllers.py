"""HTTP endpoints of the catalog: admin CRUD under ``/api/v1/catalog``, entitlements per
tenant, and ``GET /api/v1/models`` for every caller."""

from __future__ import annotations

import uuid

from litestar import Controller, Response, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from trunkline.auth.guards import authenticated, platform_admin, tenant_member
from trunkline.auth.params import Caller, DbSession, TenantId
from trunkline.kit.page_links import NEXT_PAGE_LINK, Paging
from trunkline.pools import aliases, catalog_models, entitlements, flavors, service
from trunkline.pools.endpoint_schemas import PoolEndpoints
from trunkline.pools.schemas import (
    AliasCreate,
    AliasUpdate,
    AliasView,
    AvailableModel,
    Entitlement,
    Flavor,
    FlavorCreate,
    FlavorUpdate,
    Model,
    ModelCreate,
    ModelUpdate,
    Pool,
    PoolCreate,
    PoolUpdate,
)

CATALOG = "/api/v1/catalog"


class FlavorController(Controller):
    """Accelerator flavors. Role: platform admin."""

    path = CATALOG + "/flavors"
    tags = ["catalog"]
    guards = [platform_admin]

    @get("/", sync_to_thread=True)
    def list_flavors(self, db_session: DbSession) -> list[Flavor]:
        return flavors.list_flavors(db_session)

    @post("/", sync_to_thread=True)
    def create_flavor(self, db_session: DbSession, data: JSONBody[FlavorCreate]) -> Flavor:
        return flavors.create_flavor(db_session, data)

    @patch("/{name:str}", sync_to_thread=True)
    def update_flavor(
        self,
        db_session: DbSession,
        name: FromPath[str],
        data: JSONBody[FlavorUpdate],
    ) -> Flavor:
        return flavors.update_flavor(db_session, name, data)

    @delete("/{name:str}", sync_to_thread=True)
    def delete_flavor(self, db_session: DbSession, name: FromPath[str]) -> None:
        """Refused (409) while a pool uses the flavor."""
        flavors.delete_flavor(db_session, name)


class CatalogModelController(Controller):
    """Models and their public aliases. Role: platform admin."""

    path = CATALOG
    tags = ["catalog"]
    guards = [platform_admin]

    @get("/models", sync_to_thread=True, response_headers=NEXT_PAGE_LINK)
    def list_models(self, db_session: DbSession, paging: Paging) -> Response[list[Model]]:
        """By name."""
        return paging.answer(catalog_models.list_models(db_session, paging.request))

    @post("/models", sync_to_thread=True)
    def create_model(self, db_session: DbSession, data: JSONBody[ModelCreate]) -> Model:
        return catalog_models.create_model(db_session, data)

    @get("/models/{name:path}", sync_to_thread=True)
    def get_model(self, db_session: DbSession, name: FromPath[str]) -> Model:
        return catalog_models.get_model(db_session, name.lstrip("/"))

    @patch("/models/{name:path}", sync_to_thread=True)
    def update_model(
        self, db_session: DbSession, name: FromPath[str], data: JSONBody[ModelUpdate]
    ) -> Model:
        return catalog_models.update_model(db_session, name.lstrip("/"), data)

    @delete("/models/{name:path}", sync_to_thread=True)
    def delete_model(self, db_session: DbSession, name: FromPath[str]) -> None:
        """Refused (409) while a pool serves the model."""
        catalog_models.delete_model(db_session, name.lstrip("/"))

    @post("/aliases", sync_to_thread=True)
    def add_alias(self, db_session: DbSession, data: JSONBody[AliasCreate]) -> Model:
        """Add a public alias to a model, optionally limited to some of its pools or
        cascading to a larger model; answers the model with all its aliases."""
        aliases.create_alias(db_session, data)
        return catalog_models.get_model(db_session, data.model)

    @get("/aliases", sync_to_thread=True, response_headers=NEXT_PAGE_LINK)
    def list_aliases(self, db_session: DbSession, paging: Paging) -> Response[list[AliasView]]:
        """By alias."""
        return paging.answer(aliases.list_aliases(db_session, paging.request))

    @get("/aliases/{alias:path}", sync_to_thread=True)
    def get_alias(self, db_session: DbSession, alias: FromPath[str]) -> AliasView:
        return aliases.get_alias(db_session, alias.lstrip("/"))

    @patch("/aliases/{alias:path}", sync_to_thread=True)
    def update_alias(
        self, db_session: DbSession, alias: FromPath[str], data: JSONBody[AliasUpdate]
    ) -> AliasView:
        """Point the alias at another model, limit its pools, or set or clear its cascade."""
        return aliases.update_alias(db_session, alias.lstrip("/"), data)

    @delete("/aliases/{alias:path}", sync_to_thread=True)
    def remove_alias(self, db_session: DbSession, alias: FromPath[str]) -> None:
        """Remove an alias (and every tenant's entitlement to it)."""
        catalog_models.remove_alias(db_session, alias.lstrip("/"))


class PoolController(Controller):
    """Model pools and their endpoints. Role: platform admin."""

    path = CATALOG + "/pools"
    tags = ["catalog"]
    guards = [platform_admin]

    @get("/", sync_to_thread=True, response_headers=NEXT_PAGE_LINK)
    def list_pools(self, db_session: DbSession, paging: Paging) -> Response[list[Pool]]:
        """By name."""
        return paging.answer(service.list_pools(db_session, paging.request))

    @post("/", sync_to_thread=True)
    def create_pool(self, db_session: DbSession, data: JSONBody[PoolCreate]) -> Pool:
        return service.create_pool(db_session, data)

    @get("/{name:str}", sync_to_thread=True)
    def get_pool(self, db_session: DbSession, name: FromPath[str]) -> Pool:
        return service.get_pool(db_session, name)

    @patch("/{name:str}", sync_to_thread=True)
    def update_pool(
        self, db_session: DbSession, name: FromPath[str], data: JSONBody[PoolUpdate]
    ) -> Pool:
        return service.update_pool(db_session, name, data)

    @delete("/{name:str}", sync_to_thread=True)
    def delete_pool(self, db_session: DbSession, name: FromPath[str]) -> None:
        service.delete_pool(db_session, name)

    @put("/{name:str}/endpoints", sync_to_thread=True)
    def set_endpoints(
        self,
        db_session: DbSession,
        name: FromPath[str],
        data: JSONBody[PoolEndpoints],
    ) -> Pool:
        """Replace the pool's endpoint list."""
        return service.set_pool_endpoints(db_session, name, data.urls)


class EntitlementController(Controller):
    path = "/api/v1/tenants/{tenant_id:uuid}/entitlements"
    tags = ["entitlements"]

    @get("/", guards=[tenant_member], sync_to_thread=True, response_headers=NEXT_PAGE_LINK)
    def list_entitlements(
        self, db_session: DbSession, tenant_id: TenantId, paging: Paging
    ) -> Response[list[Entitlement]]:
        """Aliases the tenant may use, by alias. Role: member of the tenant."""
        found = entitlements.list_entitlements(db_session, tenant_id, paging.request)
        return paging.answer(found)

    @put("/{alias:path}", guards=[platform_admin], sync_to_thread=True)
    def grant(
        self,
        db_session: DbSession,
        tenant_id: TenantId,
        alias: FromPath[str],
    ) -> Entitlement:
        """Grant an alias to the tenant (idempotent). Role: platform admin."""
        return entitlements.grant_entitlement(db_session, tenant_id, alias.lstrip("/"))

    @delete("/{alias:path}", guards=[platform_admin], sync_to_thread=True)
    def revoke(
        self,
        db_session: DbSession,
        tenant_id: TenantId,
        alias: FromPath[str],
    ) -> None:
        """Revoke an alias from the tenant. Role: platform admin."""
        entitlements.revoke_entitlement(db_session, tenant_id, alias.lstrip("/"))


class AvailableModelController(Controller):
    path = "/api/v1/models"
    tags = ["catalog"]

    @get("/", guards=[authenticated], sync_to_thread=True, response_headers=NEXT_PAGE_LINK)
    def available_models(
        self,
        db_session: DbSession,
        principal: Caller,
        paging: Paging,
        tenant_id: FromQuery[uuid.UUID | None] = None,
    ) -> Response[list[AvailableModel]]:
        """Aliases the caller's tenants may use, by alias; ``?tenant_id=`` narrows to one
        tenant. Each counts the caller's tenants entitled to it (``tenant_count``);
        ``GET /tenants?entitled_to=ALIAS`` lists them."""
        found = entitlements.available_models(db_session, principal, tenant_id, paging.request)
        return paging.answer(found)
