"""Cost from tokens in exact decimal arithmetic: cached tokens priced as cached, discounts."""

from __future__ import annotations

from decimal import Decimal, Inexact

import pytest

from trunkline.billing.rating import exact_product, per_million, rate, token_quantities


@pytest.mark.parametrize(
    ("prompt", "cached", "completion", "expected"),
    [
        (1000, 0, 10, {"input": 1000, "cached_input": 0, "output": 10}),
        (1000, 400, 10, {"input": 600, "cached_input": 400, "output": 10}),
        (1000, 1000, 0, {"input": 0, "cached_input": 1000, "output": 0}),
        (100, 250, 5, {"input": 0, "cached_input": 100, "output": 5}),  # never more than asked
    ],
)
def test_cached_prompt_tokens_are_their_own_class(
    prompt: int, cached: int, completion: int, expected: dict[str, int]
) -> None:
    assert token_quantities(prompt, cached, completion) == expected


@pytest.mark.parametrize(
    ("tokens", "unit", "discount", "list_cost", "contracted_cost"),
    [
        (1_000_000, "0.20", "0", "0.20", "0.20"),
        (1, "0.20", "0", "0.00000020", "0.00000020"),
        (123_456_789, "0.075", "0.1", "9.259259175", "8.3333332575"),
        (3, "0.000001", "0.3333", "0.000000000003", "0.0000000000020001"),
    ],
)
def test_cost_is_exact(
    tokens: int, unit: str, discount: str, list_cost: str, contracted_cost: str
) -> None:
    rated = rate(per_million(tokens), Decimal(unit), Decimal(discount))
    assert rated.list_cost == Decimal(list_cost)
    assert rated.contracted_cost == Decimal(contracted_cost)
    assert rated.list_cost * (1 - Decimal(discount)) == rated.contracted_cost


def test_a_result_that_would_need_rounding_raises_instead() -> None:
    huge = Decimal("1." + "1" * 40)
    with pytest.raises(Inexact):
        exact_product(huge, huge)
