"""The cascade plan of one request: what the first (small) attempt sends, how its answer is
judged, and what the client gets back when it is accepted. Pure functions over plain data.

The first attempt always runs unstreamed, so its whole answer can be judged before the
client sees a byte; an accepted answer is replayed as SSE to a streaming client
(:mod:`trunkline.gateway.cascade.replay`), an escalated request streams from the large model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from trunkline.gateway.authn import Principal
from trunkline.gateway.cascade.checks import (
    CONFIDENCE_INSTRUCTION,
    escalation_reason,
    read_answer,
    split_confidence,
)
from trunkline.gateway.pipeline import ParsedRequest
from trunkline.gateway.routing.candidates import open_pools
from trunkline.quota.estimate import completion_maximum
from trunkline.snapshot import AliasEntry, CascadeEntry, Snapshot

HEADER = "x-trunkline-cascade"
"""``first`` when the first model's answer was kept, ``escalated`` when the large one answered."""
REASON_HEADER = "x-trunkline-cascade-reason"
_MAX_REQUEST_ID = 64
_SYSTEM_ROLES = ("system", "developer")
"""Roles of a client's opening message the confidence instruction is joined to."""


@dataclass(frozen=True, slots=True)
class CascadePlan:
    request: ParsedRequest
    """The client's request, as it would go to the large model."""
    first: ParsedRequest
    """What the small model is asked: unstreamed, with log-probabilities or a confidence
    instruction when a check needs them."""
    first_alias: AliasEntry
    escalated_alias: AliasEntry
    checks: CascadeEntry


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: str | None
    """Why to escalate; None when the first answer is kept."""
    body: bytes
    """The first answer as the client gets it (only meaningful when kept)."""

    @property
    def escalate(self) -> bool:
        return self.reason is not None


def plan_cascade(request: ParsedRequest, alias: AliasEntry) -> CascadePlan | None:
    """The plan for a cascading alias; None for any other alias."""
    cascade = alias.cascade
    if cascade is None or request.kind == "embeddings":
        return None
    if request.kind != "chat":  # no system message to ask a confidence rating in
        cascade = msgspec.structs.replace(cascade, min_confidence=None)
    body = {k: v for k, v in request.body.items() if k not in ("stream", "stream_options")}
    if cascade.min_mean_logprob is not None:
        _ask_logprobs(request.kind, body)
    if cascade.min_confidence is not None:
        body["messages"] = _with_instruction(body["messages"])
    first = replace(request, body=body, stream=False, client_wants_usage=False)
    small = replace_alias(alias, alias.model, alias.pools, alias.context_length)
    large = replace_alias(alias, cascade.model, cascade.pools, cascade.context_length)
    return CascadePlan(request, first, small, large, cascade)


def replace_alias(
    alias: AliasEntry, model: str, pools: tuple[str, ...], context_length: int | None
) -> AliasEntry:
    """The alias as one plain (non-cascading) attempt sees it: one model on its pools."""
    return AliasEntry(alias.alias, model, alias.kind, pools, context_length=context_length)


def judge(plan: CascadePlan, payload: bytes) -> Verdict:
    """Keep the first answer (cleaned of what the cascade added) or say why to escalate."""
    try:
        document = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return Verdict("unreadable_answer", payload)
    if not isinstance(document, dict):
        return Verdict("unreadable_answer", payload)
    answer = read_answer(plan.request.kind, document)
    confidence = None
    if plan.checks.min_confidence is not None:
        confidence = split_confidence(answer.text)[1]
        _cut_confidence_lines(document)
    limit = client_limit(plan.request.kind, plan.request.body)
    reason = escalation_reason(answer, plan.checks, confidence, limit)
    if not _client_wants_logprobs(plan.request.kind, plan.request.body):
        for choice in document.get("choices") or ():
            if isinstance(choice, dict):
                choice["logprobs"] = None
    return Verdict(reason, msgspec.json.encode(document))


def client_limit(kind: str, body: dict[str, Any]) -> int | None:
    """The most tokens the client's request lets each answer have, on both models: its own
    maximum, else on completions the API's default of 16 (vLLM's and OpenAI's); None without
    one (the engine's own limit: what its context leaves)."""
    return completion_maximum(kind, body)


def attempt_request_id(request_id: str, suffix: str) -> str:
    """A usage-event id for another attempt of ``request_id``, unique and at most 64 chars."""
    candidate = f"{request_id}.{suffix}"
    if len(candidate) <= _MAX_REQUEST_ID:
        return candidate
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).hexdigest()
    keep = _MAX_REQUEST_ID - len(digest) - len(suffix) - 2
    return f"{request_id[:keep]}.{digest}.{suffix}"


def _ask_logprobs(kind: str, body: dict[str, Any]) -> None:
    if kind == "chat":
        body["logprobs"] = True
    elif not isinstance(body.get("logprobs"), int) or isinstance(body.get("logprobs"), bool):
        body["logprobs"] = 0  # the sampled token's own log-probability only


def _client_wants_logprobs(kind: str, body: dict[str, Any]) -> bool:
    value = body.get("logprobs")
    if kind == "chat":
        return value is True
    return value is not None and value is not False


def _with_instruction(messages: list[Any]) -> list[Any]:
    """The instruction joined to the client's own opening system (or developer) message, as
    text or as one more text part: a second system message is what many chat templates
    (Mistral's, Gemma's) refuse, and the client would get that 400 for the gateway's doing."""
    first = messages[0] if messages else None
    if isinstance(first, dict) and first.get("role") in _SYSTEM_ROLES:
        content = first.get("content")
        if isinstance(content, str):
            merged = {**first, "content": f"{content}\n\n{CONFIDENCE_INSTRUCTION}"}
            return [merged, *messages[1:]]
        if isinstance(content, list):
            part = {"type": "text", "text": CONFIDENCE_INSTRUCTION}
            return [{**first, "content": [*content, part]}, *messages[1:]]
    return [{"role": "system", "content": CONFIDENCE_INSTRUCTION}, *messages]


def _cut_confidence_lines(document: dict[str, Any]) -> None:
    """Cut the ``Confidence: X`` line from every choice's message: with ``n`` > 1 each answer
    followed the instruction, and the client asked for none of them."""
    for choice in document.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            message["content"] = split_confidence(message["content"])[0]


def placed_alone(
    snapshot: Snapshot, plan: CascadePlan, principal: Principal
) -> tuple[AliasEntry, str, str] | None:
    """When placement leaves the caller's tenant and tier pools of only one model of a
    cascade: that model's alias, and the cascade headers its answer carries. The other is not
    tried: the small model's attempt would fail and be charged; escalating to closed pools
    would end in a 503 after it."""
    tenant, tier = principal.tenant, principal.tier
    small = bool(open_pools(snapshot, plan.first_alias.pools, tenant, tier))
    large = bool(open_pools(snapshot, plan.escalated_alias.pools, tenant, tier))
    if small and not large:
        return plan.first_alias, "first", "escalation_closed"
    if large and not small:
        return plan.escalated_alias, "escalated", "first_closed"
    return None
