"""Apply manifests to the database: create what is missing, update what differs, say what changed.

Applying the same manifests twice changes nothing the second time, and reports so. Objects
the manifests do not mention are left alone, with one exception: a tenant's ``models`` is its
complete entitlement list.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from trunkline.auth.service import ensure_user
from trunkline.billing.service import held_currency, unpriced_new_model
from trunkline.errors import Conflict, InvalidRequest, TrunklineError
from trunkline.kit.db import transaction
from trunkline.kit.ids import utcnow
from trunkline.models import AcceleratorFlavor, Model, ModelAlias, Pool, Tenant, Tier
from trunkline.pools.aliases import configure_alias
from trunkline.pools.entitlements import set_entitlements
from trunkline.pools.repository import FlavorRepository, ModelRepository, PoolRepository
from trunkline.pools.schemas import Cascade, money
from trunkline.pools.service import (
    check_cascades_of,
    check_name_not_an_alias,
    check_not_listed,
    check_prompt_range,
    check_served_name,
    flavor_row,
    known_tiers,
    model_row,
    replace_endpoints,
)
from trunkline.quota.policy import priced
from trunkline.quota.repository import QuotaRepository, TenantQuotaRepository
from trunkline.quota.schemas import QuotaLimits
from trunkline.tenancy.changes import assign, mark_config_changed
from trunkline.tenancy.manifests.documents import Located, Manifests, undotted
from trunkline.tenancy.manifests.loader import load_manifests
from trunkline.tenancy.manifests.schemas import (
    CascadeSpec,
    FlavorSpec,
    ModelSpec,
    PoolSpec,
    TenantSpec,
    TierSpec,
)
from trunkline.tenancy.repository import (
    MembershipRepository,
    ProjectRepository,
    TenantRepository,
    TierRepository,
)


@dataclass(frozen=True)
class Change:
    kind: str
    name: str
    action: str
    """``created`` or ``updated``."""
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.kind} {self.name} {self.action}"
        return text + (": " + "; ".join(self.details) if self.details else "")


@dataclass
class ApplyReport:
    changes: list[Change] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def lines(self) -> list[str]:
        return [str(c) for c in self.changes] or ["no changes"]


def apply_manifests(
    session_factory: sessionmaker[Session],
    path: str | Path | Manifests,
    *,
    publish: Callable[[], None] | None = None,
) -> ApplyReport:
    """Validate (``ManifestError`` on any issue), apply in one transaction, then publish the
    gateway snapshot through ``publish`` if, and only if, something changed."""
    manifests = path if isinstance(path, Manifests) else load_manifests(path)
    with transaction(session_factory) as session:
        report = apply_to_session(session, manifests)
    if report.changed and publish is not None:
        publish()
    return report


def apply_to_session(session: Session, manifests: Manifests) -> ApplyReport:
    report = ApplyReport()
    appliers: list[tuple[type[Any], Callable[[Any, frozenset[str]], None]]] = [
        (TierSpec, lambda spec, given: _tier(session, spec, given, report)),
        (FlavorSpec, lambda spec, given: _flavor(session, spec, given, report)),
        (ModelSpec, lambda spec, given: _model(session, spec, given, report)),
        (PoolSpec, lambda spec, given: _pool(session, spec, given, report)),
        (CascadeSpec, lambda spec, _given: _cascade(session, spec, report)),
        # a kind changed above must fit the cascades it is in
        (ModelSpec, lambda spec, _given: check_cascades_of(session, model_row(session, spec.name))),
        (TenantSpec, lambda spec, given: _tenant(session, spec, given, report)),
    ]
    for kind, apply in appliers:
        for document in manifests.located(kind):
            with _at(document):
                apply(document.spec, document.given)
    if report.changed:  # counted, so every process's publish and check sees the change
        mark_config_changed(session)
    return report


@contextlib.contextmanager
def _at(document: Located) -> Iterator[None]:
    """Name the file, line and document of what the database refuses (a check only it can
    make, such as a tenant's last tenant_admin or a cascade's name), as validation does."""
    try:
        yield
    except TrunklineError as exc:
        line = document.line_of(undotted(exc.param or ""))
        where = f"{document.file}:{line}: {document.subject}: "
        raise type(exc)(where + exc.message, param=exc.param, reason=exc.reason) from exc


def _given(
    values: Mapping[str, Any], given: frozenset[str], columns: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``values`` (by column) of the fields a document writes out (``columns``: a field's
    column where the names differ). Only these update an object that exists: a field left out
    keeps what the database holds, perhaps set through the API or the CLI (a tenant's regions
    were reset to "anywhere" by a manifest that did not mention them, on every `trunkline
    up`); a new object takes the defaults."""
    named = {(columns or {}).get(f, f) for f in given}
    return {column: value for column, value in values.items() if column in named}


def _upsert(
    session: Session,
    report: ApplyReport,
    kind: str,
    name: str,
    row: Any | None,
    create: Callable[[], Any],
    values: Mapping[str, Any],
) -> tuple[Any, list[str]]:
    """Create ``row`` or update its ``values``; returns the row and the details logged so far."""
    details: list[str] = []
    if row is None:
        row = create()
        session.add(row)
        session.flush()
        report.changes.append(Change(kind, name, "created"))
    elif diff := assign(row, values):
        details += [f"{key} {old!r} -> {new!r}" for key, (old, new) in diff.items()]
    return row, details


def _record(report: ApplyReport, kind: str, name: str, details: list[str]) -> None:
    """Attach details to the ``created`` change of this object, or log an ``updated`` one."""
    if not details:
        return
    for index, change in enumerate(report.changes):
        if (change.kind, change.name, change.action) == (kind, name, "created"):
            report.changes[index] = Change(kind, name, "created", (*change.details, *details))
            return
    report.changes.append(Change(kind, name, "updated", tuple(details)))


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
    tier, details = _upsert(session, report, "Tier", spec.name, row, create, _given(values, given))
    quota = _priced(session, spec.quota)
    if quota is not None and QuotaRepository(session).set_tier_doc(tier.id, quota):
        details.append("quota defaults set")
    _record(report, "Tier", spec.name, details)


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
    _row, details = _upsert(
        session, report, "Flavor", spec.name, row, create, _given(values, given)
    )
    _record(report, "Flavor", spec.name, details)


def _model(session: Session, spec: ModelSpec, given: frozenset[str], report: ApplyReport) -> None:
    values = {"kind": spec.type, "context_length": spec.context_length, "params_b": spec.params_b}
    models = ModelRepository(session)

    def create() -> Model:
        if unpriced := unpriced_new_model(session, spec.name, utcnow()):
            raise InvalidRequest(unpriced, param="name")
        check_name_not_an_alias(session, spec.name)
        return Model(name=spec.name, **values)

    model, details = _upsert(
        session,
        report,
        "Model",
        spec.name,
        models.by_name(spec.name),
        create,
        _given(values, given, {"type": "kind"}),
    )
    for alias in spec.aliases:
        check_served_name(session, alias, model, cascading=False, param="aliases")
        row = models.alias(alias)
        if row is None:
            session.add(ModelAlias(alias=alias, model_id=model.id))
            details.append(f"+alias {alias}")
        elif row.model_id != model.id:
            _check_alias_moves(row, spec.name)
            row.model_id = model.id
            details.append(f"alias {alias} moved here")
    session.flush()
    _record(report, "Model", spec.name, details)


def _check_alias_moves(row: ModelAlias, model: str) -> None:
    """An alias may move to another model only when nothing of it names the old one: the
    checks see only the files at hand, so the database has the last word (as for cascades)."""
    if row.escalate_model_id is not None:
        raise Conflict(
            f"Model {model}: alias {row.alias!r} is a cascade; a model's alias needs a name of "
            "its own",
            param="aliases",
        )
    if row.pools:
        raise Conflict(
            f"Model {model}: alias {row.alias!r} is limited to pools of its current model "
            f"({', '.join(row.pools)}); clear its pools before moving it to {model}",
            param="aliases",
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
    changed = _given(values, given, {"model": "model_id", "flavor": "flavor_id"})
    pool, details = _upsert(
        session, report, "Pool", spec.name, None if found is None else found[0], create, changed
    )
    check_prompt_range(pool.min_prompt_tokens, pool.max_prompt_tokens)  # as it now stands
    if spec.endpoints is not None:
        details += replace_endpoints(session, pool, spec.endpoints)
    _record(report, "Pool", spec.name, details)


def _cascade(session: Session, spec: CascadeSpec, report: ApplyReport) -> None:
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
    create = lambda: ModelAlias(alias=spec.name, model_id=model.id)  # noqa: E731
    values = {"model_id": model.id}
    alias, details = _upsert(session, report, "Cascade", spec.name, row, create, values)
    cascade = Cascade(escalate_to=spec.escalate_to, checks=spec.checks)
    details += configure_alias(session, alias, model, alias.pools, cascade)
    session.flush()
    _record(report, "Cascade", spec.name, details)


def _tenant(session: Session, spec: TenantSpec, given: frozenset[str], report: ApplyReport) -> None:
    tier = TierRepository(session).by_name(spec.tier)
    if tier is None:  # load_manifests checks this; a hand-built Manifests may not
        raise InvalidRequest(f"unknown tier {spec.tier!r}", param="tier")
    values = {
        "name": spec.name,
        "regions": list(spec.regions),
        "cache_isolated": spec.cache_isolated,
    }
    row = TenantRepository(session).by_slug(spec.slug)
    create = lambda: Tenant(slug=spec.slug, tier=tier, **values)  # noqa: E731
    tenant, details = _upsert(
        session, report, "Tenant", spec.slug, row, create, _given(values, given)
    )
    if tenant.tier_id != tier.id:
        details.append(f"tier {tenant.tier.name} -> {tier.name}")
        tenant.tier = tier
    if "models" in given:  # written out, the complete list; left out, what the API granted stays
        granted, revoked = set_entitlements(session, tenant.id, spec.models)
        details += [f"+model {a}" for a in granted] + [f"-model {a}" for a in revoked]
    details += _projects(session, tenant, spec) + _members(session, tenant, spec)
    quota = _priced(session, spec.quota)
    if quota is not None and TenantQuotaRepository(session, tenant.id).set_doc(quota):
        details.append("quota overrides set")
    session.flush()
    _record(report, "Tenant", spec.slug, details)


def _projects(session: Session, tenant: Tenant, spec: TenantSpec) -> list[str]:
    projects, details = ProjectRepository(session, tenant.id), []
    for project in spec.projects:
        row = projects.by_name(project.name)
        if row is None:
            projects.add(project.name, project.description or "")
            details.append(f"+project {project.name}")
        elif project.description is not None and assign(row, {"description": project.description}):
            details.append(f"project {project.name} description updated")
    return details


def _members(session: Session, tenant: Tenant, spec: TenantSpec) -> list[str]:
    members, details = MembershipRepository(session, tenant.id), []
    had_admin = members.count_admins() > 0
    for member in spec.members:
        user = ensure_user(session, member.email, member.name)
        found = members.get(user.id)
        if found is None:
            members.add(user, member.role)
            details.append(f"+member {user.email} ({member.role.value})")
        elif found[0].role is not member.role:
            details.append(f"member {user.email} {found[0].role.value} -> {member.role.value}")
            found[0].role = member.role
    if had_admin:  # the API's rule: a tenant keeps at least one tenant_admin
        session.flush()
        if members.count_admins() == 0:
            raise Conflict(
                f"tenant {tenant.slug}: a tenant keeps at least one tenant_admin",
                reason="last_tenant_admin",
            )
    return details
