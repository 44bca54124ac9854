"""Which tenants a statement covers: one, a group of them, or every tenant."""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, true

TenantScope: TypeAlias = uuid.UUID | frozenset[uuid.UUID] | None
"""One tenant, a group of tenants (an export of every tenant goes a group at a time), or
every tenant (None)."""


def in_scope(column: Any, tenants: TenantScope) -> ColumnElement[bool]:
    """``column`` (a tenant id) is one of ``tenants``."""
    if tenants is None:
        return true()
    if isinstance(tenants, uuid.UUID):
        return column == tenants  # type: ignore[no-any-return]
    return column.in_(tenants)  # type: ignore[no-any-return]
