"""Accelerator flavors of the catalog: the hardware a pool runs on, with its memory and cost.

Every mutation marks the unit of work so the composition root republishes the gateway snapshot
after commit.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from trunkline.errors import Conflict
from trunkline.models import AcceleratorFlavor
from trunkline.pools.lookups import flavor_row
from trunkline.pools.repository import FlavorRepository
from trunkline.pools.schemas import Flavor, FlavorCreate, FlavorUpdate, money
from trunkline.tenancy.changes import assign, flush_or_conflict, mark_config_changed
from trunkline.tenancy.schemas import given


def list_flavors(session: Session) -> list[Flavor]:
    return [Flavor.of(f) for f in FlavorRepository(session).all()]


def create_flavor(session: Session, data: FlavorCreate) -> Flavor:
    if FlavorRepository(session).by_name(data.name) is not None:
        raise Conflict(f"flavor {data.name!r} already exists", param="name")
    flavor = AcceleratorFlavor(
        name=data.name,
        vendor=data.vendor,
        memory_gb=data.memory_gb,
        cost_per_hour=money(data.cost_per_hour),
    )
    session.add(flavor)
    flush_or_conflict(session, f"flavor {data.name!r} already exists")
    mark_config_changed(session)
    return Flavor.of(flavor)


def update_flavor(session: Session, name: str, data: FlavorUpdate) -> Flavor:
    flavor = flavor_row(session, name)
    values = given(data)
    if "cost_per_hour" in values:
        values["cost_per_hour"] = money(values["cost_per_hour"])
    if assign(flavor, values):
        mark_config_changed(session)
    return Flavor.of(flavor)


def delete_flavor(session: Session, name: str) -> None:
    session.delete(flavor_row(session, name))
    flush_or_conflict(session, f"flavor {name!r} is used by a pool", param="name")
    mark_config_changed(session)
