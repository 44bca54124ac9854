"""Every listing of the control plane reads a page in a fixed number of statements, on SQLite
and PostgreSQL: a page of 50 rows takes no more round trips than one of 5. A statement per row
(an alias's cascade target read one at a time) made a page of 1,000 aliases 1,000 round trips."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.runtime import Runtime
from trunkline.kit.db import transaction
from trunkline.models import UsageRollup
from trunkline.pools import aliases, catalog_models, entitlements, flavors, service
from trunkline.pools.endpoint_schemas import EndpointSpec
from trunkline.pools.schemas import (
    AliasCreate,
    Cascade,
    FlavorCreate,
    ModelCreate,
    PoolCreate,
)
from trunkline.tenancy import service as tenancy
from trunkline.tenancy.schemas import MemberAdd, ProjectCreate, TenantCreate, TierCreate
from unit.controlplane.cp_support import World, build_world

T = "/api/v1/tenants"
CATALOG = "/api/v1/catalog"
FEW, MANY = 5, 50


@pytest.fixture
def world(runtime: Runtime) -> Iterator[World]:
    """The world, less the periodic snapshot check: its statements, run beside a request's
    (after the seeds below commit unpublished), would count with them."""
    with TestClient[Any](create_controlplane_app(runtime, snapshot_check_s=3600)) as client:
        yield build_world(runtime, client)


@contextmanager
def counted(world: World) -> Iterator[list[str]]:
    """The statements the API's connections run while in the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(world.runtime.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(world.runtime.engine, "before_cursor_execute", record)


def _cascading_aliases(session: Session, world: World, rows: range) -> None:
    """Aliases of their own model each, escalating to a model no alias names (so no page
    loads it by the way), half of them limited to a pool."""
    for n in rows:
        catalog_models.create_model(session, ModelCreate(name=f"small-{n:03d}"))
        catalog_models.create_model(session, ModelCreate(name=f"large-{n:03d}"))
        pools = [f"pool-{n:03d}"] if n % 2 else None
        if pools:
            spec = PoolCreate(name=pools[0], model=f"small-{n:03d}", flavor="l40s", region="eu")
            service.create_pool(session, spec)
        cascade = Cascade(escalate_to=f"large-{n:03d}")
        create = AliasCreate(alias=f"auto-{n:03d}", model=f"small-{n:03d}", pools=pools,
                             cascade=cascade)  # fmt: skip
        aliases.create_alias(session, create)


def _models_with_aliases(session: Session, world: World, rows: range) -> None:
    for n in rows:
        catalog_models.create_model(
            session, ModelCreate(name=f"m-{n:03d}", aliases=[f"m{n}-a", f"m{n}-b"])
        )


def _pools_with_endpoints(session: Session, world: World, rows: range) -> None:
    for n in rows:
        spec = PoolCreate(name=f"p-{n:03d}", model="llama-3.1-8b-instruct", flavor="l40s",
                          region="eu-west")  # fmt: skip
        service.create_pool(session, spec)
        urls = [EndpointSpec(url=f"http://10.0.{n}.{i}:8000") for i in (1, 2)]
        service.set_pool_endpoints(session, f"p-{n:03d}", urls)


def _tenants(session: Session, world: World, rows: range) -> None:
    for n in rows:
        tenancy.create_tenant(session, TenantCreate(slug=f"t-{n:03d}", name=f"T {n}", tier="gold"))


def _entitled_tenants(session: Session, world: World, rows: range) -> None:
    _tenants(session, world, rows)
    for n in rows:
        tenant = tenancy.tenant_by_slug(session, f"t-{n:03d}")
        entitlements.grant_entitlement(session, tenant.id, "bge-small")


def _members(session: Session, world: World, rows: range) -> None:
    acme = _acme(world)
    for n in rows:
        tenancy.add_member(
            session, acme, MemberAdd(email=f"m{n:03d}@acme.example", role="developer")
        )


def _projects(session: Session, world: World, rows: range) -> None:
    for n in rows:
        tenancy.create_project(session, _acme(world), ProjectCreate(name=f"p-{n:03d}"))


def _keys(world: World, rows: range) -> list[dict[str, Any]]:
    """Keys through the API (a batch), in acme's demo project."""
    project = world.project("acme", "demo")
    batch = {"keys": [{"project_id": project, "name": f"k{n}"} for n in rows]}
    created: list[dict[str, Any]] = world.api("acme-admin").post(
        f"{T}/{world.tenant('acme')}/keys/batch", batch
    )
    return [c["key"] for c in created]


def _usage_of_keys(world: World, rows: range) -> None:
    """A rolled-up hour of usage for each of new keys, in November 2026."""
    keys = _keys(world, rows)
    hour = datetime(2026, 11, 3, 10, tzinfo=UTC)
    with transaction(world.runtime.session_factory) as session:
        for key in keys:
            session.add(
                UsageRollup(
                    tenant_id=_acme(world), hour=hour, project_id=uuid.UUID(key["project_id"]),
                    api_key_id=key["key_id"], model="llama-3.1-8b-instruct", pool="h100-eu-west",
                    tier="gold", region="eu-west", accelerator="h100", outcome="completed",
                    requests=1, prompt_tokens=10, cached_tokens=0, completion_tokens=5,
                    slo_eligible=1, slo_met=1, updated_at=hour,
                )
            )  # fmt: skip


def _entitled_aliases(session: Session, world: World, rows: range) -> None:
    """Aliases acme and globex may both use, cascading ones among them."""
    _cascading_aliases(session, world, rows)
    for n in rows:
        for slug in ("acme", "globex"):
            entitlements.grant_entitlement(session, _tenant(world, slug), f"auto-{n:03d}")


def _acme(world: World) -> uuid.UUID:
    return _tenant(world, "acme")


def _tenant(world: World, slug: str) -> uuid.UUID:
    return uuid.UUID(world.tenant(slug))


def _tiers(session: Session, world: World, rows: range) -> None:
    for n in rows:
        tenancy.create_tier(session, TierCreate(name=f"tier-{n:03d}", priority=n, ttft_slo_ms=500))


def _flavors(session: Session, world: World, rows: range) -> None:
    for n in rows:
        flavors.create_flavor(session, FlavorCreate(name=f"f-{n:03d}"))


Seed = Callable[[World, range], None]


def _in_a_transaction(seed: Callable[[Session, World, range], None]) -> Seed:
    def seeding(world: World, rows: range) -> None:
        with transaction(world.runtime.session_factory) as session:
            seed(session, world, rows)

    return seeding


@dataclass(frozen=True)
class Listing:
    path: str
    seed: Seed
    who: str = "root"
    rows: Callable[[Any], list[Any]] = lambda body: list(body)
    """The rows of an answer (a report holds them in ``rows``)."""

    def __str__(self) -> str:
        return f"{self.who} GET {self.path}"


LISTINGS = [
    Listing(CATALOG + "/aliases", _in_a_transaction(_cascading_aliases)),
    Listing(CATALOG + "/models", _in_a_transaction(_models_with_aliases)),
    Listing(CATALOG + "/pools", _in_a_transaction(_pools_with_endpoints)),
    Listing(T, _in_a_transaction(_tenants)),
    Listing(T + "?entitled_to=bge-small", _in_a_transaction(_entitled_tenants)),
    Listing(T + "/{acme}/members", _in_a_transaction(_members)),
    Listing(T + "/{acme}/projects", _in_a_transaction(_projects)),
    Listing(T + "/{acme}/keys", _keys),
    Listing(T + "/{acme}/keys", _keys, who="acme-admin"),
    Listing(T + "/{acme}/entitlements", _in_a_transaction(_entitled_aliases), who="acme-dev"),
    Listing("/api/v1/models", _in_a_transaction(_entitled_aliases)),
    Listing("/api/v1/models", _in_a_transaction(_entitled_aliases), who="acme-dev"),
    Listing(
        T + "/{acme}/usage?period=2026-11&group_by=key",
        _usage_of_keys,
        who="acme-admin",
        rows=lambda body: body["rows"],
    ),
    Listing("/api/v1/tiers", _in_a_transaction(_tiers)),
    Listing(CATALOG + "/flavors", _in_a_transaction(_flavors)),
]


def _statements(world: World, listing: Listing) -> tuple[int, Any]:
    path = listing.path.format(acme=world.tenant("acme"))
    with counted(world) as seen:
        body = world.api(listing.who).get(path)
    return len(seen), body


@pytest.mark.parametrize("listing", LISTINGS, ids=str)
def test_a_listing_of_more_rows_takes_no_more_statements(world: World, listing: Listing) -> None:
    listing.seed(world, range(FEW))
    few, few_body = _statements(world, listing)
    listing.seed(world, range(FEW, MANY))
    many, many_body = _statements(world, listing)

    assert len(listing.rows(many_body)) - len(listing.rows(few_body)) == MANY - FEW
    assert many == few, f"{listing}: {few} statements, then {many} with {MANY - FEW} more rows"


def test_the_aliases_page_shows_each_alias_as_its_own_answer_does(world: World) -> None:
    _in_a_transaction(_cascading_aliases)(world, range(4))

    listed = world.admin.get(CATALOG + "/aliases", params={"limit": 1000})
    one_by_one = [world.admin.get(f"{CATALOG}/aliases/{a['alias']}") for a in listed]

    assert listed == one_by_one
    auto = {a["alias"]: a for a in listed}
    assert auto["auto-001"]["cascade"]["escalate_to"] == "large-001"
    assert auto["auto-001"]["pools"] == ["pool-001"]
    assert (auto["auto-002"]["pools"], auto["llama-3.1-8b"]["cascade"]) == (None, None)
