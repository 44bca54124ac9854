"""Models of the catalog and their plain aliases: what engines serve, under which names clients
may call it, and which cascades each model may be in (aliases with pools or a cascade:
:mod:`trunkline.pools.aliases`).

Every mutation marks the unit of work so the composition root republishes the gateway snapshot
after commit.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from trunkline.billing.pricebook_store import unpriced_new_model
from trunkline.errors import Conflict, InvalidRequest, NotFound
from trunkline.kit.ids import utcnow
from trunkline.kit.pagination import EVERYTHING, Page, PageRequest
from trunkline.models import Model as ModelRow
from trunkline.models import ModelAlias
from trunkline.pools.lookups import model_row
from trunkline.pools.repository import ModelRepository, PoolRepository
from trunkline.pools.schemas import Model, ModelCreate, ModelUpdate
from trunkline.tenancy.changes import assign, flush_or_conflict, mark_config_changed
from trunkline.tenancy.schemas import given


def list_models(session: Session, page: PageRequest = EVERYTHING) -> Page[Model]:
    rows = ModelRepository(session).page(page)
    aliases = ModelRepository(session).aliases_of(m.id for m in rows.items)
    return rows.map(lambda m: Model.of(m, aliases[m.id]))


def get_model(session: Session, name: str) -> Model:
    return _model_view(session, model_row(session, name))


def create_model(session: Session, data: ModelCreate) -> Model:
    if ModelRepository(session).by_name(data.name) is not None:
        raise Conflict(f"model {data.name!r} already exists", param="name")
    check_name_not_an_alias(session, data.name)
    for index, alias in enumerate(data.aliases):
        if alias in data.aliases[:index]:
            raise InvalidRequest(f"alias {alias!r} listed twice", param=f"aliases[{index}]")
    if unpriced := unpriced_new_model(session, data.name, utcnow()):
        raise InvalidRequest(unpriced, param="name")
    model = ModelRow(
        name=data.name, kind=data.kind, context_length=data.context_length, params_b=data.params_b
    )
    session.add(model)
    flush_or_conflict(session, f"model {data.name!r} already exists")
    for index, alias in enumerate(data.aliases):
        insert_alias(session, model, alias, param=f"aliases[{index}]")
    mark_config_changed(session)
    return _model_view(session, model)


def update_model(session: Session, name: str, data: ModelUpdate) -> Model:
    model = model_row(session, name)
    changed = assign(model, given(data))
    if "kind" in changed:
        check_cascades_of(session, model)
    if changed:
        mark_config_changed(session)
    return _model_view(session, model)


def cascade_problem(small: ModelRow, large: ModelRow) -> str | None:
    """What keeps ``small`` from escalating to ``large`` in a cascade, None when nothing."""
    if large.id == small.id:
        return "a cascade escalates to another model than the one it tries first"
    if "embedding" in (small.kind, large.kind) or small.kind != large.kind:
        return (
            f"a cascade needs two generative models of one kind, got {small.kind!r} and "
            f"{large.kind!r}"
        )
    return None


def check_cascades_of(session: Session, model: ModelRow) -> None:
    """A model whose kind changed must still fit every cascade it is in (409 if not): else
    the cascade escalates a chat to an embedding model, say, and every later change of the
    alias fails on a cascade the caller did not send."""
    models = ModelRepository(session)
    for alias in models.cascades_of(model.id):
        assert alias.escalate_model_id is not None  # cascades_of: cascading aliases only
        small, large = models.get(alias.model_id), models.get(alias.escalate_model_id)
        assert small is not None and large is not None  # foreign keys guard them
        if (problem := cascade_problem(small, large)) is not None:
            raise Conflict(
                f"model {model.name!r} is in the cascade of alias {alias.alias!r}: {problem}",
                param="kind",
            )


def delete_model(session: Session, name: str) -> None:
    model = model_row(session, name)
    every_pool = PoolRepository(session).page(EVERYTHING).items
    pools = [p.name for p, m, _f in every_pool if m.id == model.id]
    if pools:
        raise Conflict(
            f"model {name!r} is served by pools {', '.join(pools)}; delete them first", param="name"
        )
    for alias in ModelRepository(session).cascades_of(model.id):
        if alias.model_id != model.id:  # the model's own aliases go with it
            raise Conflict(
                f"model {name!r} is what cascade {alias.alias!r} escalates to; change or "
                "delete that alias first",
                param="name",
            )
    session.delete(model)
    flush_or_conflict(session, f"model {name!r} is still referenced")
    mark_config_changed(session)


def add_alias(session: Session, model_name: str, alias: str) -> Model:
    model = model_row(session, model_name)
    insert_alias(session, model, alias, param="alias")
    mark_config_changed(session)
    return _model_view(session, model)


def remove_alias(session: Session, alias: str) -> None:
    """Remove an alias; tenants lose their entitlement to it with it."""
    row = ModelRepository(session).alias(alias)
    if row is None:
        raise NotFound(f"alias {alias!r} not found", param="alias")
    session.delete(row)
    session.flush()
    mark_config_changed(session)


def insert_alias(session: Session, model: ModelRow, alias: str, *, param: str) -> ModelAlias:
    """Add ``alias`` to ``model``; ``param``: the request's field that names it, for a refusal."""
    if ModelRepository(session).alias(alias) is not None:
        raise Conflict(f"alias {alias!r} already exists", param=param)
    check_served_name(session, alias, model, cascading=False, param=param)
    row = ModelAlias(alias=alias, model_id=model.id)
    session.add(row)
    flush_or_conflict(session, f"alias {alias!r} already exists")
    return row


def check_served_name(
    session: Session, alias: str, model: ModelRow, *, cascading: bool, param: str
) -> None:
    """An alias may take a model's name (the served name answers carry) only as a plain alias
    of that model: a client may call the name in an answer back (docs/gateway.md), and it
    must reach the model that answered, not another one or a cascade."""
    named = ModelRepository(session).by_name(alias)
    if named is None or (named.id == model.id and not cascading):
        return
    what = "a cascade" if cascading else f"an alias of {model.name!r}"
    raise Conflict(
        f"{alias!r} is the name model {named.name!r} answers with, so it cannot be {what}: "
        "clients calling that name back must reach that model alone",
        param=param,
    )


def check_name_not_an_alias(session: Session, name: str) -> None:
    """A new model may not take the name of an existing alias (see :func:`check_served_name`)."""
    if ModelRepository(session).alias(name) is not None:
        raise Conflict(
            f"{name!r} is already an alias; a model answers with its name, and clients calling "
            "it back would reach that alias instead",
            param="name",
        )


def _model_view(session: Session, model: ModelRow) -> Model:
    return Model.of(model, ModelRepository(session).aliases_of([model.id])[model.id])
