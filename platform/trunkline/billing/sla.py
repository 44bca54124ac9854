"""SLA credits from measured TTFT attainment.

Attainment is the share of a tenant's requests in a tier whose first token came within the
tier's TTFT SLO (server-side failures count as misses). The tier's credit steps say what
share of that tier's billed usage is credited when attainment falls below a threshold; the
lowest threshold attainment is under decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from trunkline.billing.pricebook import CreditStep


@dataclass(frozen=True, slots=True)
class SlaOutcome:
    eligible: int
    met: int
    credit_fraction: Decimal
    threshold: Decimal | None

    @property
    def attainment(self) -> Decimal | None:
        """For display, to 4 decimal places, rounded down (decisions compare exactly): so an
        attainment below a threshold never shows as the threshold itself (18,999 of 20,000 is
        0.9499, not 0.9500 "below 0.95")."""
        if not self.eligible:
            return None
        exact = Decimal(self.met) / Decimal(self.eligible)
        return exact.quantize(Decimal("0.0001"), rounding=ROUND_FLOOR)


def sla_outcome(eligible: int, met: int, steps: list[CreditStep]) -> SlaOutcome:
    """The credit fraction for ``met`` of ``eligible`` requests under ``steps``."""
    best: CreditStep | None = None
    if eligible > 0:
        for step in steps:
            # met / eligible < below, without dividing
            if Decimal(met) < step.below * eligible and (best is None or step.below < best.below):
                best = step
    if best is None:
        return SlaOutcome(eligible, met, Decimal(0), None)
    return SlaOutcome(eligible, met, best.credit, best.below)
