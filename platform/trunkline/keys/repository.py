"""Statements over API keys, always scoped to one tenant (and to one creator for developers)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.orm import Session

from trunkline.kit.pagination import Keyset, Page, PageRequest
from trunkline.models import ApiKey, Project

KEYS = Keyset("keys", (ApiKey.created_at, ApiKey.key_id))
"""Oldest first; the key id (unique) orders keys created at the same instant."""


class ApiKeyRepository:
    def __init__(
        self, session: Session, tenant_id: uuid.UUID, *, created_by: uuid.UUID | None = None
    ) -> None:
        """``created_by`` narrows the scope to the keys one user created (developers)."""
        self._session = session
        self._tenant_id = tenant_id
        self._created_by = created_by

    def _select(self) -> Select[ApiKey, str]:
        statement = (
            select(ApiKey, Project.name)
            .join(Project, ApiKey.project_id == Project.id)
            .where(ApiKey.tenant_id == self._tenant_id, Project.tenant_id == self._tenant_id)
        )
        if self._created_by is not None:
            statement = statement.where(ApiKey.created_by == self._created_by)
        return statement

    def page(
        self, request: PageRequest, project_id: uuid.UUID | None = None
    ) -> Page[tuple[ApiKey, str]]:
        statement = self._select()
        if project_id is not None:
            statement = statement.where(ApiKey.project_id == project_id)
        return KEYS.page(self._session, statement, request)

    def get(self, key_id: str) -> tuple[ApiKey, str] | None:
        statement = self._select().where(ApiKey.key_id == key_id)
        return self._session.execute(statement).one_or_none()

    def count_live(self, now: datetime) -> int:
        """How many keys in scope are neither revoked nor expired at ``now``: the ones in the
        gateways' configuration."""
        statement = select(func.count()).where(
            ApiKey.tenant_id == self._tenant_id,
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        )
        if self._created_by is not None:
            statement = statement.where(ApiKey.created_by == self._created_by)
        return int(self._session.scalar(statement) or 0)

    def revoke_all(self, at: datetime) -> int:
        """Revoke every key in scope not revoked yet (with ``created_by``: one user's);
        returns how many."""
        statement = update(ApiKey).where(
            ApiKey.tenant_id == self._tenant_id, ApiKey.revoked_at.is_(None)
        )
        if self._created_by is not None:
            statement = statement.where(ApiKey.created_by == self._created_by)
        result = self._session.execute(statement.values(revoked_at=at))
        return int(result.rowcount)  # type: ignore[attr-defined]

    def revoke(self, key: ApiKey, at: datetime) -> bool:
        """Revoke ``key`` unless it already is, in one conditional statement; whether this call
        revoked it. Two concurrent callers cannot both see it active: the database lets one
        update the row, and the other then finds it revoked."""
        statement = (
            update(ApiKey)
            .where(ApiKey.id == key.id, ApiKey.tenant_id == self._tenant_id)
            .where(ApiKey.revoked_at.is_(None))
            .values(revoked_at=at)
            .execution_options(synchronize_session="fetch")
        )
        return int(self._session.execute(statement).rowcount) == 1  # type: ignore[attr-defined]

    def add(self, key: ApiKey) -> ApiKey:
        if key.tenant_id != self._tenant_id:
            raise ValueError("key of another tenant")
        self._session.add(key)
        return key


def tenant_of_key(session: Session, key_id: str) -> uuid.UUID | None:
    """The tenant holding ``key_id``; for system callers (the CLI) that name a key alone."""
    return session.scalar(select(ApiKey.tenant_id).where(ApiKey.key_id == key_id))


def successors(session: Session, row_id: uuid.UUID) -> set[str]:
    """The public ids of the keys rotated from the key of row ``row_id``, and from those, on:
    they keep its own limits unless they have their own."""
    found: set[str] = set()
    above = {row_id}
    while above:
        rows = session.execute(
            select(ApiKey.id, ApiKey.key_id).where(ApiKey.rotated_from.in_(above))
        ).all()
        above = {row for row, key_id in rows if key_id not in found}
        found.update(key_id for _row, key_id in rows)
    return found
