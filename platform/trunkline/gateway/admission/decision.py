"""What admission decides for one request: admitted, queued (held with an expected wait) or
rejected (a transport-neutral code, a reason and how long to wait before retrying).

Rejection codes (mapped to HTTP once, by the gateway's error table):

==========================  ================  ===============================================
reason                      code (HTTP)       when
==========================  ================  ===============================================
``overloaded``              rate_limited 429  shed to keep capacity for a higher tier, or the
                                              pool's hold queue is full (lowest tier first)
``slo_unattainable``        slo_unattainable  no endpoint in the ranking can start it within
                            503               its tier's deadline, even after a short hold
``deadline_exceeded``       slo_unattainable  it was held, and its deadline can no longer be
                            503               met: rejected now rather than served late
==========================  ================  ===============================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ADMITTED",
    "DEADLINE_EXCEEDED",
    "OVERLOADED",
    "QUEUED",
    "REJECTED",
    "SLO_UNATTAINABLE",
    "Decision",
    "Outcome",
]

Outcome = Literal["admitted", "queued", "rejected"]
ADMITTED: Outcome = "admitted"
QUEUED: Outcome = "queued"
REJECTED: Outcome = "rejected"

OVERLOADED = "overloaded"
SLO_UNATTAINABLE = "slo_unattainable"
DEADLINE_EXCEEDED = "deadline_exceeded"

_CODES = {
    OVERLOADED: "rate_limited",
    SLO_UNATTAINABLE: "slo_unattainable",
    DEADLINE_EXCEEDED: "slo_unattainable",
}


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    endpoint: int | None = None
    """Admitted: index into the ranking of the endpoint to send it to."""
    predicted_ttft_s: float | None = None
    """Admitted: the predicted time to first token on that endpoint, from now."""
    wait_s: float | None = None
    """Queued: the expected hold; admitted after a hold: how long it was held."""
    reason: str | None = None
    """Rejected: ``overloaded``, ``slo_unattainable`` or ``deadline_exceeded``; admitted: ``burst``
    when it went to a burst pool endpoint, else None."""
    retry_after_s: float | None = None
    """Rejected: when retrying is worth it."""
    ticket: int | None = None
    """Queued: the hold's id, for :meth:`AdmissionPolicy.poll` and ``cancel``."""

    @property
    def code(self) -> str | None:
        """The transport-neutral error code of a rejection."""
        if self.outcome != REJECTED:
            return None
        return _CODES.get(self.reason or "", "slo_unattainable")

    @property
    def label(self) -> str:
        """``admitted``, ``admitted;burst``, ``queued`` or ``rejected;<reason>`` (the header)."""
        return f"{self.outcome};{self.reason}" if self.reason else self.outcome

    @classmethod
    def admit(
        cls, endpoint: int, ttft_s: float, *, burst: bool = False, waited_s: float | None = None
    ) -> Decision:
        return cls(ADMITTED, endpoint, ttft_s, waited_s, "burst" if burst else None)

    @classmethod
    def reject(cls, reason: str, retry_after_s: float) -> Decision:
        return cls(REJECTED, reason=reason, retry_after_s=max(retry_after_s, 0.0))
