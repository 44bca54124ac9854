"""The fleet simulator: pools of simulated vLLM engines across flavors and regions, fed by a
workload, routed and admitted by the gateway's own policy objects, in virtual time.

:func:`simulate` runs one workload under one routing policy on a :class:`FleetSpec` and returns
a :class:`FleetResult` (per-request outcomes, inter-token latencies, engine totals) whose
:meth:`~FleetResult.metrics` gives the figures ``trunkline bench fleet`` compares.
"""

from trunkline.fleet.admission import ADMIT, AdmissionPolicy, AdmitAll, Decision
from trunkline.fleet.results import EngineTotals, FleetResult, RequestOutcome
from trunkline.fleet.simulator import simulate
from trunkline.fleet.spec import DEFAULT_TIERS, FLAVOR_PRICES, FleetSpec, PoolSpec, build_snapshot

__all__ = [
    "ADMIT",
    "DEFAULT_TIERS",
    "FLAVOR_PRICES",
    "AdmissionPolicy",
    "AdmitAll",
    "Decision",
    "EngineTotals",
    "FleetResult",
    "FleetSpec",
    "PoolSpec",
    "RequestOutcome",
    "build_snapshot",
    "simulate",
]
