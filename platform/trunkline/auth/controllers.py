"""HTTP endpoints of authentication: the development login and "who am I"."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.params import JSONBody

from trunkline.auth import service
from trunkline.auth.guards import authenticated
from trunkline.auth.middleware import EXCLUDE_FROM_AUTH
from trunkline.auth.params import Caller, DbSession, ServerSecret
from trunkline.auth.schemas import AccessTokenIssued, DevLogin, UserView


class DevLoginController(Controller):
    """Mounted only when ``settings.security.dev_login`` is on outside production."""

    path = "/api/v1/auth"
    tags = ["auth"]

    @post("/dev-login", sync_to_thread=True, opt={EXCLUDE_FROM_AUTH: True})
    def dev_login(
        self,
        data: JSONBody[DevLogin],
        db_session: DbSession,
        server_secret: ServerSecret,
    ) -> AccessTokenIssued:
        """Development only: create the user if needed and return a fresh access token."""
        return service.dev_login(db_session, server_secret, data.email, data.name)


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]
    guards = [authenticated]

    @get("/me", sync_to_thread=True)
    def me(self, db_session: DbSession, principal: Caller) -> UserView:
        """The caller, with the tenants it belongs to and its role in each."""
        return service.whoami(db_session, principal)
