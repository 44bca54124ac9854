"""The request path, transport-free: authenticate → entitle → reserve quota → route → admit →
proxy → settle and meter.

Handlers in ``handlers.py`` turn what this returns into HTTP responses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import msgspec

from trunkline.errors import TrunklineError, UpstreamError, UpstreamUnavailable
from trunkline.gateway.authn import Principal, authenticate
from trunkline.gateway.pipeline import ParsedRequest, entitle, parse_body, upstream_body
from trunkline.gateway.proxy import Tally, error_event, open_upstream, read_usage, relay_events
from trunkline.gateway.routing import Candidate, RequestView, Router, eligible, make_policy
from trunkline.gateway.state import SnapshotHolder
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stream import UsageEmitter
from trunkline.quota.enforcer import Grant, QuotaEnforcer
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.metrics import QuotaMetrics
from trunkline.settings import QuotaSettings
from trunkline.snapshot import AliasEntry, Snapshot

log = logging.getLogger(__name__)

PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}
CLIENT_CLOSED = 499

Admit = Callable[[RequestView, list[Candidate]], Awaitable[list[Candidate]]]
"""Admission (step 5): given the routed candidates, the ones to try, or a coded refusal."""


async def admit_all(_view: RequestView, candidates: list[Candidate]) -> list[Candidate]:
    """Until SLO admission control lands, every routed request is admitted."""
    return candidates


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
        admit: Admit = admit_all,
    ) -> None:
        self.holder = holder
        self.emitter = emitter
        self.client = client
        self.server_secret = server_secret
        self.quota = quota or QuotaEnforcer(InMemoryQuotaStore(), QuotaSettings(), QuotaMetrics())
        self.admit = admit
        self.router = Router(make_policy("round-robin"))

    def authenticate(self, authorization: str | None) -> Principal:
        return authenticate(self.holder.current, authorization, self.server_secret, time.time())

    async def handle(self, kind: str, raw: bytes, principal: Principal, request_id: str) -> Reply:
        snapshot = self.holder.current
        request = parse_body(kind, raw)
        alias = entitle(snapshot, principal, request)
        grant = await self.quota.reserve(
            snapshot, principal.key, principal.tier.name, alias.model, kind, request.body
        )
        try:
            reply = await self._serve(snapshot, principal, request, alias, request_id, grant)
        except TrunklineError as exc:
            exc.extra.setdefault("headers", grant.headers)
            raise
        reply.headers.update(grant.headers)
        return reply

    async def _candidates(
        self, snapshot: Snapshot, principal: Principal, alias: AliasEntry, request_id: str
    ) -> list[Candidate]:
        view = RequestView(request_id, principal.tenant.id, principal.tier.name, alias.alias)
        candidates = self.router.order(
            view, eligible(snapshot, alias, principal.tenant, principal.tier)
        )
        if not candidates:
            raise UpstreamUnavailable(
                f"No endpoint serves '{alias.alias}' in the regions and tier of your tenant.",
                reason="no_endpoint",
            )
        return await self.admit(view, candidates)

    async def _serve(
        self, snapshot: Snapshot, principal: Principal, request: ParsedRequest,
        alias: AliasEntry, request_id: str, grant: Grant,
    ) -> Reply:  # fmt: skip
        meter = _Meter(self.emitter, self.quota, grant, principal, request, alias.model, request_id)
        try:
            candidates = await self._candidates(snapshot, principal, alias, request_id)
        except BaseException:
            self.quota.release(grant)  # never sent: nothing to meter, nothing to charge
            raise
        body = msgspec.json.encode(upstream_body(request, alias.model))
        try:
            candidate, response = await open_upstream(
                self.client, candidates, PATHS[request.kind], body, _upstream_headers(request_id)
            )
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
        meter.candidate = candidate
        headers = {"x-trunkline-pool": candidate.pool.name}
        if not request.stream or response.status_code != 200:
            return await self._finish_plain(response, meter, headers)
        return Reply(200, b"", self._stream(response, meter, request), headers)

    async def _finish_plain(
        self, response: httpx.Response, meter: _Meter, headers: dict[str, str]
    ) -> Reply:
        try:
            payload = await response.aread()
        except httpx.HTTPError as exc:
            meter.finish(502, "upstream_error")
            raise UpstreamError(
                "The model endpoint failed while answering.", reason="upstream_error"
            ) from exc
        finally:
            await response.aclose()
        meter.tally.first_byte = time.perf_counter()
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
        self, response: httpx.Response, meter: _Meter, request: ParsedRequest
    ) -> AsyncIterator[bytes]:
        status: int = CLIENT_CLOSED
        code: str | None = "client_closed"
        try:
            async for chunk in relay_events(
                response, meter.tally, keep_usage_chunk=request.client_wants_usage
            ):
                yield chunk
            status, code = 200, None
        except httpx.HTTPError:
            log.warning("engine failed mid-stream", extra={"endpoint": meter.endpoint_url})
            status, code = 502, "upstream_error"
            yield error_event("The model endpoint failed mid-stream.", "upstream_error")
        finally:
            await response.aclose()
            meter.finish(status, code)


def _upstream_headers(request_id: str) -> dict[str, str]:
    return {"content-type": "application/json", "x-request-id": request_id}


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
        self.tally = Tally()
        self.wall_start = time.time()
        self._done = False

    @property
    def endpoint_url(self) -> str | None:
        return None if self.candidate is None else self.candidate.endpoint.url

    def finish(self, status: int, error_code: str | None) -> None:
        if self._done:
            return
        self._done = True
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
