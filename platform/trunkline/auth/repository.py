"""Statements over users, memberships and access tokens."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from trunkline.kit.db import chunked
from trunkline.models import AccessToken, Membership, Role, User


class UserRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, user_id: uuid.UUID) -> User | None:
        return self._session.get(User, user_id)

    def by_email(self, email: str) -> User | None:
        return self._session.scalars(select(User).where(User.email == email)).one_or_none()

    def by_emails(self, emails: Collection[str]) -> dict[str, User]:
        """The users of ``emails`` that exist, by e-mail, in a statement per ``chunked``."""
        return {
            user.email: user
            for chunk in chunked(self._session, emails)
            for user in self._session.scalars(select(User).where(User.email.in_(chunk)))
        }

    def add(self, user: User) -> User:
        self._session.add(user)
        return user

    def memberships(self, user_id: uuid.UUID) -> dict[uuid.UUID, Role]:
        rows = self._session.execute(
            select(Membership.tenant_id, Membership.role).where(Membership.user_id == user_id)
        )
        return dict(rows.all())


class AccessTokenRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def by_token_id(self, token_id: str) -> AccessToken | None:
        statement = select(AccessToken).where(AccessToken.token_id == token_id)
        return self._session.scalars(statement).one_or_none()

    def add(self, token: AccessToken) -> AccessToken:
        self._session.add(token)
        return token

    def revoke_all(self, user_id: uuid.UUID, at: datetime) -> int:
        """Revoke every access token of the user not revoked yet; returns how many."""
        statement = (
            update(AccessToken)
            .where(AccessToken.user_id == user_id, AccessToken.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        return int(self._session.execute(statement).rowcount)  # type: ignore[attr-defined]
