"""Route guards: each controller states the role its handlers need.

    authenticated    any valid access token
    platform_admin   users.is_platform_admin (on a ``{tenant_id}`` path a non-member gets 404 first)
    tenant_member    a member (any role) of the ``{tenant_id}`` in the path, or a platform admin
    tenant_admin     ``tenant_admin`` of that tenant, or a platform admin

Guards raise domain errors; the app maps them to problem details once.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import anyio.from_thread
from litestar.connection import ASGIConnection, Request
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy.orm import Session

from trunkline.auth.principal import Principal
from trunkline.auth.repository import UserRepository
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


def guard_again(session: Session, connection: AnyConnection) -> None:
    """Run the route's guards again when the caller's memberships, as ``session`` reads them,
    differ from those its request began with. A write's guards saw the memberships read
    before it waited on the configuration's lock, perhaps for the caller's removal or
    demotion: a tenant admin removed meanwhile still added members. Called in a worker
    thread: a plain function guard runs as it is (Litestar wraps it to run in a thread), an
    ``async def`` one on the event loop that thread was sent from (called and not awaited, it
    ran nothing and the write went on)."""
    principal = connection.scope.get("user")
    if not isinstance(principal, Principal) or principal.user_id is None:
        return
    now = UserRepository(session).memberships(principal.user_id)
    if now == dict(principal.memberships):
        return
    connection.scope["user"] = replace(principal, memberships=MappingProxyType(now))
    handler = connection.route_handler
    for guard in handler.resolve_guards():
        checked = getattr(guard, "func", guard)(connection, handler)
        if inspect.isawaitable(checked):
            anyio.from_thread.run(_awaited, checked)


async def _awaited(checked: Awaitable[None]) -> None:
    await checked
