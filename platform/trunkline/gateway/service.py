"""The request path, transport-free: authenticate → entitle → reserve quota → route → admit →
proxy → settle and meter.

Handlers in ``handlers.py`` turn what this returns into HTTP responses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx
import msgspec

from trunkline.errors import TrunklineError, UpstreamError, UpstreamUnavailable
from trunkline.gateway import cascade
from trunkline.gateway.authn import Principal, authenticate
from trunkline.gateway.endpoints import EngineState, Flight
from trunkline.gateway.pipeline import ParsedRequest, entitle, parse_body, upstream_body
from trunkline.gateway.proxy import (
    Opened,
    Tally,
    error_event,
    open_upstream,
    read_usage,
    relay_events,
)
from trunkline.gateway.routing import (
    Candidate,
    EndpointView,
    RequestView,
    RoutingPolicy,
    eligible,
    endpoint_view,
    make_policy,
)
from trunkline.gateway.routing.text_prompt import TextPrompt
from trunkline.gateway.state import SnapshotHolder
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stream import UsageEmitter
from trunkline.quota.enforcer import Grant, QuotaEnforcer
from trunkline.quota.estimate import estimate_prompt_tokens
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.metrics import QuotaMetrics
from trunkline.settings import QuotaSettings
from trunkline.snapshot import AliasEntry, Snapshot, TierEntry

log = logging.getLogger(__name__)

PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}
CLIENT_CLOSED = 499


class Admitted(Protocol):
    """What admission returns for an admitted request."""

    @property
    def order(self) -> list[int]:
        """Indices into the ranking, in the order to try them."""
        ...

    @property
    def headers(self) -> dict[str, str]: ...


class Admission(Protocol):
    """Admission (step 5): sees the ranked endpoints with their views and loads; returns the
    order to try them in, or raises a coded :class:`TrunklineError` (with Retry-After)."""

    async def admit(
        self, request: RequestView, tier: TierEntry, ranked: Sequence[EndpointView]
    ) -> Admitted: ...


@dataclass(frozen=True, slots=True)
class _AllAdmitted:
    order: list[int]
    headers: dict[str, str]


class AdmitAll:
    """Admission off: every routed request is admitted, endpoints tried in routing order."""

    async def admit(
        self, request: RequestView, tier: TierEntry, ranked: Sequence[EndpointView]
    ) -> Admitted:
        return _AllAdmitted(list(range(len(ranked))), {})


@dataclass(frozen=True, slots=True)
class _Route:
    """A routed and admitted request: what to try, in order, with the views routing saw."""

    view: RequestView
    candidates: list[Candidate]
    endpoints: list[EndpointView]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Reply:
    """A finished JSON reply (``events`` is None) or a stream of SSE bytes."""

    status: int
    body: bytes
    events: AsyncIterator[bytes] | None
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
    ) -> None:
        self.holder = holder
        self.emitter = emitter
        self.client = client
        self.server_secret = server_secret
        self.quota = quota or QuotaEnforcer(InMemoryQuotaStore(), QuotaSettings(), QuotaMetrics())
        self.admission: Admission = admission or AdmitAll()
        self.policy = policy or make_policy("round-robin")
        self.engines = engines or EngineState()

    def authenticate(self, authorization: str | None) -> Principal:
        return authenticate(self.holder.current, authorization, self.server_secret, time.time())

    async def handle(self, kind: str, raw: bytes, principal: Principal, request_id: str) -> Reply:
        """One request; a cascading alias tries its small model first (docs/cascading.md)."""
        snapshot = self.holder.current
        request = parse_body(kind, raw, cache_salt=principal.tenant.cache_salt)
        alias = entitle(snapshot, principal, request)

        async def attempt(sent: ParsedRequest, target: AliasEntry, attempt_id: str) -> Reply:
            # Each attempt reserves and settles its own quota and emits its own usage event.
            grant = await self.quota.reserve(
                snapshot, principal.key, principal.tier.name, target.model, kind, sent.body
            )
            try:
                reply = await self._serve(snapshot, principal, sent, target, attempt_id, grant)
            except TrunklineError as exc:
                exc.extra.setdefault("headers", grant.headers)
                raise
            reply.headers.update(grant.headers)
            return reply

        plan = cascade.plan_cascade(request, alias)
        if plan is None:
            return await attempt(request, alias, request_id)
        first: Reply | None = None
        try:
            first = await attempt(plan.first, plan.first_alias, request_id)
        except (UpstreamError, UpstreamUnavailable):
            verdict = cascade.Verdict("first_failed", b"")
        else:
            if first.status != 200:
                return first  # refused for the request itself: the large model would too
            verdict = cascade.judge(plan, first.body)
        if first is not None and not verdict.escalate:
            headers = {**first.headers, cascade.HEADER: "first"}
            if not request.stream:
                return Reply(200, verdict.body, None, headers)
            events = cascade.replay_events(kind, verdict.body, request.client_wants_usage)
            return Reply(200, b"", events, headers)
        escalated_id = cascade.attempt_request_id(request_id, "escalated")
        reply = await attempt(request, plan.escalated_alias, escalated_id)
        reply.headers[cascade.HEADER] = "escalated"
        reply.headers[cascade.REASON_HEADER] = verdict.reason or ""
        return reply

    async def _route(
        self, snapshot: Snapshot, principal: Principal, request: ParsedRequest,
        alias: AliasEntry, request_id: str, prompt_tokens: int,
    ) -> _Route:  # fmt: skip
        """Route (step 4) over live loads and health, then admit (step 5)."""
        tenant, tier = principal.tenant, principal.tier
        candidates = eligible(snapshot, alias, tenant, tier)
        if not candidates:
            raise UpstreamUnavailable(
                f"No endpoint serves '{alias.alias}' in the regions and tier of your tenant.",
                reason="no_endpoint",
            )
        view = RequestView(
            request_id, tenant.id, tier.name, alias.alias,
            prompt_tokens=prompt_tokens,
            max_tokens=_max_tokens(request.body),
            prompt=TextPrompt(prompt_text(request), cache_salt=tenant.cache_salt),
            cache_salt=tenant.cache_salt,
            regions=tenant.regions,
            may_use_burst=tier.may_use_burst,
            model=alias.model,
        )  # fmt: skip
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
        """One view per candidate with its live load; ejected ones marked unhealthy, unless
        every one is ejected: then all are tried rather than none (fail open)."""
        engines = self.engines
        in_service = [engines.in_service(c.endpoint.id) for c in candidates]
        fail_open = not any(in_service)
        return [
            replace(endpoint_view(c, engines.load(c.endpoint.id)), healthy=ok or fail_open)
            for c, ok in zip(candidates, in_service, strict=True)
        ]

    async def _serve(
        self, snapshot: Snapshot, principal: Principal, request: ParsedRequest,
        alias: AliasEntry, request_id: str, grant: Grant,
    ) -> Reply:  # fmt: skip
        meter = _Meter(self.emitter, self.quota, grant, principal, request, alias.model, request_id)
        prompt_tokens = grant.prompt_estimate or estimate_prompt_tokens(request.kind, request.body)
        try:
            route = await self._route(
                snapshot, principal, request, alias, request_id, prompt_tokens
            )
        except BaseException:
            self.quota.release(grant)  # never sent: nothing to meter, nothing to charge
            raise
        body = msgspec.json.encode(upstream_body(request, alias.model))
        try:
            index, opened, started = await self._open(route, request, body, meter, prompt_tokens)
        except UpstreamUnavailable as exc:
            meter.finish(503, exc.reason)
            raise
        except httpx.HTTPError as exc:  # e.g. a timeout before the first byte
            meter.finish(502, "upstream_error")
            raise UpstreamError(
                "The model endpoint failed before answering.", reason="upstream_error"
            ) from exc
        except BaseException as exc:  # metered (and its quota settled) whatever happened
            if isinstance(exc, asyncio.CancelledError):
                meter.finish(CLIENT_CLOSED, "client_closed")
            else:
                meter.finish(500, "internal_error")
            raise
        candidate, response = opened.candidate, opened.response
        self.policy.routed(route.view, route.endpoints[index])
        meter.candidate, meter.flight, meter.engines = candidate, opened.flight, self.engines
        headers = {**route.headers, "x-trunkline-pool": candidate.pool.name}
        if started is None:
            return await self._finish_plain(response, meter, headers)
        meter.first_byte()
        return Reply(200, b"", self._stream(response, meter, *started), headers)

    async def _open(
        self, route: _Route, request: ParsedRequest, body: bytes, meter: _Meter,
        prompt_tokens: int,
    ) -> tuple[int, Opened, tuple[bytes, AsyncIterator[bytes]] | None]:  # fmt: skip
        """Open the upstream call (index into the route, the call, and for a 200 stream its
        first event and the rest). A stream is held until its first event: an engine that dies
        before sending one has sent the client nothing yet, so the next endpoint is tried."""
        candidates, offset = route.candidates, 0
        while True:
            opened = await open_upstream(
                self.client, candidates[offset:], PATHS[request.kind], body,
                _upstream_headers(meter.request_id),
                engines=self.engines, prompt_tokens=prompt_tokens,
                retry_read_errors=request.stream,
            )  # fmt: skip
            index = offset + opened.index
            if not request.stream or opened.response.status_code != 200:
                return index, opened, None
            events = relay_events(
                opened.response, meter.tally, keep_usage_chunk=request.client_wants_usage
            )
            try:
                first = await anext(events, b"")
            except BaseException as exc:
                self.engines.ended(opened.flight)
                await opened.response.aclose()
                if not isinstance(exc, httpx.HTTPError) or index + 1 >= len(candidates):
                    raise
                self.engines.failed(opened.candidate.endpoint.id, type(exc).__name__)
                log.warning("engine failed before its first event; trying the next one")
                meter.tally = Tally(started=meter.tally.started)
                offset = index + 1
                continue
            return index, opened, (first, events)

    async def _finish_plain(
        self, response: httpx.Response, meter: _Meter, headers: dict[str, str]
    ) -> Reply:
        try:
            payload = await response.aread()
        except httpx.HTTPError as exc:
            meter.engine_failed(type(exc).__name__)
            meter.finish(502, "upstream_error")
            raise UpstreamError(
                "The model endpoint failed while answering.", reason="upstream_error"
            ) from exc
        finally:
            await response.aclose()
        meter.tally.first_byte = time.perf_counter()
        meter.first_byte()
        status = response.status_code
        if status == 200:
            read_usage(payload, meter.tally)
        elif status >= 500 or status == 404:
            # The engine's own 5xx or a model it does not serve is our upstream failure.
            meter.finish(502, "upstream_error")
            raise UpstreamError(
                f"The model endpoint answered HTTP {status}.", reason="upstream_error"
            )
        meter.finish(status, None if status == 200 else "upstream_rejected")
        return Reply(status, payload, None, headers)

    async def _stream(
        self, response: httpx.Response, meter: _Meter, first: bytes, rest: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        status: int = CLIENT_CLOSED
        code: str | None = "client_closed"
        try:
            if first:
                yield first
            async for chunk in rest:
                yield chunk
            status, code = 200, None
        except httpx.HTTPError as exc:
            log.warning("engine failed mid-stream", extra={"endpoint": meter.endpoint_url})
            meter.engine_failed(type(exc).__name__)
            status, code = 502, "upstream_error"
            yield error_event("The model endpoint failed mid-stream.", "upstream_error")
        finally:
            await response.aclose()
            meter.finish(status, code)


def _upstream_headers(request_id: str) -> dict[str, str]:
    return {"content-type": "application/json", "x-request-id": request_id}


def _max_tokens(body: dict[str, Any]) -> int | None:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def prompt_text(request: ParsedRequest) -> str:
    """The prompt's text for prefix affinity: chat messages' contents in order (text parts of
    multi-part contents), or the completions prompt / embeddings input (token ids as digits)."""
    if request.kind == "chat":
        messages = request.body.get("messages") or ()
        return "\n".join(_content_text(m.get("content")) for m in messages if isinstance(m, dict))
    payload = request.body.get("prompt" if request.kind == "completions" else "input")
    return _content_text(payload)


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    if all(isinstance(token, int) for token in content):
        return ",".join(map(str, content))  # one prompt as token ids
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])  # a text part of a multi-part chat message
        elif isinstance(part, list):
            parts.append(",".join(map(str, part)))
    return "\n".join(parts)


class _Meter:
    """Builds and emits the one usage record of a request, and settles its quota, exactly once."""

    def __init__(
        self,
        emitter: UsageEmitter,
        quota: QuotaEnforcer,
        grant: Grant,
        principal: Principal,
        request: ParsedRequest,
        model: str,
        request_id: str,
    ) -> None:
        self.emitter = emitter
        self.quota = quota
        self.grant = grant
        self.principal = principal
        self.request = request
        self.model = model
        self.request_id = request_id
        self.candidate: Candidate | None = None
        self.flight: Flight | None = None
        self.engines: EngineState | None = None
        self.tally = Tally()
        self.wall_start = time.time()
        self._done = False

    @property
    def endpoint_url(self) -> str | None:
        return None if self.candidate is None else self.candidate.endpoint.url

    def first_byte(self) -> None:
        if self.flight is not None and self.engines is not None:
            self.engines.first_byte(self.flight)

    def engine_failed(self, reason: str) -> None:
        if self.candidate is not None and self.engines is not None:
            self.engines.failed(self.candidate.endpoint.id, reason)

    def finish(self, status: int, error_code: str | None) -> None:
        if self._done:
            return
        self._done = True
        if self.flight is not None and self.engines is not None:
            self.engines.ended(self.flight)
        tally, pool = self.tally, (self.candidate.pool if self.candidate else None)
        completion = tally.completion_tokens
        if not tally.usage_seen and self.request.stream:
            # The engine died before its usage chunk: count the chunks it did send.
            completion = max(tally.chunks - 1, 0)
        self.quota.settle_soon(
            self.grant, tally.prompt_tokens, tally.cached_tokens, completion,
            measured=tally.usage_seen, reached_engine=self.candidate is not None,
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
                prompt_tokens=tally.prompt_tokens,
                cached_tokens=tally.cached_tokens,
                completion_tokens=completion,
                ttft_ms=tally.ttft_ms,
                latency_ms=(time.perf_counter() - tally.started) * 1000,
                started_at=self.wall_start,
            )
        )
