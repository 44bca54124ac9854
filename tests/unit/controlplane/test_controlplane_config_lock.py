"""An API request that may change something holds the configuration's lock before anything
else in its transaction (``tenancy.changes.changing``; why: test_config_lock_order.py), and a
request that changes nothing takes no lock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, Request, post
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.testing import TestClient
from sqlalchemy import event

from trunkline.apps.controlplane import session_provider
from trunkline.apps.problems import HANDLERS
from trunkline.auth.guards import AnyConnection, tenant_admin
from trunkline.auth.middleware import AccessTokenMiddleware
from trunkline.auth.params import DbSession, TenantId
from trunkline.models import Role
from trunkline.tenancy.changes import changing
from trunkline.tenancy.schemas import MemberUpdate
from trunkline.tenancy.service import update_member
from unit.controlplane.cp_support import World


@pytest.fixture
def statements(world: World) -> Iterator[list[str]]:
    """The statements the API's database connections run, in order, from now on."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()).upper())

    engine = world.runtime.engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def _first(statements: list[str], prefix: str) -> int:
    return next(i for i, s in enumerate(statements) if s.startswith(prefix))


def test_a_request_writing_holds_the_configuration_first(
    world: World, statements: list[str]
) -> None:
    acme = world.tenant("acme")
    world.api("acme-admin").post(f"/api/v1/tenants/{acme}/projects", {"name": "locked-first"})
    held = _first(statements, "UPDATE CONFIG_GENERATION")
    assert held < _first(statements, "INSERT INTO PROJECTS")
    # nothing of the request's own transaction before it: only the token's look-up, which
    # runs in a session of its own
    assert all(not s.startswith(("INSERT", "UPDATE", "DELETE")) for s in statements[:held])


def test_a_request_reading_takes_no_lock(world: World, statements: list[str]) -> None:
    world.api("acme-admin").get(f"/api/v1/tenants/{world.tenant('acme')}/projects")
    assert statements and not [s for s in statements if s.startswith("UPDATE CONFIG_GENERATION")]


def test_a_write_guarded_by_an_async_guard_goes_by_the_role_found_under_the_lock(
    world: World,
) -> None:
    """A write runs its route's guards again once it holds the configuration's lock, when the
    caller's memberships moved meanwhile. A guard written ``async def`` was called there and its
    coroutine dropped, never run: the tenant admin made a developer meanwhile wrote all the same.
    The demotion commits between the guards' first run and the lock (``before_request`` runs
    between them)."""
    acme = world.tenant("acme")
    admin_id, dev_id = (world.user_id("acme", f"{who}@acme.example") for who in ("admin", "dev"))
    world.admin.patch(f"/api/v1/tenants/{acme}/members/{dev_id}", {"role": "tenant_admin"})
    wrote: list[str] = []

    async def admin_of_the_tenant(connection: AnyConnection, handler: BaseRouteHandler) -> None:
        tenant_admin(connection, handler)

    @post("/api/v1/tenants/{tenant_id:uuid}/probe", guards=[admin_of_the_tenant])
    async def probe(db_session: DbSession, tenant_id: TenantId) -> None:
        wrote.append(str(tenant_id))

    async def demote(_request: Request[Any, Any, Any]) -> None:
        with changing(world.runtime.session_factory) as session:
            member = MemberUpdate(Role.DEVELOPER)
            update_member(session, uuid.UUID(acme), uuid.UUID(admin_id), member)

    runtime = world.runtime
    app = Litestar(
        route_handlers=[probe],
        dependencies={"db_session": Provide(session_provider(runtime))},
        middleware=[
            DefineMiddleware(
                AccessTokenMiddleware,
                session_factory=runtime.session_factory,
                server_secret=runtime.server_secret,
            )
        ],
        exception_handlers=dict(HANDLERS),
        before_request=demote,
    )
    with TestClient[Any](app) as client:
        answer = client.post(
            f"/api/v1/tenants/{acme}/probe", headers=world.api("acme-admin").headers
        )
    assert answer.status_code == 403, answer.text
    assert wrote == []
