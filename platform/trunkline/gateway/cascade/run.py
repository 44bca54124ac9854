"""Running a cascade: the small model's attempt, the verdict on its answer, and escalation.

:func:`run_cascade` calls ``attempt`` (the service's one upstream attempt, with its own quota
reservation and usage event) once or twice; see docs/cascading.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from trunkline.errors import (
    InvalidRequest,
    QuotaExhausted,
    RateLimited,
    SloUnattainable,
    TrunklineError,
    UpstreamError,
)
from trunkline.gateway.admission.errors import DECISION_HEADER, AdmissionOverloaded
from trunkline.gateway.cascade import plan as cascade
from trunkline.gateway.cascade.replay import replay_events
from trunkline.gateway.pipeline import ParsedRequest
from trunkline.gateway.reply import Reply
from trunkline.gateway.upstream import SHEDDING
from trunkline.snapshot import AliasEntry

__all__ = ["Attempt", "run_cascade"]

Attempt = Callable[[ParsedRequest, AliasEntry, str], Awaitable[Reply]]
"""One upstream attempt: the request to send, the alias to send it to, its request id."""
NOT_ADMITTED = (SloUnattainable, AdmissionOverloaded)
"""Admission's refusals (docs/admission.md): about the pools a request would run on, which a
cascade's other model does not share."""
REFUSED = (QuotaExhausted, RateLimited, SloUnattainable)
"""Refusals of an attempt before it is sent: the caller's quotas (and admission's, above)."""


async def run_cascade(
    plan: cascade.CascadePlan, request: ParsedRequest, request_id: str, attempt: Attempt
) -> Reply:
    """The first model's answer when it passes the checks, else the escalated model's."""
    first: Reply | None = None
    try:
        first = await attempt(plan.first, plan.first_alias, request_id)
    except UpstreamError:  # UpstreamUnavailable and UpstreamTimeout too
        verdict = cascade.Verdict("first_failed", b"")
    except NOT_ADMITTED:  # the small pools cannot start it in time; the large ones may
        verdict = cascade.Verdict("first_not_admitted", b"")
    except InvalidRequest as exc:
        if exc.reason != "context_length_exceeded":
            raise
        # The answer maximum is over the small model's context: refused before it was sent.
        verdict = cascade.Verdict("context_length_exceeded", b"")
    else:
        if first.status == 200:
            verdict = cascade.judge(plan, first.body)
        elif _over_context(first):  # the large model's context may well be longer
            verdict = cascade.Verdict("context_length_exceeded", b"")
        elif first.status == SHEDDING:  # the small pools shed load; the large one's may not
            verdict = cascade.Verdict("first_failed", b"")
        else:
            return first  # refused for the request itself: the large model would too
    if first is not None and not verdict.escalate:
        return _kept(request, first, verdict.body)
    escalated_id = cascade.attempt_request_id(request_id, "escalated")
    try:
        reply = await attempt(request, plan.escalated_alias, escalated_id)
    except (UpstreamError, *REFUSED) as exc:
        if first is None or first.status != 200 or verdict.reason == "unreadable_answer":
            raise
        # The large model could not answer, or its attempt was refused (a quota, admission):
        # the small answer, paid for already, serves the client better than an error whose
        # retry pays for it again. The reason says it failed its check.
        if isinstance(exc, UpstreamError):
            return _kept(request, first, verdict.body, reason="escalation_failed")
        refused = _refusal_headers(exc)
        return _kept(request, first, verdict.body, reason="escalation_refused", headers=refused)
    reply.headers[cascade.HEADER] = "escalated"
    reply.headers[cascade.REASON_HEADER] = verdict.reason or ""
    return reply


def _kept(
    request: ParsedRequest, first: Reply, body: bytes, *, reason: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:  # fmt: skip
    """The first model's answer to the client: whole, or replayed as SSE to a stream;
    ``headers`` over the first attempt's own."""
    headers = {**first.headers, **(headers or {}), cascade.HEADER: "first"}
    if reason is not None:
        headers[cascade.REASON_HEADER] = reason
    if not request.stream:
        return Reply(200, body, None, headers)
    return Reply(200, b"", replay_events(request.kind, body, request.client_wants_usage), headers)


def _refusal_headers(exc: TrunklineError) -> dict[str, str]:
    """What a refused escalation tells the client besides its reason: the ``x-ratelimit-*``
    headers of the refusal (the caller's limits as they stand now, the one that refused at
    0) and admission's decision. Not its Retry-After: the answer is a 200."""
    headers = exc.extra.get("headers") or {}
    return {
        name: value
        for name, value in headers.items()
        if name.startswith("x-ratelimit-") or name == DECISION_HEADER
    }


def _over_context(reply: Reply) -> bool:
    """Whether the engine refused the prompt as longer than its model's context (the gateway
    gives such refusals OpenAI's ``context_length_exceeded`` code)."""
    try:
        document = msgspec.json.decode(reply.body)
    except msgspec.DecodeError:
        return False
    error = document.get("error") if isinstance(document, dict) else None
    return isinstance(error, dict) and error.get("code") == "context_length_exceeded"
