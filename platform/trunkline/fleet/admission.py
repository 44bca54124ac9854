"""The admission hook: after routing picks an endpoint, admit the request or reject it.

Admission control per tier is issue 5; until then every request is admitted. The interface is
the one the gateway's admission will implement — pure code over the request and the chosen
endpoint's view — so issue 5 plugs the same object into the gateway and this simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from trunkline.gateway.routing import EndpointView, RequestView
from trunkline.snapshot import TierEntry

__all__ = ["ADMIT", "AdmissionPolicy", "AdmitAll", "Decision"]


@dataclass(frozen=True, slots=True)
class Decision:
    admitted: bool
    reason: str | None = None
    """A transport-neutral code when rejected (``slo_unattainable``, ``rate_limited``, …)."""


ADMIT = Decision(True)


class AdmissionPolicy(Protocol):
    def admit(
        self, request: RequestView, tier: TierEntry, endpoint: EndpointView, now: float
    ) -> Decision: ...


class AdmitAll:
    """Admits everything (the behaviour before admission control exists)."""

    def admit(
        self, request: RequestView, tier: TierEntry, endpoint: EndpointView, now: float
    ) -> Decision:
        return ADMIT
