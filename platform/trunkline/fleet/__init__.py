"""The fleet simulator: pools of simulated vLLM engines across flavors and regions, fed by a
workload, routed and admitted by the gateway's own policy objects, in virtual time.

:func:`simulate` runs one workload under one routing policy on a :class:`FleetSpec` and returns
a :class:`FleetResult` (per-request outcomes, inter-token latencies, engine totals) whose
:meth:`~FleetResult.metrics` gives the figures ``trunkline bench fleet`` compares. Admission is the
gateway's own :class:`~trunkline.gateway.admission.AdmissionPolicy`, passed to :func:`simulate`.
"""

from trunkline.fleet.admission import VirtualAdmission
from trunkline.fleet.results import EngineTotals, FleetResult, RequestOutcome
from trunkline.fleet.simulator import simulate
from trunkline.fleet.spec import DEFAULT_TIERS, FLAVOR_PRICES, FleetSpec, PoolSpec, build_snapshot

__all__ = [
    "DEFAULT_TIERS",
    "FLAVOR_PRICES",
    "EngineTotals",
    "FleetResult",
    "FleetSpec",
    "PoolSpec",
    "RequestOutcome",
    "VirtualAdmission",
    "build_snapshot",
    "simulate",
]
