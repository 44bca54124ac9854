"""ASGI authentication: turn the bearer access token into a ``Principal`` on the scope."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)
from litestar.types import ASGIApp
from sqlalchemy.orm import Session, sessionmaker

from trunkline.auth.principal import Principal
from trunkline.auth.service import authenticate
from trunkline.errors import Unauthenticated
from trunkline.kit.logging import bind

EXCLUDE_FROM_AUTH = "exclude_from_auth"
"""Route ``opt`` key for public handlers (health, development login)."""


class AccessTokenMiddleware(AbstractAuthenticationMiddleware):
    def __init__(
        self,
        app: ASGIApp,
        *,
        session_factory: sessionmaker[Session],
        server_secret: bytes,
        previous_secrets: tuple[bytes, ...] = (),
        exclude: list[str] | None = None,
    ) -> None:
        super().__init__(app, exclude=exclude, exclude_from_auth_key=EXCLUDE_FROM_AUTH)
        self._session_factory = session_factory
        self._server_secret = server_secret
        self._previous_secrets = previous_secrets

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        given = connection.headers.getall("authorization", [])
        if len(given) > 1:  # whichever came first was served: a proxy in front checks another
            refused = Unauthenticated(
                f"send one Authorization header; this request has {len(given)}",
                reason="ambiguous_token",
            )
            return AuthenticationResult(user=None, auth=refused)
        header = given[0] if given else None
        try:
            principal = await anyio.to_thread.run_sync(partial(self._authenticate, header))
        except Unauthenticated as refused:
            # raised by the route's guard instead, inside the route's error handling, so the
            # answer carries the request id and is logged like any other
            return AuthenticationResult(user=None, auth=refused)
        bind(user_id=str(principal.user_id))
        return AuthenticationResult(user=principal, auth=None)

    def _authenticate(self, header: str | None) -> Principal:
        with self._session_factory() as session:
            return authenticate(session, self._server_secret, header, self._previous_secrets)
