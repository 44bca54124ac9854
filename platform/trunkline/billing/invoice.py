"""The per-tenant invoice summary: the period's charge lines, grouped for a human reader.

Amounts are shown in cents; the total is the exact sum of the FOCUS ``BilledCost`` of the same
lines, rounded once (``amount_due``), which the FOCUS export's rounding row takes its sum to,
and the rows' cents are allotted so that they add up to it.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from operator import attrgetter

from trunkline.billing.charges import CREDIT, ChargeLine
from trunkline.billing.focus import invoice_id
from trunkline.billing.periods import Period
from trunkline.billing.rating import CENT, ZERO, amount_due, exact_sum
from trunkline.kit.batches import batches

SECTIONS = {
    "tokens": "Token usage on shared pools (unit price per 1M tokens)",
    "gpu": "Dedicated GPU capacity (per GPU-hour, idle included)",
    "credit": "SLA credits",
    "correction": "Corrections to earlier periods",
}
WIDTH = 100
PIECE_CHARS = 65_536
"""An invoice of every tenant is written or sent in pieces of about this many characters."""


def _money(value: Decimal) -> str:
    cents = value.quantize(CENT, ROUND_HALF_EVEN)
    return f"{cents.copy_abs() if cents == 0 else cents:,.2f}"


def _quantity(value: Decimal | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if value == value.to_integral_value() else f"{value:,.4f}"


def _label(line: ChargeLine) -> tuple[str, str]:
    """(section, item) of a line on the invoice."""
    if line.category == CREDIT:
        attainment = f"{line.slo_attainment:.2%}" if line.slo_attainment is not None else "-"
        section, item = "credit", f"{line.tier} tier, TTFT attainment {attainment}"
    elif line.flavor is not None:
        section, item = "gpu", f"{line.flavor} {line.region or ''}".strip()
    else:
        token_class = (line.token_class or "").replace("_", " ")
        section, item = "tokens", f"{line.model} / {line.tier} / {token_class}"
    if line.correction:
        return "correction", f"{line.charge_start:%Y-%m} {item}"
    return section, item


def _group(lines: Iterable[ChargeLine]) -> dict[tuple[str, str], list[ChargeLine]]:
    groups: dict[tuple[str, str], list[ChargeLine]] = defaultdict(list)
    for line in lines:
        groups[_label(line)].append(line)
    return groups


def _row(label: str, lines: list[ChargeLine], cents: int) -> str:
    quantity = exact_sum([line.consumed_quantity or ZERO for line in lines])
    unit = lines[0].consumed_unit or ""
    prices = {line.contracted_unit_price for line in lines if line.contracted_unit_price}
    price = f"{next(iter(prices)):f}" if len(prices) == 1 else ("various" if prices else "")
    shown_quantity = f"{_quantity(quantity)} {unit}" if unit else ""
    # A column wider than its room still leaves a space before the next one.
    return f"  {label:<48}{shown_quantity:>22} {price:>13} {_money(cents * CENT):>15}"


def _cents(amounts: list[Decimal], total: Decimal) -> list[int]:
    """Each amount in whole cents, so that they add up to ``total`` rounded to cents: each is
    rounded down, and the cents left go to those that lost the most (largest remainder).
    Rounded each on its own, rows of 0.006 + 0.006 showed 0.01 + 0.01 over a total of 0.01."""
    exact = [amount / CENT for amount in amounts]
    floors = [int(value.to_integral_value(ROUND_FLOOR)) for value in exact]
    left = int(amount_due(total) / CENT) - sum(floors)
    by_loss = sorted(range(len(exact)), key=lambda i: exact[i] - floors[i], reverse=True)
    for index in by_loss[:left]:
        floors[index] += 1
    return floors


def _section(title: str, rows: list[str]) -> list[str]:
    return ["", title, "-" * WIDTH, *rows] if rows else []


def render_invoice(lines: list[ChargeLine], period: Period, currency: str, *, final: bool) -> str:
    """One tenant's invoice; ``lines`` must all belong to that tenant."""
    if not lines:
        return f"No charges in {period.label}.\n"
    first = lines[0]
    status = "FINAL" if final else "PRELIMINARY (the period is not closed; figures may change)"
    header = [
        "=" * WIDTH,
        f"INVOICE {invoice_id(period, first.tenant_slug) if final else '(draft)'}",
        f"Billed to: {first.tenant_name} ({first.tenant_slug}), account {first.tenant_id}",
        f"Billing period: {period.start:%Y-%m-%d} to {period.end:%Y-%m-%d} (UTC, end exclusive)",
        f"Currency: {currency}    Status: {status}",
        "=" * WIDTH,
        f"  {'item':<48}{'quantity':>22}{'unit price':>14}{'amount':>16}",
    ]
    groups = sorted(_group(lines).items())
    total = exact_sum([line.contracted_cost for line in lines])
    amounts = [exact_sum([line.contracted_cost for line in group]) for _label, group in groups]
    sections: dict[str, list[str]] = {title: [] for title in SECTIONS.values()}
    for ((section, item), group), cents in zip(groups, _cents(amounts, total), strict=True):
        sections[SECTIONS[section]].append(_row(item[:48], group, cents))
    body: list[str] = []
    for title, rows in sections.items():
        body += _section(title, rows)
    due = _money(amount_due(total))
    footer = ["", "=" * WIDTH, f"  {'TOTAL DUE':<84}{due:>16} {currency}", "=" * WIDTH]
    return "\n".join(header + body + footer) + "\n"


def invoice_chunks(
    lines: Iterable[ChargeLine], period: Period, currency: str, *, final: bool
) -> Iterator[bytes]:
    """Every tenant's invoice, one after another (a blank line between two), in pieces of about
    ``PIECE_CHARS`` made as ``lines`` come: an invoice of every tenant's month is written (or
    sent) a few tenants at a time, not held whole. ``lines`` must come a tenant slug's lines
    together, slugs in order (a statement, or ``statements_by_tenants`` one after another): each
    run of one slug is that slug's invoice. No API or manifest changes a tenant's slug; a slug
    changed by hand in the database after a close leaves the tenant's closed lines under the
    old one, which then come where the tenant's group comes, not in that slug's order."""
    runs = itertools.groupby(lines, key=attrgetter("tenant_slug"))
    invoices = (render_invoice(list(run), period, currency, final=final) for _slug, run in runs)
    # The first as it is, each after it after a blank line (in the piece's size too).
    texts = itertools.chain(itertools.islice(invoices, 1), ("\n" + text for text in invoices))
    made = False
    for piece in batches(texts, PIECE_CHARS, len):
        made = True
        yield "".join(piece).encode("utf-8")
    if not made:
        yield f"No charges in {period.label}.\n".encode()
