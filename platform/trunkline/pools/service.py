"""Catalog operations shared by the admin API, the manifests and the embedded launcher.

Every mutation marks the unit of work so the composition root republishes the
gateway snapshot after commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import NoReturn

from sqlalchemy.orm import Session

from trunkline.billing.pricebook_store import unpriced_new_model
from trunkline.errors import Conflict, InvalidRequest, NotFound
from trunkline.kit.ids import utcnow
from trunkline.kit.pagination import EVERYTHING, Page, PageRequest
from trunkline.models import AcceleratorFlavor, Endpoint, ModelAlias
from trunkline.models import Model as ModelRow
from trunkline.models import Pool as PoolRow
from trunkline.pools.repository import FlavorRepository, ModelRepository, PoolRepository
from trunkline.pools.schemas import Endpoint as EndpointView
from trunkline.pools.schemas import (
    EndpointSpec,
    Flavor,
    FlavorCreate,
    FlavorUpdate,
    Model,
    ModelCreate,
    ModelUpdate,
    Pool,
    PoolCreate,
    PoolUpdate,
    money,
    prompt_range_problem,
)
from trunkline.tenancy.changes import assign, flush_or_conflict, mark_config_changed
from trunkline.tenancy.repository import TierRepository
from trunkline.tenancy.schemas import given

# --- flavors ----------------------------------------------------------------------------------


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
    flush_or_conflict(session, f"flavor {name!r} is used by a pool")
    mark_config_changed(session)


def flavor_row(session: Session, name: str, *, param: str | None = None) -> AcceleratorFlavor:
    flavor = FlavorRepository(session).by_name(name)
    if flavor is None:
        _missing("flavor", name, param)
    return flavor


# --- models and aliases -----------------------------------------------------------------------


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
    if unpriced := unpriced_new_model(session, data.name, utcnow()):
        raise InvalidRequest(unpriced, param="name")
    model = ModelRow(
        name=data.name, kind=data.kind, context_length=data.context_length, params_b=data.params_b
    )
    session.add(model)
    flush_or_conflict(session, f"model {data.name!r} already exists")
    for alias in data.aliases:
        insert_alias(session, model, alias)
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
        raise Conflict(f"model {name!r} is served by pools {', '.join(pools)}; delete them first")
    for alias in ModelRepository(session).cascades_of(model.id):
        if alias.model_id != model.id:  # the model's own aliases go with it
            raise Conflict(
                f"model {name!r} is what cascade {alias.alias!r} escalates to; change or "
                "delete that alias first"
            )
    session.delete(model)
    flush_or_conflict(session, f"model {name!r} is still referenced")
    mark_config_changed(session)


def add_alias(session: Session, model_name: str, alias: str) -> Model:
    model = model_row(session, model_name)
    insert_alias(session, model, alias)
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


def insert_alias(session: Session, model: ModelRow, alias: str) -> ModelAlias:
    if ModelRepository(session).alias(alias) is not None:
        raise Conflict(f"alias {alias!r} already exists", param="aliases")
    check_served_name(session, alias, model, cascading=False, param="aliases")
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


def model_row(session: Session, name: str, *, param: str | None = None) -> ModelRow:
    model = ModelRepository(session).by_name(name)
    if model is None:
        _missing("model", name, param)
    return model


def _model_view(session: Session, model: ModelRow) -> Model:
    return Model.of(model, ModelRepository(session).aliases_of([model.id])[model.id])


# --- pools and endpoints ----------------------------------------------------------------------


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
    session: Session, pool: PoolRow, endpoints: Sequence[str | EndpointSpec]
) -> list[str]:
    """Replace a pool's endpoints; returns what changed (``+url`` / ``-url``), empty if nothing."""
    specs = [EndpointSpec(url=e) if isinstance(e, str) else e for e in endpoints]
    wanted = {spec.url: spec for spec in specs}
    current = {e.url: e for e in PoolRepository(session).endpoints([pool.id])[pool.id]}
    changes = []
    for url, endpoint in current.items():
        if url not in wanted:
            session.delete(endpoint)
            changes.append(f"-{url}")
            continue
        if not endpoint.enabled:
            endpoint.enabled = True
            changes.append(f"+{url}")
        for field in ("kv_events", "kv_replay"):
            value = getattr(wanted[url], field)
            if getattr(endpoint, field) != value:
                setattr(endpoint, field, value)
                changes.append(f"{url} {field} {value}")
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
            changes.append(f"+{url}")
    if changes:
        flush_or_conflict(session, f"pool {pool.name!r} lists an endpoint twice")
        mark_config_changed(session)
    return changes


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


def pool_rows(session: Session, name: str) -> tuple[PoolRow, ModelRow, AcceleratorFlavor]:
    found = PoolRepository(session).by_name(name)
    if found is None:
        _missing("pool", name, None)
    return found


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
        [EndpointView(e.id, e.url, e.enabled, e.kv_events, e.kv_replay) for e in endpoints],
        cost_per_hour=float(flavor.cost_per_hour) if own is None else own,
        own_cost_per_hour=own,
        capacity=pool.capacity,
        tokens_per_s=pool.tokens_per_s,
        min_prompt_tokens=pool.min_prompt_tokens,
        max_prompt_tokens=pool.max_prompt_tokens,
        tiers=pool.tiers,
        max_num_batched_tokens=pool.max_num_batched_tokens,
    )


def _missing(what: str, name: str, param: str | None) -> NoReturn:
    if param is not None:
        raise InvalidRequest(f"unknown {what} {name!r}", param=param)
    raise NotFound(f"{what} {name!r} not found", param="name")
