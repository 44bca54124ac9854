"""The errors a rejected admission raises: a coded refusal with ``Retry-After`` headers.

``overloaded`` is a :class:`~trunkline.errors.RateLimited` (HTTP 429: the client sent more than
the capacity left for its tier; retrying later helps); ``slo_unattainable`` and
``deadline_exceeded`` are :class:`~trunkline.errors.SloUnattainable` (HTTP 503: the service cannot
start the request within its tier's SLO now). Both carry ``Retry-After`` (whole seconds) and
``retry-after-ms`` in ``extra["headers"]``, like the quota errors, plus the decision header.
"""

from __future__ import annotations

import math

from trunkline.errors import RateLimited, SloUnattainable, TrunklineError
from trunkline.gateway.admission.decision import OVERLOADED, Decision
from trunkline.snapshot import TierEntry

__all__ = ["DECISION_HEADER", "AdmissionOverloaded", "AdmissionSloUnattainable", "rejection_error"]

DECISION_HEADER = "x-trunkline-admission"


class AdmissionOverloaded(RateLimited):
    """Shed by admission control so that higher tiers keep their SLO (HTTP 429)."""


class AdmissionSloUnattainable(SloUnattainable):
    """No endpoint can start the request within its tier's TTFT SLO (HTTP 503)."""


def rejection_headers(decision: Decision) -> dict[str, str]:
    retry_ms = math.ceil((decision.retry_after_s or 0.0) * 1000)
    return {
        DECISION_HEADER: decision.label,
        "retry-after": str(max(1, math.ceil(retry_ms / 1000))),
        "retry-after-ms": str(retry_ms),
    }


def rejection_error(decision: Decision, tier: TierEntry) -> TrunklineError:
    """The error to raise for a rejected ``decision``."""
    retry = decision.retry_after_s or 0.0
    extra = {"headers": rejection_headers(decision), "admission": decision.label}
    if decision.reason == OVERLOADED:
        message = (
            f"The service is at capacity for the {tier.name} tier; "
            f"please try again in {retry:.3g}s."
        )
        return AdmissionOverloaded(message, reason=OVERLOADED, extra=extra)
    message = (
        f"No endpoint can return a first token within the {tier.name} tier's "
        f"{tier.ttft_slo_ms} ms target right now; please try again in {retry:.3g}s."
    )
    return AdmissionSloUnattainable(message, reason=decision.reason, extra=extra)
