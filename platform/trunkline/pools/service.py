"""Pools and their endpoints: which model a pool serves on which flavor, in which region, for
which tiers and prompt lengths, and the engines it lists (shared by the admin API, the manifests
and the embedded launcher). Flavors: :mod:`trunkline.pools.flavors`; models and their aliases:
:mod:`trunkline.pools.catalog_models`.

Every mutation marks the unit of work so the composition root republishes the
gateway snapshot after commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec
from sqlalchemy.orm import Session

from trunkline.auth.secrets import STAND_IN, password_as_shown, without_password
from trunkline.errors import Conflict, InvalidRequest
from trunkline.kit.pagination import EVERYTHING, Page, PageRequest
from trunkline.models import AcceleratorFlavor, Endpoint
from trunkline.models import Model as ModelRow
from trunkline.models import Pool as PoolRow
from trunkline.pools.endpoint_schemas import Endpoint as EndpointView
from trunkline.pools.endpoint_schemas import EndpointSpec, engine_url
from trunkline.pools.lookups import flavor_row, model_row, pool_rows
from trunkline.pools.repository import ModelRepository, PoolRepository
from trunkline.pools.schemas import (
    Pool,
    PoolCreate,
    PoolUpdate,
    money,
    prompt_range_problem,
)
from trunkline.tenancy.changes import assign, flush_or_conflict, mark_config_changed
from trunkline.tenancy.repository import TierRepository
from trunkline.tenancy.schemas import given


def list_pools(session: Session, page: PageRequest = EVERYTHING) -> Page[Pool]:
    rows = PoolRepository(session).page(page)
    endpoints = PoolRepository(session).endpoints(p.id for p, _m, _f in rows.items)
    return rows.map(lambda row: _pool_view(*row, endpoints[row[0].id]))


def get_pool(session: Session, name: str) -> Pool:
    pool, model, flavor = pool_rows(session, name)
    return _pool_view(pool, model, flavor, PoolRepository(session).endpoints([pool.id])[pool.id])


def create_pool(session: Session, data: PoolCreate) -> Pool:
    if PoolRepository(session).by_name(data.name) is not None:
        raise Conflict(f"pool {data.name!r} already exists", param="name")
    check_prompt_range(data.min_prompt_tokens, data.max_prompt_tokens)
    tiers = known_tiers(session, data.tiers)
    session.add(
        PoolRow(
            name=data.name,
            model_id=model_row(session, data.model, param="model").id,
            flavor_id=flavor_row(session, data.flavor, param="flavor").id,
            region=data.region,
            burst=data.burst,
            block_size=data.block_size,
            cost_per_hour=None if data.cost_per_hour is None else money(data.cost_per_hour),
            capacity=data.capacity,
            tokens_per_s=data.tokens_per_s,
            min_prompt_tokens=data.min_prompt_tokens,
            max_prompt_tokens=data.max_prompt_tokens,
            tiers=tiers,
            max_num_batched_tokens=data.max_num_batched_tokens,
        )
    )
    flush_or_conflict(session, f"pool {data.name!r} already exists")
    mark_config_changed(session)
    return get_pool(session, data.name)


def update_pool(session: Session, name: str, data: PoolUpdate) -> Pool:
    pool, _model, _flavor = pool_rows(session, name)
    values = given(data)
    if "model" in values:
        values["model_id"] = model_row(session, values.pop("model"), param="model").id
        if values["model_id"] != pool.model_id:
            check_not_listed(
                session, name, "moving it to another model", param="model",
                model_id=values["model_id"],
            )  # fmt: skip
    if "flavor" in values:
        values["flavor_id"] = flavor_row(session, values.pop("flavor"), param="flavor").id
    if values.get("cost_per_hour") is not None:
        values["cost_per_hour"] = money(values["cost_per_hour"])
    check_prompt_range(
        values.get("min_prompt_tokens", pool.min_prompt_tokens),
        values.get("max_prompt_tokens", pool.max_prompt_tokens),
    )
    if "tiers" in values:
        values["tiers"] = known_tiers(session, values["tiers"])
    if assign(pool, values):
        session.flush()
        mark_config_changed(session)
    return get_pool(session, name)


def delete_pool(session: Session, name: str) -> None:
    pool, _model, _flavor = pool_rows(session, name)
    check_not_listed(session, name, "deleting it", param="name")
    session.delete(pool)
    session.flush()
    mark_config_changed(session)


def set_pool_endpoints(
    session: Session, pool_name: str, endpoints: Sequence[str | EndpointSpec]
) -> Pool:
    """Make ``endpoints`` the pool's complete, enabled endpoint list.

    Endpoints already listed keep their ids, so gateways keep their per-endpoint
    state; the snapshot is republished after commit only when something changed.
    """
    pool, _model, _flavor = pool_rows(session, pool_name)
    replace_endpoints(session, pool, endpoints)
    return get_pool(session, pool_name)


def replace_endpoints(
    session: Session,
    pool: PoolRow,
    endpoints: Sequence[str | EndpointSpec],
    *,
    field: str = "urls",
) -> list[str]:
    """Replace a pool's endpoints; returns what changed (``+url`` / ``-url``), empty if nothing.
    ``field``: what the caller calls the list, to name an endpoint refused (``urls[1]``)."""
    specs = [
        EndpointSpec(url=engine_url(e))
        if isinstance(e, str)
        else msgspec.structs.replace(e, url=engine_url(e.url))
        for e in endpoints
    ]
    wanted: dict[str, EndpointSpec] = {}
    for index, spec in enumerate(specs):
        if password_as_shown(spec.url):
            raise InvalidRequest(
                f"endpoint {without_password(spec.url)} carries the password as answers show it "
                f"({STAND_IN!r}), which would replace the real one: send the password",
                param=f"{field}[{index}]",
            )
        if spec.url in wanted:  # one of the two, and its KV-event addresses, would be lost
            raise InvalidRequest(
                f"endpoint {without_password(spec.url)!r} listed twice",
                param=f"{field}[{index}]",
            )
        wanted[spec.url] = spec
    current, changes = _held_endpoints(session, pool)
    for url, endpoint in current.items():
        if url not in wanted:
            session.delete(endpoint)
            changes.append(f"-{without_password(endpoint.url)}")
            continue
        if endpoint.url != url:  # stored with trailing slashes: the same engine, same id
            changes.append(f"{without_password(endpoint.url)} -> {without_password(url)}")
            endpoint.url = url
        if not endpoint.enabled:
            endpoint.enabled = True
            changes.append(f"+{without_password(url)}")
        for field in ("kv_events", "kv_replay"):
            value = getattr(wanted[url], field)
            if getattr(endpoint, field) != value:
                setattr(endpoint, field, value)
                changes.append(f"{without_password(url)} {field} {value}")
    for url, spec in wanted.items():
        if url not in current:
            session.add(
                Endpoint(
                    pool_id=pool.id,
                    url=url,
                    enabled=True,
                    kv_events=spec.kv_events,
                    kv_replay=spec.kv_replay,
                )
            )
            changes.append(f"+{without_password(url)}")
    if changes:
        flush_or_conflict(session, f"pool {pool.name!r} lists an endpoint twice")
        mark_config_changed(session)
    return changes


def _held_endpoints(session: Session, pool: PoolRow) -> tuple[dict[str, Endpoint], list[str]]:
    """The pool's endpoints by URL as the gateways join paths to it (``engine_url``), and the
    removal of each row stored before as a second spelling of one (``http://h:8000`` beside
    ``http://h:8000/``): listed again, a row stored with trailing slashes keeps its id, so the
    gateways' state of the engine (its load, requests in flight) goes on."""
    rows = PoolRepository(session).endpoints([pool.id])[pool.id]
    held: dict[str, Endpoint] = {}
    removed = []
    for endpoint in sorted(rows, key=lambda e: (e.url != engine_url(e.url), e.url)):
        url = engine_url(endpoint.url)
        if url in held:
            session.delete(endpoint)
            removed.append(f"-{without_password(endpoint.url)}")
        else:
            held[url] = endpoint
    return held, removed


def check_not_listed(
    session: Session, pool: str, doing: str, *, param: str, model_id: uuid.UUID | None = None
) -> None:
    """An alias that lists its own pools routes only to those serving its model: refuse (409)
    to delete a listed pool, or move it to a model (``model_id``) other than a listing
    alias's, which would leave the alias routing to none of them (the empty list the alias
    API refuses) without a word."""
    listing = [a.alias for a in ModelRepository(session).aliases_listing(pool)
               if model_id is None or a.model_id != model_id]  # fmt: skip
    if listing:
        raise Conflict(
            f"pool {pool!r} is listed in the pools of alias {', '.join(listing)}: "
            f"take it out of them before {doing}",
            param=param,
        )


def check_prompt_range(low: int, high: int | None) -> None:
    """A pool's prompt-length range must hold some prompt length."""
    problem = prompt_range_problem(low, high)
    if problem is not None:
        raise InvalidRequest(f"max_prompt_tokens ({high}) {problem}", param="max_prompt_tokens")


def known_tiers(session: Session, tiers: Sequence[str] | None) -> list[str] | None:
    """A pool's tiers, sorted; each must exist and be listed once."""
    if tiers is None:
        return None
    stored = {tier.name for tier in TierRepository(session).all()}
    for index, tier in enumerate(tiers):
        if tier not in stored:
            raise InvalidRequest(f"unknown tier {tier!r}", param=f"tiers[{index}]")
        if tier in tiers[:index]:
            raise InvalidRequest(f"tier {tier!r} listed twice", param=f"tiers[{index}]")
    return sorted(tiers)


def _pool_view(
    pool: PoolRow, model: ModelRow, flavor: AcceleratorFlavor, endpoints: list[Endpoint]
) -> Pool:
    own = None if pool.cost_per_hour is None else float(pool.cost_per_hour)
    return Pool(
        pool.id,
        pool.name,
        model.name,
        flavor.name,
        pool.region,
        pool.burst,
        pool.block_size,
        [
            EndpointView(e.id, without_password(e.url), e.enabled, e.kv_events, e.kv_replay)
            for e in endpoints
        ],
        cost_per_hour=float(flavor.cost_per_hour) if own is None else own,
        own_cost_per_hour=own,
        capacity=pool.capacity,
        tokens_per_s=pool.tokens_per_s,
        min_prompt_tokens=pool.min_prompt_tokens,
        max_prompt_tokens=pool.max_prompt_tokens,
        tiers=pool.tiers,
        max_num_batched_tokens=pool.max_num_batched_tokens,
    )
