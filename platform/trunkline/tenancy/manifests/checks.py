"""Checks across documents: names defined once, references that resolve within the set."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from trunkline.auth.secrets import without_password
from trunkline.pools.endpoint_schemas import engine_url
from trunkline.pools.schemas import prompt_range_problem
from trunkline.quota.policy import ALIAS, SCOPES, alias_problem
from trunkline.tenancy.manifests.documents import Located, ManifestIssue, Manifests
from trunkline.tenancy.manifests.schemas import (
    CascadeSpec,
    ModelSpec,
    PoolSpec,
    TenantSpec,
    TierSpec,
    spec_name,
)


def check_references(manifests: Manifests, currency: str | None = None) -> list[ManifestIssue]:
    """Every problem a database is not needed to find, in document order; ``currency``: the
    price book's, if known, which cost budgets under their deprecated USD name must be in."""
    issues = _duplicates(manifests.documents)
    tiers = {t.name for t in manifests.tiers}
    flavors = {f.name for f in manifests.flavors}
    models = {m.name: m for m in manifests.models}
    owners: dict[str, str] = {}
    for doc in manifests.documents:
        spec = doc.spec
        if isinstance(spec, ModelSpec):
            for index, alias in enumerate(spec.aliases):
                owner = owners.setdefault(alias, spec.name)
                if owner != spec.name:
                    issues.append(
                        doc.issue(("aliases", index), f"alias {alias!r} already names {owner!r}")
                    )
                elif alias in models and alias != spec.name:
                    issues.append(doc.issue(("aliases", index), _served_name(alias)))
        elif isinstance(spec, PoolSpec):
            issues += _pool(doc, spec, set(models), flavors, tiers)
        elif isinstance(spec, CascadeSpec):
            mine = f"Cascade {spec.name}"
            owner = owners.setdefault(spec.name, mine)
            if owner != mine:
                issues.append(doc.issue(("name",), f"alias {spec.name!r} already names {owner!r}"))
            elif spec.name in models:
                issues.append(doc.issue(("name",), _served_name(spec.name)))
            issues += _cascade(doc, spec, models)
    for doc in manifests.documents:
        if isinstance(doc.spec, TenantSpec):
            issues += _tenant(doc, doc.spec, tiers, set(owners))
    return issues + budget_issues(manifests, currency)


def budget_issues(manifests: Manifests, currency: str | None) -> list[ManifestIssue]:
    """Each deprecated ``cost_per_month_usd`` given beside ``cost_per_month``, or (``currency``,
    the price book's, known) while that is not USD."""
    issues = []
    for doc in manifests.documents:
        quota = doc.spec.quota if isinstance(doc.spec, TierSpec | TenantSpec) else None
        for scope in SCOPES if quota is not None else ():
            if problem := alias_problem(getattr(quota, scope), currency):
                issues.append(doc.issue(("quota", scope, ALIAS), problem))
    return issues


def _served_name(name: str) -> str:
    return (
        f"{name!r} is the name model {name!r} answers with: clients calling it back must "
        "reach that model alone"
    )


def _duplicates(documents: Iterable[Located]) -> list[ManifestIssue]:
    issues, first = [], dict[tuple[type, str], Located]()
    for doc in documents:
        key = (type(doc.spec), spec_name(doc.spec))
        if key in first:
            seen = first[key]
            field = "slug" if isinstance(doc.spec, TenantSpec) else "name"
            issues.append(
                doc.issue((field,), f"defined twice (first at {seen.file}:{seen.line_of(())})")
            )
        else:
            first[key] = doc
    return issues


def _pool(
    doc: Located, spec: PoolSpec, models: set[str], flavors: set[str], tiers: set[str]
) -> list[ManifestIssue]:
    issues = []
    if spec.model not in models:
        issues.append(doc.issue(("model",), f"unknown model {spec.model!r}"))
    if spec.flavor not in flavors:
        issues.append(doc.issue(("flavor",), f"unknown flavor {spec.flavor!r}"))
    if spec.endpoints is not None and spec.simulated is not None:
        issues.append(doc.issue(("simulated",), "give endpoints or simulated, not both"))
    problem = prompt_range_problem(spec.min_prompt_tokens, spec.max_prompt_tokens)
    if problem is not None:
        issues.append(doc.issue(("max_prompt_tokens",), problem))
    for index, tier in enumerate(spec.tiers or ()):
        if tier not in tiers:
            issues.append(doc.issue(("tiers", index), f"unknown tier {tier!r}"))
    issues += _repeats(doc, "tiers", spec.tiers or [], "tier")
    urls: set[str] = set()
    for index, endpoint in enumerate(spec.endpoints or ()):
        url = engine_url(endpoint if isinstance(endpoint, str) else endpoint.url)
        if url in urls:  # applied, one of the two (and its KV-event addresses) was lost
            message = f"endpoint {without_password(url)!r} listed twice"
            issues.append(doc.issue(("endpoints", index), message))
        urls.add(url)
    return issues


def _cascade(doc: Located, spec: CascadeSpec, models: dict[str, ModelSpec]) -> list[ManifestIssue]:
    issues = []
    for field in ("model", "escalate_to"):
        name = getattr(spec, field)
        if name not in models:
            issues.append(doc.issue((field,), f"unknown model {name!r}"))
        elif models[name].type == "embedding":
            issues.append(doc.issue((field,), f"model {name!r} serves embeddings, not text"))
    if spec.model == spec.escalate_to:
        issues.append(doc.issue(("escalate_to",), "must name another model than `model`"))
    elif not issues and models[spec.model].type != models[spec.escalate_to].type:
        issues.append(doc.issue(("escalate_to",), "must be of the same type as `model`"))
    return issues


def _tenant(
    doc: Located, spec: TenantSpec, tiers: set[str], aliases: set[str]
) -> list[ManifestIssue]:
    issues = []
    if spec.tier not in tiers:
        issues.append(doc.issue(("tier",), f"unknown tier {spec.tier!r}"))
    for index, alias in enumerate(spec.models):
        if alias not in aliases:
            issues.append(doc.issue(("models", index), f"unknown model alias {alias!r}"))
    issues += _repeats(doc, "regions", spec.regions, "region")
    issues += _repeats(doc, "projects", [p.name for p in spec.projects], "project", str.lower)
    issues += _repeats(doc, "members", [m.email.lower() for m in spec.members], "member")
    return issues


def _repeats(
    doc: Located, field: str, values: list[str], what: str, same: Callable[[str], str] = str
) -> list[ManifestIssue]:
    """Each of ``values`` listed once, as ``same`` tells them apart (project names that differ
    only in case name one project)."""
    seen: set[str] = set()
    issues = []
    for index, value in enumerate(values):
        if same(value) in seen:
            issues.append(doc.issue((field, index), f"{what} {value!r} listed twice"))
        seen.add(same(value))
    return issues
