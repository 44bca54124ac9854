"""Statements over quota documents.

Tier documents are platform-wide. A tenant's document, and those of its keys, are reached only
through ``TenantQuotaRepository``, built for one tenant: a key of another tenant reads as
missing. ``all_*`` read everything, for the snapshot builder alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session, class_mapper

from trunkline.kit.db import chunked, conflict_insert
from trunkline.models import ApiKey, KeyQuota, Tenant, TenantQuota, Tier, TierQuota
from trunkline.models.base import _now
from trunkline.quota.policy import DocT, folded
from trunkline.quota.schemas import QuotaLimits, ScopeLimits


def _load(raw: dict[str, Any], kind: type[DocT]) -> DocT:
    # A budget is stored as cost_per_month_usd (``STORED_BUDGET``): an amount of the price
    # book's currency, as it was before the rename too.
    return folded(msgspec.convert(raw, kind))


STORED_BUDGET = "cost_per_month_usd"
"""The name a budget is stored under: the one the previous release reads (its documents refuse
unknown fields), so a control plane rolled back, or not yet upgraded beside this one, reads
what this one stored. The amount is the price book's currency's either way; ``_load`` folds
it back into ``cost_per_month``."""


def _dump(doc: QuotaLimits | ScopeLimits) -> dict[str, Any]:
    dumped: dict[str, Any] = msgspec.to_builtins(doc)
    scopes = dumped.values() if isinstance(doc, QuotaLimits) else [dumped]
    for scope in scopes:
        if "cost_per_month" in scope:
            scope[STORED_BUDGET] = scope.pop("cost_per_month")
    return dumped


class QuotaRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def tier_doc(self, tier_id: uuid.UUID) -> QuotaLimits | None:
        row = self._session.get(TierQuota, tier_id)
        return None if row is None else _load(row.limits, QuotaLimits)

    def set_tier_doc(self, tier_id: uuid.UUID, doc: QuotaLimits) -> bool:
        return _store(self._session, TierQuota, tier_id, _dump(doc))

    def tier_docs_by_name(self) -> dict[str, QuotaLimits]:
        rows = self._session.execute(
            select(Tier.name, TierQuota.limits).join(TierQuota, TierQuota.tier_id == Tier.id)
        )
        return {name: _load(limits, QuotaLimits) for name, limits in rows}

    def all_tenant_docs(self) -> dict[str, QuotaLimits]:
        rows = self._session.execute(select(TenantQuota.tenant_id, TenantQuota.limits))
        return {str(tenant_id): _load(limits, QuotaLimits) for tenant_id, limits in rows}

    def all_key_docs(self) -> dict[str, ScopeLimits]:
        """Public key id -> the key's own document, or the one of the key it was rotated from
        (nearest first)."""
        own = {
            key_row_id: _load(limits, ScopeLimits)
            for key_row_id, limits in self._session.execute(
                select(KeyQuota.api_key_id, KeyQuota.limits)
            )
        }
        if not own:
            return {}
        keys = self._session.execute(select(ApiKey.id, ApiKey.key_id, ApiKey.rotated_from)).all()
        parent = {row_id: rotated_from for row_id, _key_id, rotated_from in keys}
        docs = {}
        for row_id, key_id, _rotated_from in keys:
            found = _nearest(row_id, own, parent)
            if found is not None:
                docs[key_id] = found
        return docs

    def cost_budgets(self) -> list[str]:
        """Every cost budget set, as ``tier gold, tenant scope: 100`` (``null``, unlimited,
        is none): what a change of the price book's currency would make read otherwise."""
        scopes: list[tuple[str, ScopeLimits]] = []
        tiers = select(Tier.name, TierQuota.limits).join(TierQuota, TierQuota.tier_id == Tier.id)
        tenants = select(Tenant.slug, TenantQuota.limits).join(
            TenantQuota, TenantQuota.tenant_id == Tenant.id
        )
        for kind, statement in (("tier", tiers), ("tenant", tenants)):
            for name, limits in self._session.execute(statement):
                doc = _load(limits, QuotaLimits)
                scopes += [
                    (f"{kind} {name}, {scope} scope", getattr(doc, scope))
                    for scope in QuotaLimits.__struct_fields__
                ]
        keys = select(ApiKey.key_id, KeyQuota.limits).join(
            KeyQuota, KeyQuota.api_key_id == ApiKey.id
        )
        for key_id, limits in self._session.execute(keys):
            scopes.append((f"key {key_id}", _load(limits, ScopeLimits)))
        return [
            f"{where}: {scope.cost_per_month:g}"
            for where, scope in scopes
            if isinstance(scope.cost_per_month, float | int)
        ]

    def tenant_docs(self, tenant_ids: Collection[uuid.UUID]) -> dict[str, QuotaLimits]:
        """The documents set of ``tenant_ids``, in a statement per ``chunked`` (the tenants of
        some shards' keys may be more than a statement may list)."""
        return {
            str(tenant_id): _load(limits, QuotaLimits)
            for tenant_id, limits in self.stored_tenant_docs(tenant_ids).items()
        }

    def stored_tenant_docs(self, tenant_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, Stored]:
        """The documents set of ``tenant_ids``, as stored (see ``stores_anew``), in a statement
        per ``chunked``."""
        return {
            tenant_id: limits
            for chunk in chunked(self._session, tenant_ids)
            for tenant_id, limits in self._session.execute(
                select(TenantQuota.tenant_id, TenantQuota.limits).where(
                    TenantQuota.tenant_id.in_(chunk)
                )
            )
        }

    def set_tenant_docs(self, docs: Mapping[uuid.UUID, QuotaLimits]) -> None:
        """Store these tenants' documents (by tenant id) in one statement: an apply of
        thousands of tenants writes them at once (``stores_anew`` tells which differ)."""
        if docs:
            _store_many(self._session, TenantQuota, {t: _dump(d) for t, d in docs.items()})

    def key_docs(self, keys: Mapping[uuid.UUID, KeyRow]) -> dict[str, ScopeLimits]:
        """``all_key_docs`` of only ``keys`` (by row id: public id and the row rotated from),
        reading their ancestors' rows alone."""
        parent = {row_id: rotated_from for row_id, (_key_id, rotated_from) in keys.items()}
        above = {up for up in parent.values() if up is not None and up not in parent}
        while above:
            rows = [
                row
                for chunk in chunked(self._session, above)
                for row in self._session.execute(
                    select(ApiKey.id, ApiKey.rotated_from).where(ApiKey.id.in_(chunk))
                )
            ]
            parent.update({row_id: rotated_from for row_id, rotated_from in rows})
            above = {up for _row, up in rows if up is not None and up not in parent}
        own = {
            key_row_id: _load(limits, ScopeLimits)
            for chunk in chunked(self._session, parent)
            for key_row_id, limits in self._session.execute(
                select(KeyQuota.api_key_id, KeyQuota.limits).where(KeyQuota.api_key_id.in_(chunk))
            )
        }
        docs = {}
        for row_id, (key_id, _rotated_from) in keys.items():
            if own and (found := _nearest(row_id, own, parent)) is not None:
                docs[key_id] = found
        return docs


KeyRow = tuple[str, uuid.UUID | None]
"""A key's public id and the row it was rotated from."""


Stored = dict[str, Any]
"""A quota document as its row holds it."""


def stores_anew(stored: Stored | None, doc: QuotaLimits) -> bool:
    """Whether setting ``doc`` where ``stored`` is (None: no document) changes what is stored."""
    return stored != _dump(doc)


class TenantQuotaRepository:
    def __init__(self, session: Session, tenant_id: uuid.UUID) -> None:
        self._session = session
        self._tenant_id = tenant_id

    def doc(self) -> QuotaLimits | None:
        row = self._session.get(TenantQuota, self._tenant_id)
        return None if row is None else _load(row.limits, QuotaLimits)

    def set_doc(self, doc: QuotaLimits) -> bool:
        return _store(self._session, TenantQuota, self._tenant_id, _dump(doc))

    def key_doc(self, key_id: str) -> ScopeLimits | None:
        """The document in force for a key of this tenant (its own, or its ancestor's): the
        key's row and its ancestors' are read, not every key of the tenant (half a second
        for a tenant of 50,000 keys)."""
        row = self._session.execute(
            select(ApiKey.id, ApiKey.rotated_from).where(
                ApiKey.tenant_id == self._tenant_id, ApiKey.key_id == key_id
            )
        ).one_or_none()
        if row is None:
            return None
        # a key is rotated within its tenant: its ancestors are this tenant's keys
        return (
            QuotaRepository(self._session)
            .key_docs({row.id: (key_id, row.rotated_from)})
            .get(key_id)
        )

    def set_key_doc(self, key_id: str, doc: ScopeLimits) -> bool:
        row_id = self.key_row_id(key_id)
        if row_id is None:
            raise LookupError(key_id)
        return _store(self._session, KeyQuota, row_id, _dump(doc))

    def key_row_id(self, key_id: str) -> uuid.UUID | None:
        return self._session.scalar(
            select(ApiKey.id).where(ApiKey.tenant_id == self._tenant_id, ApiKey.key_id == key_id)
        )


def _nearest(
    row_id: uuid.UUID, own: dict[uuid.UUID, ScopeLimits], parent: dict[uuid.UUID, uuid.UUID | None]
) -> ScopeLimits | None:
    current: uuid.UUID | None = row_id
    seen: set[uuid.UUID] = set()
    while current is not None and current not in seen:
        if current in own:
            return own[current]
        seen.add(current)
        current = parent.get(current)
    return None


_Document = TypeVar("_Document", TierQuota, TenantQuota, KeyQuota)


def _store(
    session: Session, model: type[_Document], ident: uuid.UUID, limits: dict[str, Any]
) -> bool:
    """Insert or update the document of ``ident``; whether it changed. One statement
    (``INSERT … ON CONFLICT … DO UPDATE``): two first PUTs of one scope at once both inserted,
    and the second was a 409 though PUT is idempotent."""
    row = session.get(model, ident)
    if row is not None and row.limits == limits:
        return False
    _store_many(session, model, {ident: limits})
    if row is not None:
        session.expire(row)  # the statement wrote past the ORM's copy
    return True


def _store_many(
    session: Session, model: type[_Document], documents: Mapping[uuid.UUID, dict[str, Any]]
) -> None:
    """Insert or update each of ``documents`` (by row id), in one statement."""
    [key] = class_mapper(model).primary_key
    insert = conflict_insert(session, model)
    statement = insert.on_conflict_do_update(
        index_elements=[key.name],
        set_={"limits": insert.excluded.limits, "updated_at": insert.excluded.updated_at},
    )
    now = _now()
    rows = [{key.name: i, "limits": limits, "updated_at": now} for i, limits in documents.items()]
    session.execute(statement, rows)
