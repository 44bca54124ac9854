"""Composition root of the gateway process."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from litestar import Litestar
from prometheus_client import CollectorRegistry

from trunkline.apps.serving import GATEWAY
from trunkline.errors import ConfigurationError
from trunkline.gateway.admission import (
    Admission,
    AdmissionMetrics,
    AdmissionPolicy,
    AsyncAdmission,
)
from trunkline.gateway.admission.routing_cache import routing_prefix_cache
from trunkline.gateway.connection_pool import engine_transport
from trunkline.gateway.endpoints import (
    EndpointCollector,
    EngineMonitor,
    EngineState,
    KvEventCollector,
)
from trunkline.gateway.handlers import build_app
from trunkline.gateway.health_metrics import GatewayHealthCollector
from trunkline.gateway.prompt_tokens import PromptTokens, PromptTokensCollector, load_tokenizers
from trunkline.gateway.routing import (
    RoutingPolicy,
    UnknownPolicyError,
    approximate_index,
    kv_event_index,
    make_policy,
)
from trunkline.gateway.routing.vllm_hashes import VllmHashing
from trunkline.gateway.service import GatewayService
from trunkline.gateway.state import SnapshotHolder
from trunkline.gateway.tier_latency import TierLatency
from trunkline.gateway.worker_metrics import shared_metrics
from trunkline.kit.header_timeout import HeaderTimeoutCollector
from trunkline.kit.scrape_access import ScrapeAccess
from trunkline.kit.shutdown_delay import ShutdownDelay
from trunkline.metering.stream import UsageEmitter
from trunkline.quota.enforcer import QuotaEnforcer
from trunkline.quota.fallback import FallbackQuotaStore
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.metrics import QuotaMetrics
from trunkline.quota.store import QuotaStore
from trunkline.quota.windows import Clock, system_clock
from trunkline.settings import GatewaySettings, QuotaSettings
from trunkline.snapshot import SnapshotSource

log = logging.getLogger(__name__)


def create_gateway_app(
    *,
    source: SnapshotSource,
    emitter: UsageEmitter,
    server_secret: bytes,
    settings: GatewaySettings,
    transport: httpx.AsyncBaseTransport | None = None,
    quota_store: QuotaStore | None = None,
    clock: Clock = system_clock,
    scrape_transport: httpx.AsyncBaseTransport | None = None,
    admission: Callable[[EngineState], Admission] | None = None,
    workers_metrics_dir: Path | None = None,
    previous_secrets: tuple[bytes, ...] = (),
    shutdown_delay: ShutdownDelay | None = None,
) -> Litestar:
    """Build the gateway app; ``transport`` lets tests substitute the upstream (made with
    :func:`upstream_limits` if it is real HTTP: a given transport keeps its own limits).

        Engines' ``/metrics`` are scraped over real HTTP, or over ``scrape_transport``; a test that
        substitutes ``transport`` alone has no engines to scrape, so nothing is scraped then (health
        comes from its requests). ``admission`` builds SLO admission control over the gateway's
    engine state (its ``loads()`` and ``wait_changed()``), e.g.
    ``lambda engines: AsyncAdmission(AdmissionPolicy(), engines)``; ``None`` follows
    ``settings.admission`` (``slo``: the default policy; ``off``: every request is admitted).

        ``quota_store``: where quotas are counted. A remote one (Redis) is wrapped so the gateway
        keeps limiting per process while it is away; ``None`` counts in this process's memory
        (tests, benchmarks). ``clock`` (epoch ms) times quota windows.

        ``workers_metrics_dir``: where the worker processes of one gateway share their metrics,
        so ``/metrics`` shows them all (``trunkline gateway --workers N``); None: this process's.

        ``previous_secrets``: server secrets a key's hash may still be under while the operator
        rotates ``server_secret`` (``TRUNKLINE_SECURITY__PREVIOUS_KEY_HASH_SECRETS``).

        ``shutdown_delay``: on SIGTERM, ``/health`` says it is draining while the server serves
        on for its delay (``trunkline gateway``); None: SIGTERM is the server's alone.
    """
    registry = CollectorRegistry()
    quota = quota_enforcer(quota_store, settings.quota, QuotaMetrics(registry), clock)
    holder = SnapshotHolder(source, settings.snapshot_poll_s)
    client = httpx.AsyncClient(
        transport=transport or engine_transport(upstream_limits(settings)),
        timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
    )  # given a transport, httpx mounts none from HTTP(S)_PROXY: engines are reached directly
    policy = routing_policy(settings.routing_policy)
    scrape = transport is None or scrape_transport is not None
    monitor = EngineMonitor(
        lambda: holder.current,
        settings.engines,
        client=scrape_client(settings, scrape_transport or transport) if scrape else None,
        kv_sink=kv_event_index(policy),
    )
    if (approximate := approximate_index(policy)) is not None:  # KV events tell the precise one
        monitor.state.on_restart = monitor.state.on_removed = approximate.forget
    registry.register(EndpointCollector(monitor.state, monitor.block_sizes))
    registry.register(KvEventCollector(lambda: monitor.kv_subscriber))
    registry.register(GatewayHealthCollector(holder, emitter))
    registry.register(HeaderTimeoutCollector(GATEWAY))  # counted by the server it runs in
    if admission is None and settings.admission == "slo":
        metrics = AdmissionMetrics(registry)

        def admission(engines: EngineState) -> Admission:
            cache = routing_prefix_cache(policy)
            return AsyncAdmission(AdmissionPolicy(prefix_index=cache), engines, metrics=metrics)

    tokens = prompt_tokens(settings, policy)
    if tokens is not None:
        registry.register(PromptTokensCollector(tokens))
    shared = None if workers_metrics_dir is None else shared_metrics(registry, workers_metrics_dir)
    service = GatewayService(
        holder, emitter, client, server_secret,
        quota=quota, policy=policy, engines=monitor.state,
        stream_idle_timeout_s=settings.stream_idle_timeout_s,
        ejected_stream_idle_s=settings.ejected_stream_idle_s,
        admission=admission(monitor.state) if admission else None,
        prompt_tokens=tokens,
        max_held_usage_events=settings.max_held_usage_events,
        previous_secrets=previous_secrets,
        latency=TierLatency(registry),
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        await holder.start()
        await emitter.start()
        await quota.start()
        await monitor.start()
        if shared is not None:
            await shared.start()
        if shutdown_delay is not None:
            shutdown_delay.install()
        try:
            yield
        finally:
            if shutdown_delay is not None:
                shutdown_delay.uninstall()
            if cut := service.meter_the_unfinished():
                log.warning("stopped with %d requests unfinished; metered as cut", cut)
            if shared is not None:
                # Its last counts stay in the gateway's totals: written before the closes (a
                # closed KV subscriber reports no endpoint; the totals would go back).
                await shared.close()
            await monitor.close()
            await holder.close()
            await quota.close()
            await emitter.close()
            await client.aclose()
            if tokens is not None:
                tokens.close()

    return build_app(
        service,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        lifespan=[lifespan],
        metrics=registry,
        shared_metrics=shared,
        engines=monitor,
        shutdown_delay=shutdown_delay,
        cors_origins=settings.cors_origins,
        scrape_access=ScrapeAccess(
            settings.metrics_token, settings.host, "TRUNKLINE_GATEWAY__METRICS_TOKEN"
        ),
    )


def routing_policy(name: str) -> RoutingPolicy:
    """This process's policy. Its picker draws its own seed: worker processes and gateway
    replicas seeded alike would break every tie alike, each sending its k-th tied request to
    the same endpoint as all the others."""
    try:
        return make_policy(name, seed=secrets.randbits(64))
    except UnknownPolicyError as exc:
        raise ConfigurationError(
            f"TRUNKLINE_GATEWAY__ROUTING_POLICY (gateway.routing_policy): {exc}",
            param="routing_policy",
        ) from None


def prompt_tokens(settings: GatewaySettings, policy: RoutingPolicy) -> PromptTokens | None:
    """Token views of prompts from the configured tokenizers: a policy matching the engines'
    KV-cache events needs them; the approximate index and admission then work on exact blocks
    and prompt lengths too. None without tokenizers (prompt text is hashed instead)."""
    if not settings.tokenizers and kv_event_index(policy) is None:
        return None
    if not settings.tokenizers:
        # The events name blocks by token-id hashes: without a model's tokenizer the gateway
        # cannot match a prompt to them (docs/routing.md).
        log.warning(
            "routing policy %r matches prompts to the engines' KV-cache events, which needs "
            "each model's tokenizer, and TRUNKLINE_GATEWAY__TOKENIZERS names none: requests "
            "are routed by load alone; set it, or use prefix-aware",
            settings.routing_policy,
        )
    hashing = VllmHashing(settings.kv_hash.algo, settings.kv_hash.seed)
    return PromptTokens(load_tokenizers(settings.tokenizers), hashing)


def scrape_client(
    settings: GatewaySettings, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    """The engines' ``/metrics`` get their own small connection pool: a scrape never waits
    behind requests for a connection, nor requests behind scrapes."""
    engines = settings.engines
    return httpx.AsyncClient(
        transport=transport or engine_transport(scrape_limits(settings)),
        timeout=httpx.Timeout(engines.scrape_timeout_s, connect=settings.connect_timeout_s),
    )


def upstream_limits(settings: GatewaySettings) -> httpx.Limits:
    """The pool of connections to the engines. httpx applies a client's limits to the transport
    it makes, not to one it is given: a transport passed to :func:`create_gateway_app` (a test
    watching requests) must be made with these."""
    return httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_connections,
        keepalive_expiry=settings.upstream_keep_alive_s,
    )


def scrape_limits(settings: GatewaySettings) -> httpx.Limits:
    """The pool of the engines' ``/metrics`` scrapes (see :func:`upstream_limits`)."""
    concurrency = settings.engines.scrape_concurrency
    return httpx.Limits(
        max_connections=concurrency,
        max_keepalive_connections=concurrency,
        keepalive_expiry=settings.upstream_keep_alive_s,
    )


def quota_enforcer(
    shared: QuotaStore | None, settings: QuotaSettings, metrics: QuotaMetrics, clock: Clock
) -> QuotaEnforcer:
    store: QuotaStore = shared or InMemoryQuotaStore()
    if shared is not None and not isinstance(shared, InMemoryQuotaStore):
        store = FallbackQuotaStore(
            shared,
            metrics,
            fail_open=settings.on_store_failure == "open",
            local_share=settings.local_share,
            probe_every_ms=int(settings.probe_every_s * 1000),
        )
    return QuotaEnforcer(store, settings, metrics, clock)
