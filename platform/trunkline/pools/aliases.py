"""Public model aliases: which model answers, on which pools, and whether it cascades.

An alias reaches every pool serving its model unless it lists its own pools. A cascading
alias asks its model first and escalates to a larger one when a check on the answer fails
(see docs/cascading.md); both are plain models of the catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from trunkline.errors import Conflict, InvalidRequest, NotFound
from trunkline.kit.pagination import EVERYTHING, Page, PageRequest
from trunkline.models import Model as ModelRow
from trunkline.models import ModelAlias
from trunkline.pools.catalog_models import cascade_problem, check_served_name, insert_alias
from trunkline.pools.lookups import model_row
from trunkline.pools.repository import ModelRepository, PoolRepository
from trunkline.pools.schemas import AliasCreate, AliasUpdate, AliasView, Cascade, CascadeChecks
from trunkline.tenancy.changes import assign, mark_config_changed
from trunkline.tenancy.schemas import given


def list_aliases(session: Session, page: PageRequest = EVERYTHING) -> Page[AliasView]:
    return ModelRepository(session).aliases_with_models(page).map(lambda row: _view(*row))


def get_alias(session: Session, alias: str) -> AliasView:
    row = alias_row(session, alias)
    return _stored_view(session, row, model_row(session, _model_name(session, row)))


def create_alias(session: Session, data: AliasCreate) -> AliasView:
    model = model_row(session, data.model, param="model")
    row = insert_alias(session, model, data.alias, param="alias")
    configure_alias(session, row, model, data.pools, data.cascade)
    mark_config_changed(session)
    return _stored_view(session, row, model)


def update_alias(session: Session, alias: str, data: AliasUpdate) -> AliasView:
    row = alias_row(session, alias)
    values = given(data)
    model = model_row(session, values.get("model", _model_name(session, row)), param="model")
    pools = values.get("pools", row.pools)
    if "pools" not in values and pools and model.id != row.model_id:
        raise Conflict(
            f"alias {alias!r} is limited to pools of its current model ({', '.join(pools)}): "
            f"send the pools of {model.name!r} it may use with the model, or null for every one",
            param="model",
        )
    cascade = values["cascade"] if "cascade" in values else stored_cascade(session, row)
    moved = bool(assign(row, {"model_id": model.id}))
    # a cascade the caller did not send refuses the model it sent
    refused = "cascade.escalate_to" if "cascade" in values else "model"
    if configure_alias(session, row, model, pools, cascade, cascade_param=refused) or moved:
        session.flush()
        mark_config_changed(session)
    return _stored_view(session, row, model)


def configure_alias(
    session: Session,
    row: ModelAlias,
    model: ModelRow,
    pools: Sequence[str] | None,
    cascade: Cascade | None,
    *,
    cascade_param: str = "cascade.escalate_to",
) -> list[str]:
    """Check and set an alias's pools and cascade; returns what changed, for reports.
    ``cascade_param``: the field a cascade that does not fit ``model`` is refused at."""
    check_served_name(session, row.alias, model, cascading=cascade is not None, param="alias")
    _check_pools(session, model, pools)
    escalate_id, checks = None, None
    if cascade is not None:
        large = model_row(session, cascade.escalate_to, param="cascade.escalate_to")
        _check_cascade(model, large, cascade_param)
        escalate_id, checks = large.id, cascade.checks.stored()
    values = {
        "pools": None if pools is None else sorted(set(pools)),
        "escalate_model_id": escalate_id,
        "cascade_checks": checks,
    }
    changed = assign(row, values)
    return [said for key, (old, new) in changed.items() for said in _said(session, key, old, new)]


_CHECKS = {"on_truncation": "truncation", "on_refusal": "refusal"}
"""A check's name in a document (``CascadeChecks``) where its stored name differs."""


def _said(session: Session, column: str, old: Any, new: Any) -> list[str]:
    """A change of an alias as a report says it, in the documents' terms: the model a cascade
    escalates to by name, each check that changed (not the columns that hold them)."""
    if column == "escalate_model_id":
        models = ModelRepository(session)
        was, now = (None if i is None else getattr(models.get(i), "name", None) for i in (old, new))
        return [f"escalate_to {was!r} -> {now!r}"]
    if column == "cascade_checks":
        old, new = old or {}, new or {}
        return [
            f"checks.{_CHECKS.get(key, key)} {old.get(key)!r} -> {new.get(key)!r}"
            for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)
        ]
    return [f"{column} {old!r} -> {new!r}"]


def stored_cascade(session: Session, row: ModelAlias) -> Cascade | None:
    return _cascade(row, _escalation(session, row))


def _escalation(session: Session, row: ModelAlias) -> ModelRow | None:
    """The model the alias's cascade escalates to; None when it does not cascade."""
    if row.escalate_model_id is None:
        return None
    large = ModelRepository(session).get(row.escalate_model_id)
    assert large is not None  # a foreign key guards it
    return large


def _cascade(row: ModelAlias, large: ModelRow | None) -> Cascade | None:
    if large is None:
        return None
    return Cascade(escalate_to=large.name, checks=CascadeChecks.of_stored(row.cascade_checks or {}))


def alias_row(session: Session, alias: str) -> ModelAlias:
    row = ModelRepository(session).alias(alias)
    if row is None:
        raise NotFound(f"alias {alias!r} not found", param="alias")
    return row


def _check_pools(session: Session, model: ModelRow, pools: Sequence[str] | None) -> None:
    for index, name in enumerate(pools or ()):
        found = PoolRepository(session).by_name(name)
        if found is None:
            raise InvalidRequest(f"unknown pool {name!r}", param=f"pools[{index}]")
        if found[0].model_id != model.id:
            raise InvalidRequest(
                f"pool {name!r} serves {found[1].name!r}, not {model.name!r}",
                param=f"pools[{index}]",
            )


def _check_cascade(small: ModelRow, large: ModelRow, param: str) -> None:
    if (problem := cascade_problem(small, large)) is not None:
        raise InvalidRequest(problem, param=param)


def _model_name(session: Session, row: ModelAlias) -> str:
    model = ModelRepository(session).get(row.model_id)
    assert model is not None  # a foreign key guards it
    return model.name


def _stored_view(session: Session, row: ModelAlias, model: ModelRow) -> AliasView:
    return _view(row, model, _escalation(session, row))


def _view(row: ModelAlias, model: ModelRow, large: ModelRow | None) -> AliasView:
    """The alias as the API shows it; ``large``: the model its cascade escalates to."""
    pools = None if row.pools is None else list(row.pools)
    return AliasView(row.alias, model.name, pools, _cascade(row, large))
