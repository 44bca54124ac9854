"""Users and access tokens: issue, authenticate, and the development login.

Access tokens are ``tlu_<id>_<secret>`` bearer secrets stored only as keyed
hashes, looked up by their public id and compared in constant time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from types import MappingProxyType

from sqlalchemy.orm import Session

from trunkline.auth import secrets
from trunkline.auth.principal import Principal
from trunkline.auth.repository import AccessTokenRepository, UserRepository
from trunkline.auth.schemas import AccessTokenIssued, MembershipView, UserView
from trunkline.errors import NotFound, Unauthenticated
from trunkline.kit.ids import utcnow
from trunkline.models import AccessToken, User

DEV_LOGIN_TTL = timedelta(hours=12)
ADMIN_TOKEN_TTL = timedelta(days=30)
_BEARER = "bearer "


def normalise_email(email: str) -> str:
    return email.strip().lower()


def ensure_user(
    session: Session,
    email: str,
    name: str = "",
    *,
    platform_admin: bool = False,
    known: dict[str, User] | None = None,
) -> User:
    """The user with this e-mail, created if needed; ``platform_admin`` only ever promotes.

    ``known``: the users of every e-mail this is called with, by normalised e-mail, read
    beforehand for many at once (``users_by_email``); nothing is read, a user created is added
    to it and written at the session's next flush."""
    users, email = UserRepository(session), normalise_email(email)
    user = users.by_email(email) if known is None else known.get(email)
    if user is None:
        user = users.add(
            User(id=uuid.uuid4(), email=email, name=name, is_platform_admin=platform_admin)
        )
        if known is None:
            session.flush()
        else:
            known[email] = user
    else:
        if name and not user.name:
            user.name = name
        if platform_admin and not user.is_platform_admin:
            user.is_platform_admin = True
    return user


def users_by_email(session: Session, emails: Iterable[str]) -> dict[str, User]:
    """The users of these e-mails that exist, by normalised e-mail (for ``ensure_user``)."""
    return UserRepository(session).by_emails({normalise_email(e) for e in emails})


def user_view(session: Session, user: User) -> UserView:
    roles = UserRepository(session).memberships(user.id)
    return UserView(
        id=user.id,
        email=user.email,
        name=user.name,
        is_platform_admin=user.is_platform_admin,
        memberships=[MembershipView(t, r) for t, r in sorted(roles.items(), key=str)],
    )


def whoami(session: Session, principal: Principal) -> UserView:
    user = None if principal.user_id is None else UserRepository(session).get(principal.user_id)
    if user is None:
        raise Unauthenticated("invalid access token", reason="invalid_token")
    return user_view(session, user)


def issue_access_token(
    session: Session,
    server_secret: bytes,
    user: User,
    *,
    ttl: timedelta | None = DEV_LOGIN_TTL,
    name: str = "",
) -> AccessTokenIssued:
    """Store a new token for ``user`` and return its plaintext (the only time it is shown)."""
    issued = secrets.issue(server_secret, secrets.ACCESS_TOKEN_PREFIX)
    expires_at = None if ttl is None else utcnow() + ttl
    AccessTokenRepository(session).add(
        AccessToken(
            token_id=issued.public_id,
            secret_hash=issued.digest,
            user_id=user.id,
            name=name[:100],
            expires_at=expires_at,
        )
    )
    session.flush()
    return AccessTokenIssued(issued.plaintext, "Bearer", expires_at, user_view(session, user))


def dev_login(session: Session, server_secret: bytes, email: str, name: str) -> AccessTokenIssued:
    """Create the user if needed and hand out a fresh token (development only; see controllers)."""
    user = ensure_user(session, email, name)
    return issue_access_token(session, server_secret, user, name="dev-login")


def admin_token(
    session: Session, server_secret: bytes, email: str, *, ttl: timedelta | None = ADMIN_TOKEN_TTL
) -> AccessTokenIssued:
    """A token for a platform admin with this e-mail, creating or promoting the user."""
    user = ensure_user(session, email, platform_admin=True)
    return issue_access_token(session, server_secret, user, ttl=ttl, name="admin-token")


def revoke_access_tokens(session: Session, email: str) -> int:
    """Revoke every access token of the user with this e-mail (a leaked token, someone who
    left): each answers 401 from its next request on. Returns how many were revoked."""
    user = UserRepository(session).by_email(normalise_email(email))
    if user is None:
        raise NotFound(f"no user {normalise_email(email)}", param="email")
    return AccessTokenRepository(session).revoke_all(user.id, utcnow())


def authenticate(
    session: Session,
    server_secret: bytes,
    authorization: str | None,
    previous_secrets: tuple[bytes, ...] = (),
) -> Principal:
    """The principal behind an ``Authorization: Bearer tlu_…`` header, or ``Unauthenticated``;
    its hash may be under one of the ``previous_secrets`` the operator still accepts."""
    if not authorization or not authorization.lower().startswith(_BEARER):
        raise Unauthenticated("missing bearer access token", reason="missing_token")
    parsed = secrets.parse(authorization[len(_BEARER) :].strip(), secrets.ACCESS_TOKEN_PREFIX)
    if parsed is None:
        raise Unauthenticated("malformed access token", reason="malformed_token")
    token = AccessTokenRepository(session).by_token_id(parsed.public_id)
    if token is None or not secrets.verify(
        server_secret, parsed.plaintext, token.secret_hash, previous_secrets
    ):
        raise Unauthenticated("invalid access token", reason="invalid_token")
    if token.revoked_at is not None:
        raise Unauthenticated("access token revoked", reason="revoked_token")
    if _expired(token.expires_at):
        raise Unauthenticated("access token expired", reason="expired_token")
    users = UserRepository(session)
    user = users.get(token.user_id)
    if user is None:
        raise Unauthenticated("invalid access token", reason="invalid_token")
    return Principal(
        user_id=user.id,
        email=user.email,
        is_platform_admin=user.is_platform_admin,
        memberships=MappingProxyType(users.memberships(user.id)),
    )


def _expired(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at <= utcnow()
