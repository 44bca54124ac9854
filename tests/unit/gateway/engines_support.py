"""The gateway over scripted engines with engine state: the builder behind the conftest's
``engine_gateway`` fixture, and its handlers, recording admission and pool-refusing
admission."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from litestar.testing import TestClient
from tests.unit.gateway.conftest import Harness, World, default_world
from tests.unit.gateway.upstreams import chat_any

from trunkline.errors import RateLimited
from trunkline.gateway.admission import protocol
from trunkline.gateway.admission.decision import SLO_UNATTAINABLE, Decision
from trunkline.gateway.admission.errors import rejection_error
from trunkline.gateway.routing import ApproxPrefixIndex, EndpointView, RequestView
from trunkline.gateway.routing.pipeline import PipelinePolicy
from trunkline.gateway.routing.prefix_scorer import PrefixAffinityScorer
from trunkline.gateway.service import GatewayService
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.settings import EngineStateSettings, GatewaySettings
from trunkline.snapshot import TierEntry

CHAT = {"model": "llama", "messages": [{"role": "user", "content": "hello"}]}
STREAM = {**CHAT, "stream": True}
UNHURRIED_S = 60.0
"""A tokenizer thread's queue wait for tests not about it: on a loaded machine the thread may
start later than the gateway's 50 ms, and the prompt then goes untokenized."""
# Ejections long enough that no test outlives one (no half-open probe sneaks in).
NO_PROBES = EngineStateSettings(ejection_base_s=600.0, ejection_max_s=600.0)
METRICS = (
    b'vllm:num_requests_running{model_name="m"} 3\n'
    b'vllm:num_requests_waiting{model_name="m"} 2\n'
    b'vllm:kv_cache_usage_perc{model_name="m"} 0.25\n'
)

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class Admitted:
    order: list[int]
    headers: dict[str, str]


@dataclass
class RecordingAdmission:
    """Admits in reverse ranking order and remembers what it saw."""

    seen: list[tuple[RequestView, TierEntry, list[EndpointView]]] = field(default_factory=list)
    reject: bool = False

    async def admit(
        self, request: RequestView, tier: TierEntry, ranked: Sequence[EndpointView]
    ) -> Admitted:
        self.seen.append((request, tier, list(ranked)))
        if self.reject:
            raise RateLimited("shed", reason="overloaded", extra={"headers": {"retry-after": "7"}})
        return Admitted(list(reversed(range(len(ranked)))), {"x-trunkline-admission": "ok"})


class PoolsRefused:
    """SLO admission refusing (with ``reason``) whatever would run on ``pools``: as when those
    pools cannot start a request within the tier's TTFT target."""

    def __init__(self, *pools: str, reason: str = SLO_UNATTAINABLE) -> None:
        self.pools, self.reason = pools, reason

    async def admit(
        self, request: RequestView, tier: TierEntry, ranked: Sequence[EndpointView]
    ) -> protocol.Admitted:
        if ranked[0].pool in self.pools:
            raise rejection_error(Decision.reject(self.reason, 2.0), tier)
        return await protocol.AdmitAll().admit(request, tier, ranked)


@dataclass
class Gateway:
    client: TestClient  # type: ignore[type-arg]
    key: str
    upstream: list[httpx.Request]
    usage: InMemoryUsageStream

    def chat(self, body: dict[str, Any] = CHAT) -> httpx.Response:
        return self.client.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {self.key}"}
        )

    def hosts(self) -> list[str]:
        return [r.url.host for r in self.upstream if r.url.path != "/metrics"]

    @property
    def service(self) -> GatewayService:
        service: GatewayService = self.client.app.state.gateway
        return service


def engine_gateways(make_gateway: Callable[..., Harness]) -> Callable[..., Gateway]:
    """The ``engine_gateway`` fixture: the conftest's gateway with engine-state settings, a key,
    and an admission to record
    (SLO admission is off unless a test passes one: these tests pin routing and retries, and
    admission may move gold to a faster endpoint than the policy's first)."""

    def build(
        handler: Handler,
        *,
        world: World | None = None,
        tenant: str | None = None,
        admission: RecordingAdmission | None = None,
        engines: EngineStateSettings = NO_PROBES,
        policy: str = "round-robin",
        scrape: Handler | None = None,
        stream_idle_timeout_s: float = 30.0,
        ejected_stream_idle_s: float = 5.0,
        cors_origins: Sequence[str] = (),
    ) -> Gateway:
        world = world or default_world()
        key = world.add_key(tenant) if tenant else world.add_key()
        harness = make_gateway(
            handler,
            world,
            settings=GatewaySettings(
                snapshot_poll_s=0.05,
                routing_policy=policy,
                engines=engines,
                admission="off",
                stream_idle_timeout_s=stream_idle_timeout_s,
                ejected_stream_idle_s=ejected_stream_idle_s,
                cors_origins=list(cors_origins),
            ),
            scrape_transport=httpx.MockTransport(scrape) if scrape else None,
            admission=(lambda _engines: admission) if admission else None,
        )
        return Gateway(harness.client, key, harness.upstream, harness.usage)

    return build


def failing_on(host: str, failure: Callable[[httpx.Request], httpx.Response]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return failure(request) if request.url.host == host else chat_any(request)

    return handler


def approx_index(service: GatewayService) -> ApproxPrefixIndex:
    """The approximate prefix index of ``service``'s routing policy (its prefix scorer's)."""
    assert isinstance(service.policy, PipelinePolicy)
    [index] = [
        s.scorer.index
        for s in service.policy.scorers
        if isinstance(s.scorer, PrefixAffinityScorer)
        and isinstance(s.scorer.index, ApproxPrefixIndex)
    ]
    return index


async def wait_for_scrapes(service: GatewayService, endpoints: tuple[str, ...]) -> None:
    """Until every one of ``endpoints`` was scraped (no deadline: the test's timeout is one)."""

    def scraped() -> bool:
        loads = service.engines.loads()
        return all(e in loads and loads[e].running > 0 for e in endpoints)

    while not scraped():
        await service.engines.wait_changed(timeout=1.0)
