"""What the gateway's request path asks of admission (step 5): :class:`Admission` sees the
ranked endpoints and answers the order to try them in (:class:`Admitted`), or raises a coded
refusal. :class:`~trunkline.gateway.admission.adapter.AsyncAdmission` is the SLO policy's;
:class:`AdmitAll` is admission off."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from trunkline.gateway.routing.views import EndpointView, RequestView
from trunkline.snapshot import TierEntry

__all__ = ["Admission", "AdmitAll", "Admitted"]


class Admitted(Protocol):
    """What admission returns for an admitted request."""

    @property
    def order(self) -> list[int]:
        """Indices into the ranking, in the order to try them."""
        ...

    @property
    def headers(self) -> dict[str, str]: ...


class Admission(Protocol):
    """Admission (step 5): sees the ranked endpoints with their views and loads; returns the
    order to try them in, or raises a coded :class:`TrunklineError` (with Retry-After)."""

    async def admit(
        self, request: RequestView, tier: TierEntry, ranked: Sequence[EndpointView]
    ) -> Admitted: ...


@dataclass(frozen=True, slots=True)
class _AllAdmitted:
    order: list[int]
    headers: dict[str, str]


class AdmitAll:
    """Admission off: every routed request is admitted, endpoints tried in routing order."""

    async def admit(
        self, request: RequestView, tier: TierEntry, ranked: Sequence[EndpointView]
    ) -> Admitted:
        return _AllAdmitted(list(range(len(ranked))), {})
