"""Apply manifests to the database: create what is missing, update what differs, say what changed.

Applying the same manifests twice changes nothing the second time, and reports so. Objects
the manifests do not mention are left alone, with one exception: a tenant's ``models`` is its
complete entitlement list.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.pricebook_store import held_currency, unpriced_new_model
from trunkline.errors import Conflict, InvalidRequest
from trunkline.kit.ids import utcnow
from trunkline.models import AcceleratorFlavor, Model, ModelAlias, Pool, Tier
from trunkline.pools.aliases import configure_alias, stored_cascade
from trunkline.pools.catalog_models import (
    check_cascades_of,
    check_name_not_an_alias,
    check_served_name,
)
from trunkline.pools.lookups import flavor_row, model_row
from trunkline.pools.repository import FlavorRepository, ModelRepository, PoolRepository
from trunkline.pools.schemas import Cascade, money
from trunkline.pools.service import (
    check_not_listed,
    check_prompt_range,
    known_tiers,
    replace_endpoints,
)
from trunkline.quota.policy import priced
from trunkline.quota.repository import QuotaRepository
from trunkline.quota.schemas import QuotaLimits
from trunkline.tenancy.changes import changing, mark_config_changed
from trunkline.tenancy.manifests.documents import Manifests
from trunkline.tenancy.manifests.loader import load_manifests
from trunkline.tenancy.manifests.schemas import (
    CascadeSpec,
    FlavorSpec,
    ModelSpec,
    PoolSpec,
    TenantSpec,
    TierSpec,
)
from trunkline.tenancy.manifests.tenants import apply_tenants
from trunkline.tenancy.manifests.upsert import (
    ApplyReport,
    Change,
    given_values,
    located_at,
    upsert,
)
from trunkline.tenancy.repository import TierRepository

__all__ = ["ApplyReport", "Change", "apply_manifests", "apply_to_session"]


def apply_manifests(
    session_factory: sessionmaker[Session],
    path: str | Path | Manifests,
    *,
    publish: Callable[[], None] | None = None,
) -> ApplyReport:
    """Validate (``ManifestError`` on any issue), apply in one transaction, then publish the
    gateway snapshot through ``publish`` if, and only if, something changed."""
    manifests = path if isinstance(path, Manifests) else load_manifests(path)
    with changing(session_factory) as session:
        report = apply_to_session(session, manifests)
    if report.changed and publish is not None:
        publish()
    return report


def apply_to_session(session: Session, manifests: Manifests) -> ApplyReport:
    """Apply ``manifests`` in ``session``, a transaction that holds the configuration's lock
    from its start (``changing``)."""
    report = ApplyReport()
    appliers: list[tuple[type[Any], Callable[[Any, frozenset[str]], None]]] = [
        (TierSpec, lambda spec, given: _tier(session, spec, given, report)),
        (FlavorSpec, lambda spec, given: _flavor(session, spec, given, report)),
        (ModelSpec, lambda spec, given: _model(session, spec, given, report)),
        (PoolSpec, lambda spec, given: _pool(session, spec, given, report)),
        (CascadeSpec, lambda spec, given: _cascade(session, spec, given, report)),
        # a kind changed above must fit the cascades it is in
        (ModelSpec, lambda spec, _given: check_cascades_of(session, model_row(session, spec.name))),
    ]
    for kind, apply in appliers:
        for document in manifests.located(kind):
            with located_at(document):
                apply(document.spec, document.given)
    apply_tenants(session, manifests.located(TenantSpec), report)
    if report.changed:  # counted, so every process's publish and check sees the change
        mark_config_changed(session)
    return report


def _tier(session: Session, spec: TierSpec, given: frozenset[str], report: ApplyReport) -> None:
    values = {
        "description": spec.description,
        "priority": spec.priority,
        "ttft_slo_ms": spec.ttft_slo_ms,
        "itl_slo_ms": spec.itl_slo_ms,
        "may_use_burst": spec.may_use_burst,
    }
    row = TierRepository(session).by_name(spec.name)
    create = lambda: Tier(name=spec.name, **values)  # noqa: E731
    tier, details = upsert(
        session, report, "Tier", spec.name, row, create, given_values(values, given)
    )
    quota = _priced(session, spec.quota)
    if quota is not None and QuotaRepository(session).set_tier_doc(tier.id, quota):
        details.append("quota defaults set")
    report.record("Tier", spec.name, details)


def _priced(session: Session, quota: QuotaLimits | None) -> QuotaLimits | None:
    """``quota`` as stored: its cost budgets are amounts of the price book's currency."""
    return None if quota is None else priced(quota, held_currency(session), "quota.")


def _flavor(session: Session, spec: FlavorSpec, given: frozenset[str], report: ApplyReport) -> None:
    values = {
        "vendor": spec.vendor,
        "memory_gb": spec.memory_gb,
        "cost_per_hour": money(spec.cost_per_hour),
    }
    row = FlavorRepository(session).by_name(spec.name)
    create = lambda: AcceleratorFlavor(name=spec.name, **values)  # noqa: E731
    _row, details = upsert(
        session, report, "Flavor", spec.name, row, create, given_values(values, given)
    )
    report.record("Flavor", spec.name, details)


def _model(session: Session, spec: ModelSpec, given: frozenset[str], report: ApplyReport) -> None:
    values = {"kind": spec.type, "context_length": spec.context_length, "params_b": spec.params_b}
    models = ModelRepository(session)

    def create() -> Model:
        if unpriced := unpriced_new_model(session, spec.name, utcnow()):
            raise InvalidRequest(unpriced, param="name")
        check_name_not_an_alias(session, spec.name)
        return Model(name=spec.name, **values)

    model, details = upsert(
        session,
        report,
        "Model",
        spec.name,
        models.by_name(spec.name),
        create,
        given_values(values, given, {"type": "kind"}),
        named={"kind": ("type", {})},  # as the document calls it
    )
    for index, alias in enumerate(spec.aliases):
        param = f"aliases[{index}]"
        check_served_name(session, alias, model, cascading=False, param=param)
        row = models.alias(alias)
        if row is None:
            session.add(ModelAlias(alias=alias, model_id=model.id))
            details.append(f"+alias {alias}")
        elif row.model_id != model.id or row.escalate_model_id is not None:
            _check_alias_moves(row, spec.name, param)
            row.model_id = model.id
            details.append(f"alias {alias} moved here")
    session.flush()
    report.record("Model", spec.name, details)


def _check_alias_moves(row: ModelAlias, model: str, param: str) -> None:
    """An alias may move to another model only when nothing of it names the old one, and a
    cascade is no model's plain alias, not even of the model it tries first (which an apply
    left cascading without a word): the checks see only the files at hand, so the database
    has the last word (as for cascades)."""
    if row.escalate_model_id is not None:
        raise Conflict(
            f"Model {model}: alias {row.alias!r} is a cascade; a model's alias needs a name of "
            "its own",
            param=param,
        )
    if row.pools:
        raise Conflict(
            f"Model {model}: alias {row.alias!r} is limited to pools of its current model "
            f"({', '.join(row.pools)}); clear its pools before moving it to {model}",
            param=param,
        )


def _pool(session: Session, spec: PoolSpec, given: frozenset[str], report: ApplyReport) -> None:
    model = model_row(session, spec.model, param="model")
    flavor = flavor_row(session, spec.flavor, param="flavor")
    values = {
        "model_id": model.id,
        "flavor_id": flavor.id,
        "region": spec.region,
        "burst": spec.burst,
        "block_size": spec.block_size,
        "cost_per_hour": None if spec.cost_per_hour is None else money(spec.cost_per_hour),
        "capacity": spec.capacity,
        "tokens_per_s": spec.tokens_per_s,
        "min_prompt_tokens": spec.min_prompt_tokens,
        "max_prompt_tokens": spec.max_prompt_tokens,
        "tiers": known_tiers(session, spec.tiers),
        "max_num_batched_tokens": spec.max_num_batched_tokens,
    }
    found = PoolRepository(session).by_name(spec.name)
    if found is not None and found[0].model_id != model.id:
        check_not_listed(
            session, spec.name, "moving it to another model", param="model", model_id=model.id
        )
    create = lambda: Pool(name=spec.name, **values)  # noqa: E731
    changed = given_values(values, given, {"model": "model_id", "flavor": "flavor_id"})
    models, flavors = {model.id: model.name}, {flavor.id: flavor.name}  # the report's names
    if found is not None:
        models[found[1].id], flavors[found[2].id] = found[1].name, found[2].name
    named = {"model_id": ("model", models), "flavor_id": ("flavor", flavors)}
    row = None if found is None else found[0]
    pool, details = upsert(session, report, "Pool", spec.name, row, create, changed, named=named)
    check_prompt_range(pool.min_prompt_tokens, pool.max_prompt_tokens)  # as it now stands
    if spec.endpoints is not None:
        details += replace_endpoints(session, pool, spec.endpoints, field="endpoints")
    report.record("Pool", spec.name, details)


def _cascade(
    session: Session, spec: CascadeSpec, given: frozenset[str], report: ApplyReport
) -> None:
    model = model_row(session, spec.model, param="model")
    row = ModelRepository(session).alias(spec.name)
    if row is not None and row.escalate_model_id is None:
        # A model's plain alias, perhaps from manifests not loaded with this one: the checks
        # only see the files at hand, so the database has the last word.
        raise Conflict(
            f"Cascade {spec.name}: alias {spec.name!r} already names a model; "
            "a cascade needs a name of its own",
            param="name",
        )
    if row is not None and row.pools and row.model_id != model.id:
        raise Conflict(  # configure_alias would refuse its pools, a field no document has
            f"alias {spec.name!r} is limited to pools of its current model "
            f"({', '.join(row.pools)}); clear its pools before moving it to {spec.model}",
            param="model",
        )
    # configure_alias checks it too, naming the API's field (``alias``): here, the document's
    check_served_name(session, spec.name, model, cascading=True, param="name")
    create = lambda: ModelAlias(alias=spec.name, model_id=model.id)  # noqa: E731
    values = {"model_id": model.id}
    was = model if row is None else ModelRepository(session).get(row.model_id)
    named = {"model_id": ("model", {m.id: m.name for m in (was, model) if m is not None})}
    alias, details = upsert(session, report, "Cascade", spec.name, row, create, values, named=named)
    held = None if row is None or "checks" in given else stored_cascade(session, row)
    checks = spec.checks if held is None else held.checks  # left out, the stored ones stay
    cascade = Cascade(escalate_to=spec.escalate_to, checks=checks)
    configured = configure_alias(session, alias, model, alias.pools, cascade)
    details += configured if row is not None else []  # a new one: its document says it all
    session.flush()
    report.record("Cascade", spec.name, details)
