"""Statements over rollups for the usage API, always scoped to one tenant (and, for
developers, to the keys they created, those deleted with their project included)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, union_all
from sqlalchemy.orm import Session

from trunkline.models import (
    ApiKey,
    Project,
    RetiredKey,
    RetiredProject,
    UsageRollup,
    UsageRollupWatermark,
)


class UsageRepository:
    def __init__(
        self, session: Session, tenant_id: uuid.UUID, *, created_by: uuid.UUID | None = None
    ) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self._created_by = created_by

    def totals(
        self,
        start: datetime,
        end: datetime,
        group: str,
        *,
        model: str | None = None,
        project_id: uuid.UUID | None = None,
        key_id: str | None = None,
    ) -> list[Any]:
        """Sums per (group, model, tier, outcome) between ``start`` and ``end``, a stretch one
        price book version prices: what rating needs, and no more. Grouped by day, the group
        is the hour (a day is made of them). Summed per hour for every group, a month of a
        tenant with many keys came back as keys x hours rows: 216,000 for 300 keys, 15 s."""
        r = UsageRollup
        grouped = {
            "model": r.model,
            "project": r.project_id,
            "key": r.api_key_id,
            "tier": r.tier,
            "day": r.hour,
        }
        dims = [grouped[group], r.model, r.tier, r.outcome]
        statement = (
            select(
                *dims,
                func.sum(r.requests),
                func.sum(r.prompt_tokens),
                # capped at the prompt row by row, as its hour's bill caps them (rows metered
                # before the gateway capped them may hold more)
                func.sum(
                    case(
                        (r.cached_tokens > r.prompt_tokens, r.prompt_tokens), else_=r.cached_tokens
                    )
                ),
                func.sum(r.completion_tokens),
            )
            .where(r.tenant_id == self._tenant_id, r.hour >= start, r.hour < end)
            .group_by(*dims)
        )
        if self._created_by is not None:
            mine = union_all(
                *(
                    select(k.key_id).where(
                        k.tenant_id == self._tenant_id, k.created_by == self._created_by
                    )
                    for k in (ApiKey, RetiredKey)
                )
            )
            statement = statement.where(r.api_key_id.in_(mine))
        if model is not None:
            statement = statement.where(r.model == model)
        if project_id is not None:
            statement = statement.where(r.project_id == project_id)
        if key_id is not None:
            statement = statement.where(r.api_key_id == key_id)
        rows: Any = self._session.execute(statement).all()
        return list(rows)

    def pending_hours(self, start: datetime, end: datetime) -> int:
        """The tenant's hours between ``start`` and ``end`` with usage not rolled up yet."""
        w = UsageRollupWatermark
        statement = select(func.count()).where(
            w.tenant_id == self._tenant_id,
            w.hour >= start,
            w.hour < end,
            w.changed_seq > w.rolled_seq,
        )
        return int(self._session.scalar(statement) or 0)

    def project_names(self) -> dict[uuid.UUID, str]:
        """Names of the tenant's projects, the deleted ones' included (``retired_projects``),
        as its bill names them: usage outlives the project it was made in."""
        retired = select(RetiredProject.id, RetiredProject.name).where(
            RetiredProject.tenant_id == self._tenant_id
        )
        statement = select(Project.id, Project.name).where(Project.tenant_id == self._tenant_id)
        names = {key: value for key, value in self._session.execute(retired)}
        names.update({key: value for key, value in self._session.execute(statement)})
        return names

    def key_names(self) -> dict[str, str]:
        """Names of the tenant's keys, those deleted with their project included."""
        names: dict[str, str] = {}
        for k in (RetiredKey, ApiKey):
            statement = select(k.key_id, k.name).where(k.tenant_id == self._tenant_id)
            names.update({key: value for key, value in self._session.execute(statement)})
        return names
