"""FinOps FOCUS rows from charge lines (``focus_files`` writes them as CSV or Parquet).

Column names, types and values follow the FOCUS specification (1.2): costs and quantities
are exact Decimals in plain notation, date/times are UTC ISO 8601 (``2026-11-01T00:00:00Z``),
``Tags`` is a JSON object, and provider-specific columns carry the ``x_`` prefix. A correction to an
earlier, already invoiced period has ``ChargeClass = "Correction"``; its quantities and costs
are the differences it makes. Tags are Trunkline's own, under ``trunkline/``; each invoice's
rows end with the rounding of its total to cents (``Adjustment``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from operator import attrgetter
from typing import Any

from trunkline.billing.charges import USAGE, ChargeLine
from trunkline.billing.periods import Period
from trunkline.billing.rating import ZERO, amount_due, exact_difference, exact_sum

PROVIDER = "Trunkline"
INFERENCE_SERVICE = "Trunkline Model Inference"
CAPACITY_SERVICE = "Trunkline Dedicated GPU Capacity"
BILLING_SERVICE = "Trunkline Billing"
"""The service of an invoice's rounding row."""
ADJUSTMENT = "Adjustment"
TAG_PREFIX = "trunkline/"
"""FOCUS: provider-defined tag keys carry a prefix the provider publishes (docs/metering.md)."""
STRING, DECIMAL, DATETIME, JSON = "String", "Decimal", "Date/Time", "JSON"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str


# fmt: off
COLUMNS = tuple(
    Column(name, kind)
    for name, kind in (
        ("BillingAccountId", STRING), ("BillingAccountName", STRING),
        ("SubAccountId", STRING), ("SubAccountName", STRING),
        ("BillingCurrency", STRING),
        ("BillingPeriodStart", DATETIME), ("BillingPeriodEnd", DATETIME),
        ("ChargePeriodStart", DATETIME), ("ChargePeriodEnd", DATETIME),
        ("ChargeCategory", STRING), ("ChargeClass", STRING),
        ("ChargeDescription", STRING), ("ChargeFrequency", STRING),
        ("BilledCost", DECIMAL), ("EffectiveCost", DECIMAL),
        ("ListCost", DECIMAL), ("ContractedCost", DECIMAL),
        ("ListUnitPrice", DECIMAL), ("ContractedUnitPrice", DECIMAL),
        ("ConsumedQuantity", DECIMAL), ("ConsumedUnit", STRING),
        ("PricingQuantity", DECIMAL), ("PricingUnit", STRING), ("PricingCategory", STRING),
        ("ProviderName", STRING), ("PublisherName", STRING), ("InvoiceIssuerName", STRING),
        ("InvoiceId", STRING),
        ("ServiceName", STRING), ("ServiceCategory", STRING), ("ServiceSubcategory", STRING),
        ("ResourceId", STRING), ("ResourceName", STRING), ("ResourceType", STRING),
        ("RegionId", STRING), ("RegionName", STRING),
        ("SkuId", STRING), ("SkuPriceId", STRING), ("SkuMeter", STRING), ("SkuPriceDetails", JSON),
        ("Tags", JSON),
        ("x_Model", STRING), ("x_Tier", STRING), ("x_TokenClass", STRING),
        ("x_AcceleratorFlavor", STRING), ("x_PriceBookVersion", STRING),
        ("x_SloAttainment", DECIMAL),
    )
)
# fmt: on
COLUMN_NAMES = tuple(c.name for c in COLUMNS)


def invoice_id(period: Period, tenant_slug: str) -> str:
    return f"TL-{period.label}-{tenant_slug}"


def _resource(line: ChargeLine) -> tuple[str | None, str | None, str | None]:
    """ResourceId, ResourceName, ResourceType. A model is one resource shared by every tenant;
    dedicated GPUs are their tenant's (and project's) own: their id says whose, as FOCUS wants
    an id unique within the provider (two tenants' GPUs of a flavor and region shared one)."""
    if line.model is not None:
        return f"models/{line.model}", line.model, "Model"
    if line.flavor is not None:
        region = line.region or "any"
        owner = f"tenants/{line.tenant_id}"
        if line.project_id is not None:
            owner += f"/projects/{line.project_id}"
        resource_id = f"{owner}/dedicated/{line.flavor}/{region}"
        return resource_id, f"{line.flavor} ({region})", "GPU Capacity"
    return None, None, None


class _RowMaker:
    """FOCUS rows of one export; strings that repeat across rows are made once."""

    def __init__(self, period: Period, currency: str, final: bool) -> None:
        self.period = period
        self.currency = currency
        self.final = final
        self._cache: dict[Any, Any] = {}

    def _once(self, key: Any, make: Any) -> Any:
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = make()
        return value

    def row(self, line: ChargeLine) -> tuple[Any, ...]:
        usage = line.category == USAGE
        tenant = self._once(("tenant", line.tenant_id), lambda: str(line.tenant_id))
        project = (
            self._once(("project", line.project_id), lambda: str(line.project_id))
            if line.project_id
            else None
        )
        tags = self._once(
            ("tags", line.tenant_slug, line.project_name, line.tier), lambda: _tags(line)
        )
        resource = self._once(
            ("resource", line.model, line.flavor, line.region)
            + ((line.tenant_id, line.project_id) if line.flavor else ()),
            lambda: _resource(line),
        )
        # A SKU has one price at a time (its version's is x_PriceBookVersion): the price id
        # stays the same when a version changes the price, as FOCUS has it.
        price_id = line.sku_id if usage else None
        invoice = (
            self._once(
                ("invoice", line.tenant_slug), lambda: invoice_id(self.period, line.tenant_slug)
            )
            if self.final
            else None
        )
        version = str(line.price_version) if line.price_version is not None else None
        sku = self._once(("sku", line.sku_id, usage), lambda: _sku_meter_and_details(line, usage))
        cost = line.contracted_cost
        # fmt: off
        return (
            tenant, line.tenant_name, project, line.project_name,
            self.currency, self.period.start, self.period.end, line.charge_start, line.charge_end,
            line.category, "Correction" if line.correction else None,
            line.description, line.frequency,
            cost, cost, line.list_cost, cost,
            line.list_unit_price, line.contracted_unit_price,
            line.consumed_quantity, line.consumed_unit, line.pricing_quantity, line.pricing_unit,
            "Standard" if usage else None,
            PROVIDER, PROVIDER, PROVIDER, invoice,
            *_service(line),
            *resource,
            line.region, line.region,
            line.sku_id or None, price_id, *sku,
            tags,
            line.model, line.tier, line.token_class, line.flavor, version,
            line.slo_attainment,
        )
        # fmt: on


def _service(line: ChargeLine) -> tuple[str, str, str]:
    """ServiceName, ServiceCategory, ServiceSubcategory."""
    if line.category == ADJUSTMENT:
        return BILLING_SERVICE, "AI and Machine Learning", "Other (AI and Machine Learning)"
    if line.flavor:
        return CAPACITY_SERVICE, "AI and Machine Learning", "AI Platforms"
    return INFERENCE_SERVICE, "AI and Machine Learning", "Generative AI"


def _sku_meter_and_details(line: ChargeLine, usage: bool) -> tuple[str | None, str | None]:
    """SkuMeter, and SkuPriceDetails: a SKU price's properties, each for one pricing unit
    (a GPU-hour is one GPU's), Trunkline's own under ``x_`` (null without a SkuPriceId)."""
    details: dict[str, object]
    if not line.sku_id:
        return None, None
    if line.flavor is not None:
        meter, details = "GPU Hours", {"GpuCount": 1, "x_AcceleratorFlavor": line.flavor}
    elif line.token_class is not None:
        meter = (line.token_class.replace("_", " ").title()) + " Tokens"
        details = {"x_Model": line.model, "x_Tier": line.tier, "x_TokenClass": line.token_class}
    else:
        meter, details = "SLA Credit", {}
    text = json.dumps(details, sort_keys=True, separators=(",", ":")) if usage else None
    return meter, text


def _tags(line: ChargeLine) -> str:
    """Every tag is Trunkline's own (there are no customer tags): under ``TAG_PREFIX``."""
    tags = {"tenant": line.tenant_slug}
    if line.project_name:
        tags["project"] = line.project_name
    if line.tier:
        tags["tier"] = line.tier
    prefixed = {TAG_PREFIX + key: value for key, value in tags.items()}
    return json.dumps(prefixed, sort_keys=True, separators=(",", ":"))


def focus_rows(
    lines: Iterable[ChargeLine], period: Period, currency: str, final: bool
) -> Iterator[tuple[Any, ...]]:
    """FOCUS rows, values in ``COLUMNS`` order (None for null; Tags as a JSON object text),
    made as they are read: an export of millions of lines never holds them all. ``lines``
    come a tenant slug's together (as ``invoice_chunks`` takes them): after each run, an
    invoice's, a rounding row (``Adjustment``) of its total to the cents it is invoiced in,
    so its ``BilledCost`` adds up to the invoice, as FOCUS wants (it added up to fractions of
    a cent the invoice rounds)."""
    maker = _RowMaker(period, currency, final)
    for _slug, run in itertools.groupby(lines, key=attrgetter("tenant_slug")):
        total, line = ZERO, None
        for line in run:
            total = exact_sum((total, line.contracted_cost))
            yield maker.row(line)
        rounding = exact_difference(amount_due(total), total)
        if rounding and line is not None:
            yield maker.row(_rounding(line, period, rounding))


def _rounding(line: ChargeLine, period: Period, amount: Decimal) -> ChargeLine:
    """The rounding row of the invoice ``line`` is on (no SKU: FOCUS allows none)."""
    return ChargeLine(
        line.tenant_id,
        line.tenant_slug,
        line.tenant_name,
        ADJUSTMENT,
        period.start,
        period.end,
        sku_id="",
        description="Rounding of the invoice total to the cent",
        frequency="One-Time",
        list_cost=amount,
        contracted_cost=amount,
    )
