"""Choosing where a request runs. Pure policy over the snapshot and endpoint state.

This first cut filters by residency and tier and picks round-robin; the routing
issue replaces the picker with the filter → scorer → picker pipeline.
"""

from trunkline.gateway.routing.round_robin import Candidate, RoundRobinRouter

__all__ = ["Candidate", "RoundRobinRouter"]
