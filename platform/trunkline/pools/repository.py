"""Statements over the catalog. Entitlements are tenant data: scoped to one tenant here."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session, aliased

from trunkline.kit.db import chunked, conflict_insert
from trunkline.kit.ids import utcnow
from trunkline.kit.pagination import EVERYTHING, Keyset, Page, PageRequest
from trunkline.models import (
    AcceleratorFlavor,
    Endpoint,
    Entitlement,
    Model,
    ModelAlias,
    Pool,
)

MODELS = Keyset("models", (Model.name,))
ALIASES = Keyset("aliases", (ModelAlias.alias,))
AVAILABLE_MODELS = Keyset("available-models", (ModelAlias.alias,))
POOLS = Keyset("pools", (Pool.name,))
ENTITLEMENTS = Keyset("entitlements", (ModelAlias.alias,))


class FlavorRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def all(self) -> Sequence[AcceleratorFlavor]:
        statement = select(AcceleratorFlavor).order_by(AcceleratorFlavor.name)
        return self._session.scalars(statement).all()

    def by_name(self, name: str) -> AcceleratorFlavor | None:
        statement = select(AcceleratorFlavor).where(AcceleratorFlavor.name == name)
        return self._session.scalars(statement).one_or_none()


class ModelRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def page(self, request: PageRequest) -> Page[Model]:
        return MODELS.scalars(self._session, select(Model), request)

    def by_name(self, name: str) -> Model | None:
        return self._session.scalars(select(Model).where(Model.name == name)).one_or_none()

    def get(self, model_id: uuid.UUID) -> Model | None:
        return self._session.get(Model, model_id)

    def aliases_of(self, model_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
        found: dict[uuid.UUID, list[str]] = {m: [] for m in model_ids}
        statement = select(ModelAlias.model_id, ModelAlias.alias).where(
            ModelAlias.model_id.in_(list(found))
        )
        for model_id, alias in self._session.execute(statement):
            found[model_id].append(alias)
        return found

    def aliases(self) -> dict[str, ModelAlias]:
        """Every alias by name (a few rows: the catalog)."""
        return {row.alias: row for row in self._session.scalars(select(ModelAlias))}

    def alias(self, alias: str) -> ModelAlias | None:
        statement = select(ModelAlias).where(ModelAlias.alias == alias)
        return self._session.scalars(statement).one_or_none()

    def cascades_of(self, model_id: uuid.UUID) -> Sequence[ModelAlias]:
        """Cascading aliases that try the model first or escalate to it."""
        statement = select(ModelAlias).where(
            ModelAlias.escalate_model_id.is_not(None),
            (ModelAlias.model_id == model_id) | (ModelAlias.escalate_model_id == model_id),
        )
        return self._session.scalars(statement.order_by(ModelAlias.alias)).all()

    def aliases_listing(self, pool: str) -> list[ModelAlias]:
        """The aliases whose own pool list names ``pool``, by name (a few rows: the catalog)."""
        rows = self._session.scalars(select(ModelAlias).order_by(ModelAlias.alias))
        return [alias for alias in rows if alias.pools and pool in alias.pools]

    def aliases_with_models(
        self, request: PageRequest
    ) -> Page[tuple[ModelAlias, Model, Model | None]]:
        """Each alias with its model and the model its cascade escalates to (None: it does
        not cascade), joined in the page's one statement: not read an alias at a time."""
        large = aliased(Model)
        statement = (
            _aliases_with_models()
            .add_columns(large)
            .outerjoin(large, ModelAlias.escalate_model_id == large.id)
        )
        return ALIASES.page(self._session, statement, request)

    def available(
        self, tenant_ids: frozenset[uuid.UUID] | None, request: PageRequest
    ) -> Page[tuple[ModelAlias, Model]]:
        """Aliases one of ``tenant_ids`` is entitled to (``None``: every alias)."""
        statement = _aliases_with_models()
        if tenant_ids is not None:
            entitled = select(Entitlement.id).where(
                Entitlement.alias_id == ModelAlias.id, Entitlement.tenant_id.in_(tenant_ids)
            )
            statement = statement.where(exists(entitled))
        return AVAILABLE_MODELS.page(self._session, statement, request)


class PoolRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def _select(self) -> Select[Pool, Model, AcceleratorFlavor]:
        return (
            select(Pool, Model, AcceleratorFlavor)
            .join(Model, Pool.model_id == Model.id)
            .join(AcceleratorFlavor, Pool.flavor_id == AcceleratorFlavor.id)
        )

    def page(self, request: PageRequest) -> Page[tuple[Pool, Model, AcceleratorFlavor]]:
        return POOLS.page(self._session, self._select(), request)

    def by_name(self, name: str) -> tuple[Pool, Model, AcceleratorFlavor] | None:
        statement = self._select().where(Pool.name == name)
        return self._session.execute(statement).one_or_none()

    def endpoints(self, pool_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[Endpoint]]:
        found: dict[uuid.UUID, list[Endpoint]] = {p: [] for p in pool_ids}
        statement = select(Endpoint).where(Endpoint.pool_id.in_(list(found))).order_by(Endpoint.url)
        for endpoint in self._session.scalars(statement):
            found[endpoint.pool_id].append(endpoint)
        return found


class EntitlementRepository:
    def __init__(self, session: Session, tenant_id: uuid.UUID) -> None:
        self._session = session
        self._tenant_id = tenant_id

    def _select(self) -> Select[Entitlement, ModelAlias, Model]:
        return (
            select(Entitlement, ModelAlias, Model)
            .join(ModelAlias, Entitlement.alias_id == ModelAlias.id)
            .join(Model, ModelAlias.model_id == Model.id)
            .where(Entitlement.tenant_id == self._tenant_id)
        )

    def page(self, request: PageRequest) -> Page[tuple[Entitlement, ModelAlias, Model]]:
        return ENTITLEMENTS.page(self._session, self._select(), request)

    def all(self) -> list[tuple[Entitlement, ModelAlias, Model]]:
        return self.page(EVERYTHING).items

    def aliases(self) -> set[str]:
        return {alias.alias for _e, alias, _m in self.all()}

    def get(self, alias: str) -> Entitlement | None:
        statement = self._select().where(ModelAlias.alias == alias)
        row = self._session.execute(statement).one_or_none()
        return None if row is None else row[0]

    def add(self, alias: ModelAlias) -> Entitlement:
        entitlement = Entitlement(tenant_id=self._tenant_id, alias_id=alias.id)
        self._session.add(entitlement)
        return entitlement

    def ensure(self, alias: ModelAlias) -> bool:
        """Entitle the tenant to ``alias`` unless it already is, a grant committed meanwhile
        by another transaction included (``ON CONFLICT DO NOTHING``: no unique-violation to
        turn into a 409); True when this call added it."""
        statement = (
            conflict_insert(self._session, Entitlement)
            .values(
                id=uuid.uuid4(), tenant_id=self._tenant_id, alias_id=alias.id, created_at=utcnow()
            )
            .on_conflict_do_nothing()
        )
        result = self._session.execute(statement)
        return bool(getattr(result, "rowcount", 0))

    def delete(self, entitlement: Entitlement) -> None:
        if entitlement.tenant_id != self._tenant_id:
            raise ValueError("entitlement of another tenant")
        self._session.delete(entitlement)


def _aliases_with_models() -> Select[ModelAlias, Model]:
    return select(ModelAlias, Model).join(Model, ModelAlias.model_id == Model.id)


def entitlements_of(
    session: Session, tenant_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Entitlement]]:
    """Each of ``tenant_ids``' entitlements by alias, in a statement per ``chunked``."""
    found: dict[uuid.UUID, dict[str, Entitlement]] = {t: {} for t in tenant_ids}
    for chunk in chunked(session, found):
        statement = (
            select(Entitlement, ModelAlias.alias)
            .join(ModelAlias, Entitlement.alias_id == ModelAlias.id)
            .where(Entitlement.tenant_id.in_(chunk))
        )
        for entitlement, alias in session.execute(statement):
            found[entitlement.tenant_id][alias] = entitlement
    return found


def entitled_counts(
    session: Session, tenant_ids: frozenset[uuid.UUID] | None, aliases: Iterable[str]
) -> dict[str, int]:
    """Alias (of ``aliases``) → how many of the given tenants (``None``: every tenant) are
    entitled to it, counted by the database in one statement."""
    statement = (
        select(ModelAlias.alias, func.count(Entitlement.id))
        .join(Entitlement, Entitlement.alias_id == ModelAlias.id)
        .where(ModelAlias.alias.in_(list(aliases)))
        .group_by(ModelAlias.alias)
    )
    if tenant_ids is not None:
        statement = statement.where(Entitlement.tenant_id.in_(tenant_ids))
    return {alias: count for alias, count in session.execute(statement)}
