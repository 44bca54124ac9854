"""The three kinds of routing plugin a pipeline is made of, and what they see.

A :class:`Filter` drops endpoints a request must never use (a strict filter's verdict is final:
failover walks only the endpoints every strict filter kept); a filter that is not strict states
a preference: what it would drop is ranked after what it keeps. A :class:`Scorer` rates each
remaining endpoint in [0, 1] for one request (1 is best); the pipeline sums the scores with the
profile's weights. A :class:`Picker` turns the summed scores into the ranking. Scorers that
learn from decisions (the approximate prefix index) see each final choice through ``routed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from trunkline.gateway.routing.views import EndpointView, RequestView

__all__ = ["Filter", "Picker", "Scorer"]


class Filter(Protocol):
    name: str
    strict: bool
    """False: a preference; the endpoints it would drop are ranked after those it keeps."""

    def keep(self, request: RequestView, endpoint: EndpointView) -> bool:
        """Whether ``request`` may run on ``endpoint`` at all."""
        ...


class Scorer(Protocol):
    name: str

    def score(self, request: RequestView, endpoints: Sequence[EndpointView]) -> list[float]:
        """One value in [0, 1] per endpoint, 1 the best."""
        ...

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        """The request was sent to ``endpoint``."""
        ...


class Picker(Protocol):
    name: str

    def order(self, scores: Sequence[float], indices: Sequence[int]) -> list[int]:
        """``indices`` best first by ``scores[i]`` (``scores`` is indexed like the endpoints)."""
        ...
