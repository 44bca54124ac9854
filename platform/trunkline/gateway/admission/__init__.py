"""SLO admission control per tier: predict a request's TTFT on the endpoints routing ranked,
then admit it, hold it briefly in a per-pool priority queue with fair share between tenants, send
it to a burst pool, or reject it at once with a code and ``Retry-After``.

The policy (:class:`AdmissionPolicy`) is pure and serves both callers: the fleet simulator in
virtual time and the gateway through :class:`AsyncAdmission`, which is an :class:`Admission`,
what the gateway's request path asks of admission (:class:`AdmitAll`: admission off). See
docs/admission.md.
"""

from trunkline.gateway.admission.adapter import AdmissionResult, AsyncAdmission, LoadSource
from trunkline.gateway.admission.config import AdmissionConfig
from trunkline.gateway.admission.decision import (
    ADMITTED,
    DEADLINE_EXCEEDED,
    OVERLOADED,
    QUEUED,
    REJECTED,
    SLO_UNATTAINABLE,
    Decision,
    Outcome,
)
from trunkline.gateway.admission.errors import (
    DECISION_HEADER,
    AdmissionOverloaded,
    AdmissionSloUnattainable,
    rejection_error,
)
from trunkline.gateway.admission.fair_queue import FairQueue, Held
from trunkline.gateway.admission.metrics import AdmissionMetrics
from trunkline.gateway.admission.policy import AdmissionPolicy, Release
from trunkline.gateway.admission.predictor import (
    DEFAULT_RATES,
    PrefixIndex,
    ServiceRates,
    TtftPredictor,
    prior_rates,
)
from trunkline.gateway.admission.protocol import Admission, AdmitAll, Admitted

__all__ = [
    "ADMITTED",
    "DEADLINE_EXCEEDED",
    "DECISION_HEADER",
    "DEFAULT_RATES",
    "OVERLOADED",
    "QUEUED",
    "REJECTED",
    "SLO_UNATTAINABLE",
    "Admission",
    "AdmissionConfig",
    "AdmissionMetrics",
    "AdmissionOverloaded",
    "AdmissionPolicy",
    "AdmissionResult",
    "AdmissionSloUnattainable",
    "AdmitAll",
    "Admitted",
    "AsyncAdmission",
    "Decision",
    "FairQueue",
    "Held",
    "LoadSource",
    "Outcome",
    "PrefixIndex",
    "Release",
    "ServiceRates",
    "TtftPredictor",
    "prior_rates",
    "rejection_error",
]
