"""Charge lines: what a billing period charges, one line per SKU per hour per sub-account.

A line is computed from rollups (live ones for an open period, the billed snapshot for a
closed one) and the price book: token usage per project x hour x model x tier x token class
(and region), dedicated GPU-hours per project x hour x flavor, and one SLA credit per tenant
and tier per period. Exports and invoices are views of these lines.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trunkline.billing.capacity import capacity_lines
from trunkline.billing.charges import CREDIT, PER_MILLION_TOKENS, TOKENS, USAGE, ChargeLine, Names
from trunkline.billing.periods import Period
from trunkline.billing.pricebook import PriceBook, PriceVersion
from trunkline.billing.rating import ONE, exact_product, exact_sum, per_million, rate
from trunkline.billing.scope import TenantScope, in_scope
from trunkline.billing.sla import sla_outcome
from trunkline.errors import ConfigurationError
from trunkline.metering.rollup_plan import HOUR
from trunkline.models import BilledUsage, DedicatedCapacity, UsageRollup

RollupSource = type[UsageRollup] | type[BilledUsage]


def period_lines(
    session: Session,
    source: RollupSource,
    period: Period,
    book: PriceBook,
    tenants: TenantScope = None,
    until: datetime | None = None,
    names: Names | None = None,
) -> list[ChargeLine]:
    """Usage, SLA credit and dedicated GPU lines of ``period`` (corrections excluded); GPU
    hours only those begun before ``until``, if given (an open period, as of now). Tenants
    and projects are named from ``names`` (default: as they are now)."""
    names = names or Names.load(session)
    usage, slo = _usage_lines(session, source, period, book, names, tenants)
    credits = _credit_lines(usage, slo, period, book, names)
    return usage + credits + capacity_lines(session, period, book, names, tenants, until)


def require_priced(session: Session, source: RollupSource, period: Period, book: PriceBook) -> None:
    """Raise what ``period_lines`` would of any tenant's usage or dedicated GPUs before the
    first price book version: an export that streams checks first, since a failure once its
    200 is sent can only cut the file."""
    for start, end, version in price_windows(book, period):
        held = select(DedicatedCapacity.tenant_id).where(
            DedicatedCapacity.starts_at < end,
            DedicatedCapacity.ends_at.is_(None) | (DedicatedCapacity.ends_at > start),
        )
        if version is None and session.execute(held.limit(1)).first() is not None:
            raise _unpriced(start)
        _require_version(session, source, start, end, version, None)


def _require_version(
    session: Session,
    source: RollupSource,
    start: datetime,
    end: datetime,
    version: PriceVersion | None,
    tenants: TenantScope,
) -> None:
    """Refuse usage of ``tenants`` between ``start`` and ``end`` when no version prices it."""
    if version is not None:
        return
    used = select(source.tenant_id).where(
        source.hour >= start, source.hour < end, in_scope(source.tenant_id, tenants)
    )
    if session.execute(used.limit(1)).first() is not None:
        raise _unpriced(start)


def _unpriced(start: datetime) -> ConfigurationError:
    return ConfigurationError(f"usage before the first price book version ({start:%Y-%m-%d})")


def price_windows(
    book: PriceBook, period: Period
) -> list[tuple[datetime, datetime, PriceVersion | None]]:
    """The stretches of ``period`` each price book version is in force (None: no version)."""
    edges = (
        [period.start]
        + [v.effective_from for v in book.versions if period.start < v.effective_from < period.end]
        + [period.end]
    )
    out = []
    for start, end in itertools.pairwise(edges):
        version = None if start < book.versions[0].effective_from else book.at(start)
        out.append((start, end, version))
    return out


def _usage_lines(
    session: Session,
    source: RollupSource,
    period: Period,
    book: PriceBook,
    names: Names,
    tenants: TenantScope,
) -> tuple[list[ChargeLine], dict[tuple[uuid.UUID, str], tuple[int, int]]]:
    """Token lines, summed in SQL per project x hour x model x tier x region over the
    outcomes the version in force bills; and SLO counts per tenant and tier."""
    s = source
    dims = (s.tenant_id, s.project_id, s.hour, s.model, s.tier, s.region)
    scope = [s.hour >= period.start, s.hour < period.end, in_scope(s.tenant_id, tenants)]
    lines: list[ChargeLine] = []
    for start, end, version in price_windows(book, period):
        _require_version(session, source, start, end, version, tenants)
        if version is None:
            continue
        statement = (
            select(
                *dims,
                func.sum(s.prompt_tokens),
                func.sum(s.cached_tokens),
                func.sum(s.completion_tokens),
            )
            .where(*scope, s.hour >= start, s.hour < end, s.outcome.in_(version.billable_outcomes))
            .group_by(*dims)
        )
        pricer = _TokenPricer(version, names)
        for row in session.execute(statement):
            pricer.add(lines, *row)
    slo_statement = (
        select(s.tenant_id, s.tier, func.sum(s.slo_eligible), func.sum(s.slo_met))
        .where(*scope)
        .group_by(s.tenant_id, s.tier)
    )
    slo = {(t, tier): (int(e), int(m)) for t, tier, e, m in session.execute(slo_statement)}
    return lines, slo


Sku = tuple[str, str, Decimal, Decimal]
"""(SKU id, description, list unit price, contracted unit price)"""


class _TokenPricer:
    """Token lines of one price book version, with its prices looked up once per SKU."""

    def __init__(self, version: PriceVersion, names: Names) -> None:
        self.version = version
        self.names = names
        self._skus: dict[tuple[str, str, str, str], Sku] = {}

    def _sku(
        self, model: str, tier: str, token_class: str, slug: str
    ) -> tuple[str, str, Decimal, Decimal]:
        key = (model, tier, token_class, slug)
        if key not in self._skus:
            rated = rate(
                ONE, self.version.token_price(model, tier, token_class), self.version.discount(slug)
            )
            label = token_class.replace("_", " ")
            self._skus[key] = (
                f"tokens:{model}:{tier}:{token_class}",
                f"{model} {label} tokens, {tier} tier",
                rated.list_unit_price,
                rated.contracted_unit_price,
            )
        return self._skus[key]

    def add(
        self,
        out: list[ChargeLine],
        tenant: uuid.UUID,
        project: uuid.UUID,
        hour: datetime,
        model: str,
        tier: str,
        region: str,
        prompt: int,
        cached: int,
        completion: int,
    ) -> None:
        slug, name = self.names.tenant(tenant)
        project_name = self.names.projects.get(project)
        # As metered: the gateway caps cached tokens at the prompt, so rows metered since bill
        # as the usage API counts them; capping here as well would change the final bill of a
        # period closed with an engine's miscount in it, which must read the same for ever.
        quantities = (("input", prompt - cached), ("cached_input", cached), ("output", completion))
        for token_class, tokens in quantities:
            if tokens <= 0:
                continue
            sku, description, list_unit, contracted_unit = self._sku(model, tier, token_class, slug)
            quantity = per_million(tokens)
            out.append(
                ChargeLine(
                    tenant,
                    slug,
                    name,
                    USAGE,
                    hour,
                    hour + HOUR,
                    sku,
                    description,
                    "Usage-Based",
                    project,
                    project_name,
                    region or None,
                    model,
                    tier,
                    token_class,
                    None,
                    Decimal(tokens),
                    TOKENS,
                    quantity,
                    PER_MILLION_TOKENS,
                    list_unit,
                    contracted_unit,
                    exact_product(quantity, list_unit),
                    exact_product(quantity, contracted_unit),
                    self.version.version,
                )
            )


def percent(fraction: Decimal | None) -> str:
    """``0.125`` as ``12.5%``: the terms exactly as written, never rounded to what they are not."""
    if fraction is None:
        return "-"
    return f"{exact_product(fraction, Decimal(100)).normalize():f}%"


def _credit_lines(
    usage: list[ChargeLine],
    slo: dict[tuple[uuid.UUID, str], tuple[int, int]],
    period: Period,
    book: PriceBook,
    names: Names,
) -> list[ChargeLine]:
    version = book.at(max(period.start, book.versions[0].effective_from))
    bases: dict[tuple[uuid.UUID, str], list[ChargeLine]] = defaultdict(list)
    for line in usage:
        bases[(line.tenant_id, line.tier or "")].append(line)
    out = []
    for (tenant, tier), (eligible, met) in sorted(
        slo.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])
    ):
        outcome = sla_outcome(eligible, met, version.sla_credits.get(tier, []))
        base = bases.get((tenant, tier), [])
        if not outcome.credit_fraction or not base:
            continue
        fraction = outcome.credit_fraction
        list_credit = -exact_product(exact_sum([b.list_cost for b in base]), fraction)
        billed_credit = -exact_product(exact_sum([b.contracted_cost for b in base]), fraction)
        slug, name = names.tenant(tenant)
        out.append(
            ChargeLine(
                tenant,
                slug,
                name,
                CREDIT,
                period.start,
                period.end,
                sku_id=f"sla-credit:{tier}",
                description=(
                    f"SLA credit, {tier} tier: TTFT attainment {outcome.attainment:.2%} is below "
                    f"{percent(outcome.threshold)}; {percent(fraction)} of the tier's usage"
                ),
                frequency="One-Time",
                tier=tier,
                list_cost=list_credit,
                contracted_cost=billed_credit,
                price_version=version.version,
                slo_attainment=outcome.attainment,
            )
        )
    return out
