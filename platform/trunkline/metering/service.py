"""The usage API: a tenant's usage and cost in a period, grouped by model, project, key, tier or
day. Tenant admins see the whole tenant; developers the keys they created."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from trunkline.auth.principal import Principal
from trunkline.billing.lines import price_windows
from trunkline.billing.periods import parse_period
from trunkline.billing.pricebook import PriceVersion
from trunkline.billing.pricebook_store import load_price_book
from trunkline.billing.rating import exact_sum, per_million, rate, token_quantities
from trunkline.metering.repository import UsageRepository
from trunkline.metering.schemas import GroupBy, UsageReport, UsageRow
from trunkline.tenancy.service import tenant_row

ZERO = Decimal(0)


def usage_report(
    session: Session,
    principal: Principal,
    tenant_id: uuid.UUID,
    period: str,
    group_by: GroupBy = "model",
    *,
    model: str | None = None,
    project_id: uuid.UUID | None = None,
    key_id: str | None = None,
) -> UsageReport:
    tenant = tenant_row(session, principal, tenant_id)
    window = parse_period(period)
    mine = None if principal.is_tenant_admin(tenant_id) else principal.user_id or uuid.UUID(int=0)
    usage = UsageRepository(session, tenant_id, created_by=mine)
    book = load_price_book(session)
    groups: dict[str, UsageRow] = {}
    costs: dict[str, _Costs] = {}
    labels = _labels(usage, group_by)
    for start, end, version in price_windows(book, window):
        rows = usage.totals(start, end, group_by, model=model, project_id=project_id, key_id=key_id)
        for value, model_name, tier, outcome, *sums in rows:
            group = f"{value:%Y-%m-%d}" if group_by == "day" else str(value)
            target = groups.setdefault(group, UsageRow(group=group, label=labels.get(group, group)))
            spent = costs.setdefault(group, _Costs())
            priced = version or book.at(start)  # raises: no version prices this usage
            _add(target, spent, priced, tenant.slug, model_name, tier, outcome, sums)
    ordered = [groups[key] for key in sorted(groups)]
    total = _total(ordered)
    for row in ordered:
        costs[row.group].show_in(row)
    sum(costs.values(), _Costs()).show_in(total)
    return UsageReport(
        tenant_id=tenant_id,
        period=window.label,
        currency=book.currency,
        group_by=group_by,
        rows=ordered,
        total=total,
        pending_hours=usage.pending_hours(window.start, window.end),
    )


@dataclass(slots=True)
class _Costs:
    """A row's costs, summed exactly; shown in plain notation (``1.5E-7`` as ``0.00000015``)."""

    list_cost: Decimal = ZERO
    cost: Decimal = ZERO

    def __add__(self, other: _Costs) -> _Costs:
        return _Costs(
            exact_sum([self.list_cost, other.list_cost]), exact_sum([self.cost, other.cost])
        )

    def show_in(self, row: UsageRow) -> None:
        row.list_cost, row.cost = format(self.list_cost, "f"), format(self.cost, "f")


def _labels(usage: UsageRepository, group_by: GroupBy) -> dict[str, str]:
    if group_by == "project":
        return {str(k): v for k, v in usage.project_names().items()}
    if group_by == "key":
        return usage.key_names()
    return {}


def _add(
    target: UsageRow,
    spent: _Costs,
    version: PriceVersion,
    slug: str,
    model: str,
    tier: str,
    outcome: str,
    sums: list[int],
) -> None:
    requests, prompt, cached, completion = (int(v) for v in sums)
    target.requests += requests
    target.prompt_tokens += prompt
    target.cached_tokens += cached
    target.completion_tokens += completion
    if outcome == "failed":
        target.failed_requests += requests
    if outcome not in version.billable_outcomes:
        return
    discount = version.discount(slug)
    for token_class, tokens in token_quantities(prompt, cached, completion).items():
        if tokens:
            rated = rate(
                per_million(tokens), version.token_price(model, tier, token_class), discount
            )
            spent.list_cost = exact_sum([spent.list_cost, rated.list_cost])
            spent.cost = exact_sum([spent.cost, rated.contracted_cost])


def _total(rows: list[UsageRow]) -> UsageRow:
    total = UsageRow(group="total", label="total")
    for row in rows:
        for name in (
            "requests",
            "failed_requests",
            "prompt_tokens",
            "cached_tokens",
            "completion_tokens",
        ):
            setattr(total, name, getattr(total, name) + getattr(row, name))
    return total
