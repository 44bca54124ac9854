"""The usage meter of one upstream attempt: it emits the attempt's one usage record and settles
its quota reservation, exactly once, however the attempt ends."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from trunkline.gateway.authn import Principal
from trunkline.gateway.endpoints import EngineState, Flight
from trunkline.gateway.engine_answers import Tally
from trunkline.gateway.pipeline import ParsedRequest
from trunkline.gateway.routing import Candidate
from trunkline.gateway.tier_latency import TierLatency
from trunkline.kit.asgi import left_by_client
from trunkline.metering.outcomes import CLIENT_CLOSED, outcome_of
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stream import UsageEmitter
from trunkline.quota.enforcer import Grant, QuotaEnforcer
from trunkline.quota.estimate import answer_count, answers_per_prompt, estimate_prompt_tokens

__all__ = ["CLIENT_CLOSED", "UsageMeter"]
log = logging.getLogger(__name__)
GATEWAY_TIMEOUT = 504
GATEWAY_STOPPED = 503


class UsageMeter:
    """Builds and emits the one usage record of a request, and settles its quota, exactly once.

    The service fills in ``candidate``, ``flight`` and ``engines`` once an endpoint answered;
    ``tally`` counts what the engine sent.
    """

    def __init__(
        self,
        emitter: UsageEmitter,
        quota: QuotaEnforcer,
        grant: Grant,
        principal: Principal,
        request: ParsedRequest,
        model: str,
        request_id: str,
        *,
        on_finish: Callable[[UsageMeter], None] | None = None,
        latency: TierLatency | None = None,
        latency_since: float | None = None,
    ) -> None:
        self.emitter = emitter
        self.quota = quota
        self.grant = grant
        self.principal = principal
        self.request = request
        self.model = model
        self.request_id = request_id
        self.candidate: Candidate | None = None
        self.attempting: Candidate | None = None
        """The endpoint the request was last sent to, before any answer came."""
        self.flight: Flight | None = None
        self.engines: EngineState | None = None
        self.tally = Tally(answers_per_prompt=answers_per_prompt(request.body))
        self.wall_start = time.time()
        self._done = False
        self._relayed = False
        """A stream's first event went on to the client (the engines before may have failed)."""
        self._on_finish = on_finish
        self._latency = latency
        self._latency_since = latency_since
        """When the client's wait began, if before this attempt (``perf_counter``): a cascade's
        escalation is timed for its tier from the first attempt, as its client waited."""

    @property
    def endpoint_url(self) -> str | None:
        """The endpoint as logged and metered (no password it may hold)."""
        return None if self.candidate is None else self.candidate.endpoint.shown_url

    def attempt(self, candidate: Candidate) -> None:
        self.attempting = candidate

    def client_left(self) -> None:
        """The client hung up (a plain answer comes only when whole)."""
        self._unanswered(CLIENT_CLOSED, "client_closed")

    def cancelled(self, cancellation: asyncio.CancelledError) -> None:
        """The request was cancelled before its answer: its client left, or the gateway
        stopped (its drain time out), which answers the client 503 ``gateway_stopped`` and
        says to retry. That one is the gateway's failure, not a client hanging up: metered
        as 503, an outcome the price book does not bill by default."""
        if left_by_client(cancellation):
            self.client_left()
        else:
            self._unanswered(GATEWAY_STOPPED, "gateway_stopped")

    def timed_out(self) -> None:
        """A plain answer was not whole by the read timeout."""
        self._unanswered(GATEWAY_TIMEOUT, "upstream_timeout")

    def answer_too_large(self) -> None:
        """The engine's answer passed the gateway's cap (``engine_answers.AnswerTooLarge``):
        the endpoint's, logged for the operator to find the engine sending such answers."""
        self.candidate = self.candidate or self.attempting
        log.warning(
            "engine answer past the gateway's cap",
            extra={
                "endpoint": self.endpoint_url,
                "request_id": self.request_id,
                "tenant_id": self.principal.tenant.id,
            },
        )
        self.finish(502, "upstream_error")

    def _unanswered(self, status: int, error_code: str) -> None:
        """Count the request as the endpoint's it was sent to, even if no answer came: that
        engine worked on it (the prompt estimate is recorded, as it never reported usage)."""
        self.candidate = self.candidate or self.attempting
        self.finish(status, error_code)

    def first_byte(self) -> None:
        """The answer starts going to the client (a stream: its first event)."""
        self._relayed = True
        if self.flight is not None and self.engines is not None:
            self.engines.first_byte(self.flight)

    def engine_failed(self, reason: str) -> None:
        if self.candidate is not None and self.engines is not None:
            self.engines.failed(self.candidate.endpoint.id, reason)

    def engine_answered(self) -> None:
        """The engine's stream ended whole: a success for its health."""
        if self.candidate is not None and self.engines is not None:
            self.engines.succeeded(self.candidate.endpoint.id)

    def _prompt_count(self) -> int:
        """Prompts of the request whose usage chunks may come one by one: a completions list's
        (0 when the response's usage came: it counts them all)."""
        if not self.tally.prompts_so_far:
            return 0
        body = self.request.body
        return answer_count(self.request.kind, body) // answers_per_prompt(body)

    def finish(self, status: int, error_code: str | None) -> None:
        if self._done:
            return
        self._done = True
        if self._on_finish is not None:
            self._on_finish(self)
        if self.flight is not None and self.engines is not None:
            self.engines.ended(self.flight)
        tally, pool = self.tally, (self.candidate.pool if self.candidate else None)
        completion = tally.completion_tokens
        if not tally.usage_seen and self.request.stream:
            # The engine died (or the client left) before its usage chunk: count the chunks it
            # did send, less a chat stream's first chunk per answer, which carries the role.
            completion = max(tally.chunks - _role_chunks(self.request), 0)
        # An engine's 4xx (a prompt over its context, a parameter it refuses) did no work: the
        # reservation goes back whole, as for a request that never left the gateway.
        worked = self.candidate is not None and error_code != "upstream_rejected"
        prompt = tally.prompt_tokens
        unreported = not tally.usage_seen or len(tally.prompts_so_far) < self._prompt_count()
        if worked and unreported:
            # The client left or the engine died before reporting usage (with it in every
            # chunk, of some prompts); the prompts were prefilled all the same, so the record
            # carries (at least) the estimate the quota charges a stream without usage.
            estimate = self.grant.prompt_estimate or estimate_prompt_tokens(
                self.request.kind, self.request.body
            )
            prompt = max(prompt, estimate) if tally.usage_seen else estimate
        latency_s = time.perf_counter() - tally.started
        ttft_ms = tally.ttft_ms if self.request.stream else None
        if self._latency is not None and ttft_ms is not None and self._relayed and tally.chunks:
            # Tokens of one answer: ``n`` answers (of each prompt) are generated side by side.
            per_answer = completion // answer_count(self.request.kind, self.request.body)
            whole = per_answer if error_code is None else None
            since = self._latency_since
            lead_s = 0.0 if since is None else max(tally.started - since, 0.0)
            tier = self.principal.tier.name
            self._latency.observe(tier, lead_s + ttft_ms / 1000, lead_s + latency_s, whole)
        self.quota.settle_soon(
            self.grant, prompt, tally.cached_tokens, completion,
            measured=tally.usage_seen, reached_engine=worked, outcome=outcome_of(status),
        )  # fmt: skip
        self.emitter.emit(
            UsageRecord(
                request_id=self.request_id,
                tenant_id=self.principal.tenant.id,
                project_id=self.principal.key.project_id,
                key_id=self.principal.key.key_id,
                alias=self.request.alias,
                model=self.model,
                endpoint_kind=self.request.kind,
                tier=self.principal.tier.name,
                stream=self.request.stream,
                status=status,
                error_code=error_code,
                pool=pool.name if pool else None,
                endpoint=self.endpoint_url,
                region=pool.region if pool else None,
                accelerator=pool.accelerator if pool else None,
                prompt_tokens=prompt,
                cached_tokens=tally.cached_tokens,
                completion_tokens=completion,
                # Only a stream's first byte is its first token: a plain answer's (an
                # embedding, a whole unstreamed generation) is its full latency, which the
                # tier's TTFT SLO does not measure and SLA credits must not be paid on.
                ttft_ms=ttft_ms,
                ttft_slo_ms=self.principal.tier.ttft_slo_ms,
                latency_ms=latency_s * 1000,
                started_at=self.wall_start,
            )
        )


def _role_chunks(request: ParsedRequest) -> int:
    """Chunks of a stream that carry no token: vLLM opens each chat answer (``n`` of them)
    with one naming the assistant's role; a completions stream has none."""
    return answers_per_prompt(request.body) if request.kind == "chat" else 0
