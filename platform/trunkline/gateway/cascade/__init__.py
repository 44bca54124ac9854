"""Model cascading: a small model answers first; a failed check escalates to a large one.

plan_cascade(request, alias) -> CascadePlan | None   the two attempts of a cascading alias
judge(plan, payload) -> Verdict                       keep the first answer, or why to escalate
replay_events(kind, payload, include_usage)           an accepted answer as SSE for a stream
escalation_reason(answer, checks, confidence)         the checks themselves (pure)

``run.run_cascade`` runs the attempts for ``GatewayService.handle``; see docs/cascading.md.
"""

from trunkline.gateway.cascade.checks import (
    CONFIDENCE_INSTRUCTION,
    Answer,
    escalation_reason,
    is_refusal,
    read_answer,
    split_confidence,
)
from trunkline.gateway.cascade.plan import (
    HEADER,
    REASON_HEADER,
    CascadePlan,
    Verdict,
    attempt_request_id,
    judge,
    placed_alone,
    plan_cascade,
    replace_alias,
)
from trunkline.gateway.cascade.replay import replay_chunks, replay_events

__all__ = [
    "CONFIDENCE_INSTRUCTION",
    "HEADER",
    "REASON_HEADER",
    "Answer",
    "CascadePlan",
    "Verdict",
    "attempt_request_id",
    "escalation_reason",
    "is_refusal",
    "judge",
    "placed_alone",
    "plan_cascade",
    "read_answer",
    "replace_alias",
    "replay_chunks",
    "replay_events",
    "split_confidence",
]
