"""Cost from quantities, in exact decimal arithmetic.

Every operation runs through a context that traps ``Inexact``: a result that would need rounding
raises instead of being rounded. The price book's bounds (prices ≤ 6 decimal places,
multipliers and discounts ≤ 4) keep every product exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact

MILLION = Decimal(1_000_000)
ZERO = Decimal(0)
ONE = Decimal(1)
CENT = Decimal("0.01")
_EXACT = Context(prec=60, traps=[Inexact])


@dataclass(frozen=True, slots=True)
class Rated:
    pricing_quantity: Decimal
    list_unit_price: Decimal
    contracted_unit_price: Decimal
    list_cost: Decimal
    contracted_cost: Decimal


def token_quantities(prompt: int, cached: int, completion: int) -> dict[str, int]:
    """Tokens per class: cached prompt tokens are priced as cached, the rest as input."""
    cached = min(max(cached, 0), prompt)
    return {"input": prompt - cached, "cached_input": cached, "output": completion}


def rate(quantity: Decimal, list_unit_price: Decimal, discount: Decimal) -> Rated:
    """``quantity`` in pricing units (e.g. millions of tokens, GPU-hours)."""
    contracted_unit = _EXACT.multiply(list_unit_price, _EXACT.subtract(ONE, discount))
    return Rated(
        pricing_quantity=quantity,
        list_unit_price=list_unit_price,
        contracted_unit_price=contracted_unit,
        list_cost=_EXACT.multiply(quantity, list_unit_price),
        contracted_cost=_EXACT.multiply(quantity, contracted_unit),
    )


def per_million(tokens: int) -> Decimal:
    return _EXACT.scaleb(Decimal(tokens), -6)


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    total = ZERO
    for value in values:
        total = _EXACT.add(total, value)
    return total


def exact_product(a: Decimal, b: Decimal) -> Decimal:
    return _EXACT.multiply(a, b)


def exact_difference(a: Decimal, b: Decimal) -> Decimal:
    return _EXACT.subtract(a, b)


def amount_due(total: Decimal) -> Decimal:
    """An invoice's exact total in cents (half to even): the only rounding of a bill. The
    FOCUS export adds a row of the difference, so its BilledCost adds up to this."""
    return total.quantize(CENT, ROUND_HALF_EVEN)
