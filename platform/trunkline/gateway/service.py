"""The request path, transport-free: authenticate → entitle → reserve quota → route → admit →
proxy → settle and meter.

Handlers in ``handlers.py`` turn what this returns into HTTP responses. The pieces live next
door: ``request_view.py`` (what routing sees of a request), ``admission/protocol.py`` (what it
asks of admission), ``meter.py`` (the usage record and quota settlement of an attempt),
``plain_answer.py`` and ``stream_relay.py`` (a plain answer finished, a stream relayed),
``cascade/run.py`` (a cascading alias's attempts) and ``reply.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

import httpx
import msgspec

from trunkline.errors import (
    TrunklineError,
    Unauthenticated,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from trunkline.gateway import cascade
from trunkline.gateway.admission.predictor import uncached_tokens
from trunkline.gateway.admission.protocol import Admission, AdmitAll
from trunkline.gateway.admission.routing_cache import routing_prefix_cache
from trunkline.gateway.authn import Principal, authenticate, current_principal, secret_differs
from trunkline.gateway.cascade import plan_cascade
from trunkline.gateway.cascade.run import run_cascade
from trunkline.gateway.endpoints import EngineState
from trunkline.gateway.engine_answers import (
    AnswerTooLarge,
    NotAStream,
    Tally,
    is_event_stream,
    relay_events,
)
from trunkline.gateway.meter import CLIENT_CLOSED, UsageMeter
from trunkline.gateway.pipeline import (
    ParsedRequest,
    check_context,
    entitle,
    parse_body,
    upstream_body,
)
from trunkline.gateway.plain_answer import finish_plain
from trunkline.gateway.prompt_tokens import PromptTokens
from trunkline.gateway.reply import Reply
from trunkline.gateway.request_view import request_view
from trunkline.gateway.routing import (
    Candidate,
    EndpointView,
    RequestView,
    RoutingPolicy,
    eligible,
    endpoint_view,
    make_policy,
)
from trunkline.gateway.routing.token_prompt import TokenPrompt
from trunkline.gateway.state import SnapshotHolder
from trunkline.gateway.stream_relay import relay_stream
from trunkline.gateway.tier_latency import TierLatency
from trunkline.gateway.upstream import EndpointEjected, Opened, open_upstream, unless_ejected
from trunkline.metering.stream import UsageEmitter
from trunkline.quota.enforcer import Grant, QuotaEnforcer
from trunkline.quota.estimate import estimate_prompt_tokens
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.metrics import QuotaMetrics
from trunkline.settings import QuotaSettings
from trunkline.snapshot import AliasEntry, Snapshot

__all__ = ["GatewayService", "Reply"]

log = logging.getLogger(__name__)

PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}


@dataclass(frozen=True, slots=True)
class _Route:
    """A routed and admitted request: what to try, in order, with the views routing saw."""

    view: RequestView
    candidates: list[Candidate]
    endpoints: list[EndpointView]
    headers: dict[str, str]


class GatewayService:
    def __init__(
        self,
        holder: SnapshotHolder,
        emitter: UsageEmitter,
        client: httpx.AsyncClient,
        server_secret: bytes,
        *,
        quota: QuotaEnforcer | None = None,
        admission: Admission | None = None,
        policy: RoutingPolicy | None = None,
        engines: EngineState | None = None,
        stream_idle_timeout_s: float = 30.0,
        ejected_stream_idle_s: float = 5.0,
        prompt_tokens: PromptTokens | None = None,
        max_held_usage_events: int | None = None,
        previous_secrets: tuple[bytes, ...] = (),
        latency: TierLatency | None = None,
    ) -> None:
        self.holder = holder
        self.emitter = emitter
        self.client = client
        self.server_secret = server_secret
        self.previous_secrets = previous_secrets
        """Server secrets still accepted while an operator rotates it (docs/gateway.md)."""
        self._secret_checked = 0
        """The configuration version whose cache salts were last checked against the secret."""
        self.quota = quota or QuotaEnforcer(InMemoryQuotaStore(), QuotaSettings(), QuotaMetrics())
        self.admission: Admission = admission or AdmitAll()
        self.policy = policy or make_policy("round-robin")
        self.engines = engines or EngineState()
        self.stream_idle_timeout_s = stream_idle_timeout_s
        self.ejected_stream_idle_s = ejected_stream_idle_s
        self._prefix_cache = routing_prefix_cache(self.policy)
        self.prompt_tokens = prompt_tokens
        """Token views of prompts, for a policy matching them to the engines' KV events."""
        self.max_held_usage_events = max_held_usage_events
        """Usage events this process may hold in memory, waiting for the usage stream, before
        it refuses requests it could not meter (None: no limit)."""
        self._unfinished: set[UsageMeter] = set()
        """Meters of the requests sent upstream and not metered yet."""
        self.latency = latency
        """Where each streamed answer's TTFT and TPOT are counted by tier (None: nowhere)."""

    def _check_usage_room(self) -> None:
        """Refuse a request whose usage this process could not keep: the usage stream (Redis)
        has been away so long that the events held in memory reached the limit. Served, it
        would grow memory until the process died and lost every event it held."""
        limit, held = self.max_held_usage_events, self.emitter.held
        if limit is not None and held >= limit:
            raise Unavailable(
                f"The gateway cannot record usage right now ({held:,} usage events wait for "
                "the usage stream); retry shortly.",
                reason="usage_unavailable",
            )

    def meter_the_unfinished(self) -> int:
        """Meter every request not metered yet, as cut by the gateway stopping: its drain time
        ran out (``drain_timeout_s``) and its task was cancelled, but a stream's generator may
        not run its own ``finally`` before the usage emitter closes. Returns how many."""
        unfinished = list(self._unfinished)
        for meter in unfinished:
            meter.finish(CLIENT_CLOSED, "gateway_stopped")
        return len(unfinished)

    def authenticate(self, authorization: str | None) -> Principal:
        snapshot = self.holder.current
        if snapshot.version == 0:
            # No configuration yet (starting, or the store lost it): every key would read as
            # unknown, and a 401 tells clients their key is bad; this is ours, and passes.
            raise Unavailable(
                "The gateway has not loaded its configuration yet; retry shortly.",
                reason="gateway_starting",
            )
        try:
            return authenticate(
                snapshot, authorization, self.server_secret, time.time(), self.previous_secrets
            )
        except Unauthenticated:
            self._check_secret(snapshot)
            raise

    def _check_secret(self, snapshot: Snapshot) -> None:
        """Say, once a configuration, when it was built under another server secret than this
        process's: every key is refused, and a client sees only 'Incorrect API key'."""
        if snapshot.version == self._secret_checked:
            return
        self._secret_checked = snapshot.version
        if secret_differs(snapshot, (self.server_secret, *self.previous_secrets)):
            log.error(
                "every API key is refused: the configuration (version %d) was published under "
                "another TRUNKLINE_SECURITY__KEY_HASH_SECRET than this gateway's; give it the "
                "control plane's (docs/controlplane.md#rotating-the-server-secret)",
                snapshot.version,
            )

    async def handle(
        self, kind: str, raw: bytes, principal: Principal, request_id: str,
        deployment: str | None = None,
    ) -> Reply:  # fmt: skip
        """One request (``deployment``: the model an Azure OpenAI path names); a cascading
        alias tries its small model first (docs/cascading.md)."""
        snapshot = self.holder.current
        principal = current_principal(snapshot, principal, time.time())
        salt = principal.tenant.cache_salt
        request = parse_body(kind, raw, cache_salt=salt, deployment=deployment)
        alias = entitle(snapshot, principal, request)
        if alias.alias != request.alias:  # called by its served name: metered under the alias
            request = replace(request, alias=alias.alias)
        self._check_usage_room()
        since: float | None = None  # a cascade's: its first attempt began, the client's wait

        async def attempt(sent: ParsedRequest, target: AliasEntry, attempt_id: str) -> Reply:
            # Each attempt reserves and settles its own quota and emits its own usage event.
            check_context(sent, target)
            prompt = await self._token_view(target, sent, principal)
            grant = await self.quota.reserve(
                snapshot, principal.key, principal.tier.name, target.model, kind, sent.body,
                prompt_tokens=None if prompt is None else prompt.num_tokens,
                context_length=target.context_length,
            )  # fmt: skip
            try:
                reply = await self._serve(
                    snapshot, principal, sent, target, attempt_id, grant, prompt, since
                )
            except TrunklineError as exc:
                exc.extra["headers"] = {**grant.headers, **exc.extra.get("headers", {})}
                raise
            # An answer other than 200 is the engine's refusal (its 4xx): it did no work, and
            # the reservation came back whole, as the headers say.
            ok = reply.status == 200
            reply.headers.update(grant.headers if ok else grant.given_back_headers())
            return reply

        plan = plan_cascade(request, alias)
        if plan is None:
            return await attempt(request, alias, request_id)
        alone = cascade.placed_alone(snapshot, plan, principal)
        if alone is not None:  # placement leaves this caller one model of the cascade
            reply = await attempt(request, alone[0], request_id)
            reply.headers[cascade.HEADER], reply.headers[cascade.REASON_HEADER] = alone[1:]
            return reply
        since = time.perf_counter()
        reply = await run_cascade(plan, request, request_id, attempt)
        kept = reply.headers.get(cascade.HEADER) == "first"
        if request.stream and kept and self.latency is not None:
            # The small answer, judged whole, replayed now: its first token is the client's
            # (its tokens come at once, with no time between them to count).
            waited_s = time.perf_counter() - since
            self.latency.observe(principal.tier.name, waited_s, waited_s, None)
        return reply

    async def _token_view(
        self, alias: AliasEntry, request: ParsedRequest, principal: Principal
    ) -> TokenPrompt | None:
        """The prompt as the model's token ids, when the gateway has its tokenizer: for exact
        quota reservations and for matching the engines' KV-cache events."""
        tokens = self.prompt_tokens
        if tokens is None:
            return None
        return await tokens.view(alias.model, request, principal.tenant.cache_salt)

    async def _route(
        self, snapshot: Snapshot, principal: Principal, request: ParsedRequest,
        alias: AliasEntry, request_id: str, prompt_tokens: int, prompt: TokenPrompt | None,
    ) -> _Route:  # fmt: skip
        """Route (step 4) over live loads and health, then admit (step 5)."""
        tenant, tier = principal.tenant, principal.tier
        candidates = eligible(snapshot, alias, tenant, tier)
        if not candidates:
            raise UpstreamUnavailable(
                f"The pools of '{alias.alias}' open to your tenant have no endpoint right now.",
                reason="no_endpoint",
            )
        view = request_view(request_id, principal, alias, request, prompt_tokens, prompt)
        views = self._endpoint_views(candidates)
        # A policy may ignore health (round-robin): ejected endpoints are dropped here too.
        ranked = [i for i in self.policy.rank(view, views) if views[i].healthy]
        if not ranked:
            raise UpstreamUnavailable(
                f"No endpoint can serve '{alias.alias}' for your tenant right now.",
                reason="no_endpoint",
            )
        ranked_views = [views[i] for i in ranked]
        admitted = await self.admission.admit(view, tier, ranked_views)
        order = [ranked[i] for i in admitted.order]
        return _Route(
            view, [candidates[i] for i in order], [views[i] for i in order], dict(admitted.headers)
        )

    def _endpoint_views(self, candidates: list[Candidate]) -> list[EndpointView]:
        """One view per candidate with its live load; ejected ones (and those a scrape is about
        to probe) marked unhealthy, unless every one is: then all are tried rather than none
        (fail open)."""
        engines = self.engines
        in_service = [engines.routable(c.endpoint.id) for c in candidates]
        fail_open = not any(in_service)
        return [
            endpoint_view(c, engines.load(c.endpoint.id), healthy=ok or fail_open)
            for c, ok in zip(candidates, in_service, strict=True)
        ]

    async def _serve(
        self, snapshot: Snapshot, principal: Principal, request: ParsedRequest,
        alias: AliasEntry, request_id: str, grant: Grant, prompt: TokenPrompt | None,
        since: float | None = None,
    ) -> Reply:  # fmt: skip
        """One upstream attempt; ``since``: when the client's wait began, if before it (a
        cascade's escalation: when its first attempt began), for the tier's latencies."""
        meter = UsageMeter(
            self.emitter, self.quota, grant, principal, request, alias.model, request_id,
            on_finish=self._unfinished.discard, latency=self.latency, latency_since=since,
        )  # fmt: skip
        prompt_tokens = grant.prompt_estimate or estimate_prompt_tokens(
            request.kind, request.body, context_length=alias.context_length
        )
        try:
            route = await self._route(
                snapshot, principal, request, alias, request_id, prompt_tokens, prompt
            )
        except BaseException as exc:
            self.quota.release(grant)  # never sent: nothing to meter, nothing to charge
            _given_back(exc, grant)
            raise
        self._unfinished.add(meter)  # from here on it is metered however it ends
        body = msgspec.json.encode(upstream_body(request, alias.model))
        prefill = self._prefill_estimates(route)  # before routed() teaches the index
        # Learned at dispatch, not when the answer comes: a non-streamed answer arrives only
        # after the whole generation, and the same prefix sent meanwhile must find it.
        self.policy.routed(route.view, route.endpoints[0])
        try:
            index, opened, started = await self._open(route, request, body, meter, prefill)
        except UpstreamUnavailable as exc:
            meter.finish(503, exc.reason)  # no engine took it: its reservation comes back
            _given_back(exc, grant)
            raise
        except AnswerTooLarge:  # a plain 200 answer (read whole), a stream's first event
            meter.answer_too_large()
            raise
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.TimeoutException) and not request.stream:
                # A plain answer not whole by the read timeout. (A stream silent before its
                # first event is a stuck engine: nothing was generated, a retry is safe.)
                meter.timed_out()
                raise UpstreamTimeout(
                    "The model endpoint did not answer within the gateway's read timeout "
                    f"({self.client.timeout.read} s). The request was not sent again, since the "
                    "engine may have been still generating; lower max_tokens or stream.",
                    reason="upstream_timeout",
                    extra={"headers": {"x-should-retry": "false"}},
                ) from exc
            meter.finish(502, "upstream_error")
            raise UpstreamError(
                "The model endpoint failed before answering.", reason="upstream_error"
            ) from exc
        except BaseException as exc:  # metered (and its quota settled) whatever happened
            if isinstance(exc, asyncio.CancelledError):
                meter.cancelled(exc)
            else:
                meter.finish(500, "internal_error")
            raise
        candidate, response = opened.candidate, opened.response
        if index:  # failed over: the prefix is cached where it was finally served
            self.policy.routed(route.view, route.endpoints[index])
        meter.candidate, meter.flight, meter.engines = candidate, opened.flight, self.engines
        headers = {**route.headers, "x-trunkline-pool": candidate.pool.name}
        if started is None:
            return await finish_plain(response, meter, headers, opened.failure)
        meter.first_byte()
        events = relay_stream(
            response, meter, *started, holder=self.holder, idle_s=self.stream_idle_timeout_s,
            ejected_idle_s=self.ejected_stream_idle_s,
        )  # fmt: skip
        return Reply(200, b"", events, headers)

    def _prefill_estimates(self, route: _Route) -> list[int]:
        """Per endpoint of the route, the prompt tokens it will likely prefill: the prompt less
        what the routing prefix index says the endpoint caches. The engine state counts them
        as work queued there until the first token, and admission predicts from that queue: a
        queue of prompts whose preambles are cached is short."""
        return [uncached_tokens(route.view, e, self._prefix_cache) for e in route.endpoints]

    async def _open(
        self, route: _Route, request: ParsedRequest, body: bytes, meter: UsageMeter,
        prefill: Sequence[int],
    ) -> tuple[int, Opened, tuple[bytes, AsyncIterator[bytes]] | None]:  # fmt: skip
        """Open the upstream call (index into the route, the call, and for a 200 stream its
        first event and the rest). A stream is held until its first event: an engine that dies
        before sending one has sent the client nothing yet, so the next endpoint is tried."""
        candidates, offset = route.candidates, 0
        while True:
            opened = await open_upstream(
                self.client, candidates[offset:], PATHS[request.kind], body,
                _upstream_headers(meter.request_id),
                engines=self.engines, prefill_tokens=prefill[offset:], attempting=meter.attempt,
                retry_read_errors=request.stream, streamed=request.stream,
            )  # fmt: skip
            index = offset + opened.index
            if not request.stream or opened.response.status_code != 200:
                return index, opened, None
            self.engines.head(opened.flight)
            events = relay_events(
                opened.response, meter.tally, keep_usage_chunk=request.client_wants_usage
            )
            try:
                if not is_event_stream(opened.response):
                    raise NotAStream(
                        "a 200 without an event stream", request=opened.response.request
                    )
                first = await unless_ejected(opened.flight, anext(events, b""))
            except BaseException as exc:
                self.engines.ended(opened.flight)
                await opened.response.aclose()
                if not isinstance(exc, httpx.HTTPError):
                    raise
                if not isinstance(exc, EndpointEjected):  # its ejection was failure enough
                    self.engines.failed(opened.candidate.endpoint.id, type(exc).__name__)
                if index + 1 >= len(candidates):
                    raise
                log.warning("engine failed before its first event; trying the next one")
                meter.tally = Tally(
                    started=meter.tally.started,
                    answers_per_prompt=meter.tally.answers_per_prompt,
                )
                offset = index + 1
                continue
            return index, opened, (first, events)


def _upstream_headers(request_id: str) -> dict[str, str]:
    # Identity: a stream's bytes are relayed as they come, so a compressing proxy in front of
    # the engines (honouring httpx's default ``gzip, deflate``) sent the client gzip unsaid.
    return {
        "content-type": "application/json",
        "x-request-id": request_id,
        "accept-encoding": "identity",
    }


def _given_back(exc: BaseException, grant: Grant) -> None:
    """Answer ``exc`` with the rate-limit headers of a reservation given back whole."""
    if isinstance(exc, TrunklineError):
        exc.extra["headers"] = {**grant.given_back_headers(), **exc.extra.get("headers", {})}
