"""Catalog rows looked up by name, as every catalog operation finds what it is given: a name
that names nothing is ``NotFound`` when it is what the request is about, and ``InvalidRequest``
(naming the field) when a field of the request names it."""

from __future__ import annotations

from typing import NoReturn

from sqlalchemy.orm import Session

from trunkline.errors import InvalidRequest, NotFound
from trunkline.models import AcceleratorFlavor
from trunkline.models import Model as ModelRow
from trunkline.models import Pool as PoolRow
from trunkline.pools.repository import FlavorRepository, ModelRepository, PoolRepository


def flavor_row(session: Session, name: str, *, param: str | None = None) -> AcceleratorFlavor:
    flavor = FlavorRepository(session).by_name(name)
    if flavor is None:
        _missing("flavor", name, param)
    return flavor


def model_row(session: Session, name: str, *, param: str | None = None) -> ModelRow:
    model = ModelRepository(session).by_name(name)
    if model is None:
        _missing("model", name, param)
    return model


def pool_rows(session: Session, name: str) -> tuple[PoolRow, ModelRow, AcceleratorFlavor]:
    found = PoolRepository(session).by_name(name)
    if found is None:
        _missing("pool", name, None)
    return found


def _missing(what: str, name: str, param: str | None) -> NoReturn:
    if param is not None:
        raise InvalidRequest(f"unknown {what} {name!r}", param=param)
    raise NotFound(f"{what} {name!r} not found", param="name")
