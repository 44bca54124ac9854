"""Route guards: each controller states the role its handlers need.

    authenticated    any valid access token
    platform_admin   users.is_platform_admin (on a ``{tenant_id}`` path a non-member gets 404 first)
    tenant_member    a member (any role) of the ``{tenant_id}`` in the path, or a platform admin
    tenant_admin     ``tenant_admin`` of that tenant, or a platform admin

Guards raise domain errors; the app maps them to problem details once.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar.connection import ASGIConnection, Request
from litestar.handlers.base import BaseRouteHandler

from trunkline.auth.principal import Principal
from trunkline.errors import NotFound, Unauthenticated

AnyConnection = ASGIConnection[Any, Any, Any, Any]


def current_principal(connection: AnyConnection) -> Principal:
    """The authenticated caller, or the reason the authentication middleware refused it."""
    user = connection.scope.get("user")
    if isinstance(user, Principal):
        return user
    refused = connection.scope.get("auth")
    if isinstance(refused, Unauthenticated):
        raise refused
    raise Unauthenticated("missing bearer access token", reason="missing_token")


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """Dependency: the caller the authentication middleware established."""
    return current_principal(request)


def _tenant_id(connection: AnyConnection) -> uuid.UUID:
    value = connection.path_params.get("tenant_id")
    if not isinstance(value, uuid.UUID):
        raise NotFound("tenant not found", param="tenant_id")
    return value


def authenticated(connection: AnyConnection, _handler: BaseRouteHandler) -> None:
    current_principal(connection)


def platform_admin(connection: AnyConnection, _handler: BaseRouteHandler) -> None:
    principal = current_principal(connection)
    if "tenant_id" in connection.path_params:
        # a foreign tenant id must read as missing (404) before the role answers 403
        principal.require_member(_tenant_id(connection))
    principal.require_platform_admin()


def tenant_member(connection: AnyConnection, _handler: BaseRouteHandler) -> None:
    current_principal(connection).require_member(_tenant_id(connection))


def tenant_admin(connection: AnyConnection, _handler: BaseRouteHandler) -> None:
    current_principal(connection).require_tenant_admin(_tenant_id(connection))
