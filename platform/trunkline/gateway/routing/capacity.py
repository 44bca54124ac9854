"""How much work each endpoint can take relative to the others: heterogeneous pools.

An H100 serves about three times what an L40S does, so "equal load" across a mixed fleet means
three times the requests on the H100. :func:`relative_capacity` weighs each endpoint by its
nominal throughput (``EndpointView.tokens_per_s``) over the candidates' mean; when any candidate's
throughput is unknown every weight is 1 (requests counted alike, as in a uniform pool).
"""

from __future__ import annotations

from collections.abc import Sequence

from trunkline.gateway.routing.views import EndpointView

__all__ = ["relative_capacity"]


def relative_capacity(endpoints: Sequence[EndpointView]) -> list[float]:
    """Per endpoint, its nominal throughput over the mean of ``endpoints`` (mean weight 1)."""
    rates = [e.tokens_per_s for e in endpoints]
    known = [rate for rate in rates if rate is not None and rate > 0]
    if not known or len(known) != len(rates) or min(known) == max(known):
        return [1.0] * len(rates)
    mean = sum(known) / len(known)
    return [rate / mean for rate in known]
