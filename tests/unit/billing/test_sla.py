"""SLA credits from measured TTFT attainment: the lowest threshold attainment is under wins."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trunkline.billing.lines import percent
from trunkline.billing.pricebook import CreditStep
from trunkline.billing.sla import sla_outcome

GOLD = [CreditStep(Decimal("0.95"), Decimal("0.10")), CreditStep(Decimal("0.90"), Decimal("0.25"))]


@pytest.mark.parametrize(
    ("eligible", "met", "credit", "attainment"),
    [
        (0, 0, "0", None),  # no traffic, no credit
        (100, 100, "0", "1.0000"),
        (100, 95, "0", "0.9500"),  # exactly on target is not below it
        (100, 94, "0.10", "0.9400"),
        (1000, 949, "0.10", "0.9490"),
        (100, 90, "0.10", "0.9000"),
        (100, 89, "0.25", "0.8900"),
        (3, 0, "0.25", "0.0000"),
        (20000, 18999, "0.10", "0.9499"),  # shown rounded down: never "0.9500, below 0.95"
        (3, 2, "0.25", "0.6666"),
    ],
)
def test_credit_steps(eligible: int, met: int, credit: str, attainment: str | None) -> None:
    outcome = sla_outcome(eligible, met, GOLD)
    assert outcome.credit_fraction == Decimal(credit)
    assert outcome.attainment == (None if attainment is None else Decimal(attainment))


def test_a_tier_without_terms_gets_no_credit() -> None:
    assert sla_outcome(100, 1, []).credit_fraction == 0


@pytest.mark.parametrize(
    ("fraction", "shown"),
    [("0.95", "95%"), ("0.125", "12.5%"), ("0.6667", "66.67%"), ("1", "100%"), ("0.10", "10%")],
)
def test_credit_terms_are_described_exactly(fraction: str, shown: str) -> None:
    # "below 67%" for a threshold of 0.6667, or "12%" for a credit of 0.125, misstate the terms
    assert percent(Decimal(fraction)) == shown
