"""Access tokens, the development login, and the role guards."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cp_support import Api, World, make_runtime, make_settings
from litestar.testing import TestClient
from sqlalchemy import update

from trunkline.apps.controlplane import create_controlplane_app, dev_login_enabled
from trunkline.apps.runtime import Runtime
from trunkline.kit.db import transaction
from trunkline.kit.ids import utcnow
from trunkline.models import AccessToken


def test_dev_login_creates_the_user_and_returns_a_working_token(client: TestClient[Any]) -> None:
    issued = Api(client).post("/api/v1/auth/dev-login", {"email": "New@Example.com", "name": "N"})

    assert issued["access_token"].startswith("tlu_")
    assert issued["user"]["email"] == "new@example.com"
    me = Api(client, issued["access_token"]).get("/api/v1/auth/me")
    assert me["email"] == "new@example.com"
    assert me["is_platform_admin"] is False
    assert me["memberships"] == []


def test_dev_login_for_an_existing_member_shows_its_memberships(world: World) -> None:
    issued = world.api(None).post("/api/v1/auth/dev-login", {"email": "dev@acme.example"})

    me = Api(world.client, issued["access_token"]).get("/api/v1/auth/me")
    assert me["memberships"] == [{"tenant_id": world.tenant("acme"), "role": "developer"}]


def test_dev_login_is_absent_when_disabled(tmp_path: Path) -> None:
    runtime = make_runtime(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, dev_login=False)
    with TestClient(create_controlplane_app(runtime)) as client:
        problem = Api(client).post("/api/v1/auth/dev-login", {"email": "a@b.example"}, expect=404)
    runtime.close()
    assert problem["code"] == "not_found"


def test_dev_login_is_never_enabled_in_production(tmp_path: Path) -> None:
    settings = make_settings("sqlite://", tmp_path, dev_login=True)
    assert dev_login_enabled(settings)
    production = settings.model_copy(update={"environment": "production"})
    assert not dev_login_enabled(production)


@pytest.mark.parametrize(
    ("host", "enabled"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True),
     ("0.0.0.0", False),  # noqa: S104
     ("10.1.2.3", False), ("cp.internal.example", False)],
)  # fmt: skip
def test_dev_login_is_on_only_for_a_control_plane_bound_to_loopback(
    tmp_path: Path, host: str, enabled: bool
) -> None:
    """Started on a network address and left in development, anyone could mint admin tokens."""
    settings = make_settings("sqlite://", tmp_path, dev_login=True)
    bound = settings.model_copy(
        update={"controlplane": settings.controlplane.model_copy(update={"host": host})}
    )
    assert dev_login_enabled(bound) is enabled


def test_dev_login_route_is_not_mounted_for_production_settings(runtime: Runtime) -> None:
    production = runtime.settings.model_copy(update={"environment": "production"})
    prod_runtime = Runtime(
        settings=production,
        engine=runtime.engine,
        session_factory=runtime.session_factory,
        publisher=runtime.publisher,
        server_secret=runtime.server_secret,
    )
    with TestClient(create_controlplane_app(prod_runtime)) as client:
        Api(client).post("/api/v1/auth/dev-login", {"email": "a@b.example"}, expect=404)


def test_requests_without_a_valid_token_are_refused(world: World) -> None:
    good = world.tokens["acme-dev"]
    for header in (
        None,
        "Basic abc",
        "Bearer not-a-token",
        "Bearer " + good[:-1] + ("A" if good[-1] != "A" else "B"),
        "Bearer tlk_" + good[4:],
    ):
        headers = {} if header is None else {"Authorization": header}
        response = world.client.get("/api/v1/tenants", headers=headers)
        assert response.status_code == 401, header
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["x-request-id"].startswith("req-")
        assert response.json()["code"] == "unauthenticated"


def test_expired_and_revoked_tokens_are_refused(world: World) -> None:
    api = world.api("acme-dev")
    api.get("/api/v1/auth/me")
    token_id = world.tokens["acme-dev"].split("_")[1]
    with transaction(world.runtime.session_factory) as session:
        session.execute(
            update(AccessToken)
            .where(AccessToken.token_id == token_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert api.get("/api/v1/auth/me", expect=401)["detail"] == "access token expired"

    with transaction(world.runtime.session_factory) as session:
        session.execute(
            update(AccessToken)
            .where(AccessToken.token_id == token_id)
            .values(expires_at=None, revoked_at=utcnow())
        )
    assert api.get("/api/v1/auth/me", expect=401)["detail"] == "access token revoked"


def test_health_and_openapi_need_no_token(client: TestClient[Any]) -> None:
    # not checked yet (the first check comes SNAPSHOT_CHECK_S after the start): not known
    assert Api(client).get("/healthz") == {"status": "ok", "snapshot": {"in_sync": None}}
    assert Api(client).get("/livez") == {"status": "ok"}
    schema = Api(client).get("/schema/openapi.json")
    assert "/api/v1/tenants/{tenant_id}/keys" in schema["paths"]
    assert schema["components"]["securitySchemes"]["accessToken"]["scheme"] == "bearer"
