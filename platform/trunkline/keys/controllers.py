"""HTTP endpoints of API keys, under the tenant that holds them.

Role: member of the tenant. Developers see and manage the keys they created;
tenant admins every key of the tenant.
"""

from __future__ import annotations

import uuid

from litestar import Controller, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from trunkline.auth.guards import tenant_member
from trunkline.auth.params import Caller, DbSession, MaxLiveKeys, ServerSecret, TenantId
from trunkline.keys import service
from trunkline.keys.schemas import ApiKey, ApiKeyBatch, ApiKeyCreate, ApiKeyCreated
from trunkline.kit.page_links import NEXT_PAGE_LINK, Paging


class ApiKeyController(Controller):
    path = "/api/v1/tenants/{tenant_id:uuid}/keys"
    tags = ["keys"]
    guards = [tenant_member]

    @get("/", sync_to_thread=True, response_headers=NEXT_PAGE_LINK)
    def list_keys(
        self,
        db_session: DbSession,
        principal: Caller,
        tenant_id: TenantId,
        paging: Paging,
        project_id: FromQuery[uuid.UUID | None] = None,
    ) -> Response[list[ApiKey]]:
        """Keys the caller may manage (never their secrets or hashes), oldest first."""
        keys = service.list_keys(db_session, principal, tenant_id, project_id, paging.request)
        return paging.answer(keys)

    @post("/", sync_to_thread=True)
    def create_key(
        self,
        db_session: DbSession,
        principal: Caller,
        server_secret: ServerSecret,
        max_live_keys: MaxLiveKeys,
        tenant_id: TenantId,
        data: JSONBody[ApiKeyCreate],
    ) -> ApiKeyCreated:
        """Create a key; the response carries its secret, which is never shown again."""
        return service.create_key(
            db_session, principal, server_secret, tenant_id, data, max_live=max_live_keys
        )

    @post("/batch", sync_to_thread=True)
    def create_keys(
        self,
        db_session: DbSession,
        principal: Caller,
        server_secret: ServerSecret,
        max_live_keys: MaxLiveKeys,
        tenant_id: TenantId,
        data: JSONBody[ApiKeyBatch],
    ) -> list[ApiKeyCreated]:
        """Create up to 1,000 keys at once, all or none, in the order given; the response
        carries their secrets, never shown again. Gateways learn them in one publish."""
        return service.create_keys(
            db_session, principal, server_secret, tenant_id, data, max_live=max_live_keys
        )

    @get("/{key_id:str}", sync_to_thread=True)
    def get_key(
        self,
        db_session: DbSession,
        principal: Caller,
        tenant_id: TenantId,
        key_id: FromPath[str],
    ) -> ApiKey:
        return service.get_key(db_session, principal, tenant_id, key_id)

    @post("/{key_id:str}/revoke", status_code=200, sync_to_thread=True)
    def revoke_key(
        self,
        db_session: DbSession,
        principal: Caller,
        tenant_id: TenantId,
        key_id: FromPath[str],
    ) -> ApiKey:
        """Revoke the key (idempotent)."""
        return service.revoke_key(db_session, principal, tenant_id, key_id)

    @post("/{key_id:str}/rotate", sync_to_thread=True)
    def rotate_key(
        self,
        db_session: DbSession,
        principal: Caller,
        server_secret: ServerSecret,
        max_live_keys: MaxLiveKeys,
        tenant_id: TenantId,
        key_id: FromPath[str],
        grace_s: FromQuery[int] = 0,
    ) -> ApiKeyCreated:
        """Replace the key with a new one of the same scope; the old one is revoked, or with
        ``grace_s`` keeps working that many seconds more (at most 7 days)."""
        return service.rotate_key(
            db_session, principal, server_secret, tenant_id, key_id,
            grace_s=grace_s, max_live=max_live_keys,
        )  # fmt: skip
