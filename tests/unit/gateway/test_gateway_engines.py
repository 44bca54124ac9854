"""The gateway with engine state: retry before the first byte, outlier ejection, the loads and
views admission sees, and a pluggable admission object."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from tests.unit.gateway.conftest import SECRET, TENANT_B, Harness, World, default_world
from tests.unit.gateway.upstreams import Chunks, chat_any, sse_events

from trunkline.apps.gateway import create_gateway_app
from trunkline.errors import ConfigurationError, RateLimited
from trunkline.gateway.admission.adapter import AsyncAdmission
from trunkline.gateway.admission.policy import AdmissionPolicy
from trunkline.gateway.endpoints import EngineState
from trunkline.gateway.routing import ApproxPrefixIndex, EndpointView, RequestView
from trunkline.gateway.routing.pipeline import PipelinePolicy
from trunkline.gateway.routing.prefix_scorer import PrefixAffinityScorer
from trunkline.gateway.service import GatewayService
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.settings import EngineStateSettings, GatewaySettings
from trunkline.snapshot import TenantEntry, TierEntry

CHAT = {"model": "llama", "messages": [{"role": "user", "content": "hello"}]}
STREAM = {**CHAT, "stream": True}
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


@pytest.fixture
def make_gateway(make_gateway: Callable[..., Harness]) -> Callable[..., Gateway]:
    """The conftest's gateway with engine-state settings, a key, and an admission to record
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


def _503(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, text="overloaded")


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


def _silent(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("no response head", request=request)


@pytest.mark.parametrize("failure", [_503, _refused], ids=["5xx", "refused"])
def test_a_failing_endpoint_is_retried_elsewhere_then_ejected(
    make_gateway: Callable[..., Gateway], failure: Handler
) -> None:
    gw = make_gateway(failing_on("engine-1", failure))

    statuses = [gw.chat().status_code for _ in range(12)]

    assert statuses == [200] * 12  # no client saw the failures
    hosts = gw.hosts()
    assert hosts.count("engine-1") == 3  # three consecutive failures, then never again
    assert hosts[-6:].count("engine-1") == 0
    assert gw.service.engines.ejections("e1") == 1
    endpoints = {record.endpoint for _id, record in gw.usage.read(100)}
    assert endpoints == {"http://engine-2", "http://engine-3"}
    # Operators see it on the gateway's own /metrics.
    metrics = gw.client.get("/metrics").text
    assert 'trunkline_endpoint_ejections_total{endpoint="e1"} 1.0' in metrics
    assert 'trunkline_endpoint_failures_total{endpoint="e1",kind="request"} 3.0' in metrics
    assert 'trunkline_endpoint_in_service{endpoint="e1"} 0.0' in metrics


def test_every_endpoint_ejected_still_tries_them_all(make_gateway: Callable[..., Gateway]) -> None:
    broken = True

    def handler(request: httpx.Request) -> httpx.Response:
        return _refused(request) if broken else chat_any(request)

    gw = make_gateway(handler)
    for _ in range(3):
        assert gw.chat().status_code == 503
    assert not any(gw.service.engines.in_service(e) for e in ("e1", "e2", "e3"))
    broken = False
    assert gw.chat().status_code == 200  # fail open: ejected endpoints are still tried


def test_stream_read_timeout_before_the_head_is_retried_a_plain_one_is_not(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway(failing_on("engine-1", _silent))

    streamed = [gw.chat(STREAM).status_code for _ in range(3)]
    assert streamed == [200, 200, 200]

    gw = make_gateway(failing_on("engine-1", _silent))
    plain = [gw.chat() for _ in range(9)]
    # Round-robin sends every third request to engine-1: each may still be generating there,
    # so it is not sent twice; the client gets a 504 that tells the OpenAI SDKs not to retry.
    assert sorted(r.status_code for r in plain) == [200] * 6 + [504] * 3
    timed_out = next(r for r in plain if r.status_code == 504)
    assert timed_out.json()["error"]["code"] == "upstream_timeout"
    assert timed_out.headers["x-should-retry"] == "false"
    # A long answer is no fault of the engine's: three in a row do not eject it...
    assert gw.hosts().count("engine-1") == 3
    assert gw.service.engines.ejections("e1") == 0
    # ...and each is metered on it, with the prompt it prefilled.
    records = [r for _id, r in gw.usage.read(20) if r.status == 504]
    assert {r.endpoint for r in records} == {"http://engine-1"}
    assert all(r.prompt_tokens > 0 for r in records)


def _dies_before_the_first_event(request: httpx.Request) -> httpx.Response:
    events = sse_events("llama-8b-served", True)
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Chunks(events, fail_after=0)
    )


def test_a_stream_dying_before_its_first_event_moves_to_another_endpoint(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway(failing_on("engine-1", _dies_before_the_first_event))

    bodies = [gw.chat(STREAM).text for _ in range(3)]

    assert all('"error"' not in body and body.endswith("data: [DONE]\n\n") for body in bodies)
    assert gw.hosts().count("engine-1") == 1  # round-robin sent one there; it was retried
    records = [record for _id, record in gw.usage.read(10)]
    assert [r.status for r in records] == [200, 200, 200]
    assert all(r.endpoint != "http://engine-1" for r in records)


def _dies_mid_stream(request: httpx.Request) -> httpx.Response:
    events = sse_events("llama-8b-served", True)
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Chunks(events, fail_after=2)
    )


def test_streams_dying_midway_eject_their_endpoint(make_gateway: Callable[..., Gateway]) -> None:
    # Each stream's 200 head came before it died: the head is no success to reset the count.
    gw = make_gateway(failing_on("engine-1", _dies_mid_stream))

    bodies = [gw.chat(STREAM).text for _ in range(12)]

    assert sum('"upstream_error"' in body for body in bodies) == 3
    assert gw.hosts().count("engine-1") == 3  # three in a row, then never again
    assert gw.service.engines.ejections("e1") == 1


class _StallsMidStream(httpx.AsyncByteStream):
    """Sends its first two events, then nothing, ever: a vLLM stopping on SIGTERM."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in sse_events("llama-8b-served", True)[:2]:
            yield piece
        await asyncio.Event().wait()


def _stalls_mid_stream(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_StallsMidStream()
    )


def test_a_stream_silent_mid_way_is_given_up_after_the_idle_timeout(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway(failing_on("engine-1", _stalls_mid_stream), stream_idle_timeout_s=0.05)

    bodies = [gw.chat(STREAM).text for _ in range(6)]

    stalled = [body for body in bodies if "sent nothing for 0.05 s mid-stream" in body]
    assert len(stalled) == 2  # round-robin: every third request went to engine-1
    assert all('"upstream_error"' in body and "data: [DONE]" in body for body in stalled)
    assert all('"content"' in body for body in stalled)  # what came before still came
    # A pause is no proof of a dead engine (vLLM pauses the streams it preempts when short
    # of KV cache): not held against the endpoint; a stopped engine fails its scrapes.
    assert gw.service.engines.ejections("e1") == 0
    failed = [r for _id, r in gw.usage.read(100) if r.endpoint == "http://engine-1"]
    assert [(r.status, r.error_code) for r in failed] == [(502, "upstream_error")] * 2


class _StopsBeforeTheFirstEvent(httpx.AsyncByteStream):
    """Its engine stops (a vLLM on SIGTERM: the connection stays open, silent) and, meanwhile,
    the gateway ejects its endpoint (its scrapes fail)."""

    def __init__(self, eject: Callable[[], None]) -> None:
        self.eject = eject

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.eject()
        await asyncio.Event().wait()
        yield b""  # pragma: no cover - never reached


def test_a_stream_waiting_for_its_first_event_moves_on_when_its_endpoint_is_ejected(
    make_gateway: Callable[..., Gateway],
) -> None:
    engines: list[EngineState] = []

    def eject() -> None:
        for _ in range(3):
            engines[0].failed("e1", "scrape: ConnectError")

    def stops(request: httpx.Request) -> httpx.Response:
        stream = _StopsBeforeTheFirstEvent(eject)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    gw = make_gateway(failing_on("engine-1", stops))
    engines.append(gw.service.engines)

    response = gw.chat(STREAM)

    # The client never waited on the stopped engine: the next endpoint answered, whole.
    assert response.status_code == 200
    assert '"content"' in response.text and "error" not in response.text
    assert gw.hosts() == ["engine-1", "engine-2"]
    assert gw.service.engines.ejections("e1") == 1
    [record] = [record for _id, record in gw.usage.read(10)]
    assert (record.status, record.endpoint) == (200, "http://engine-2")


def test_a_stream_failing_before_its_first_event_on_the_last_endpoint_counts_too(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway(_dies_before_the_first_event)

    # Round-robin puts each endpoint last once: three failures each, counting the last one's.
    statuses = [gw.chat(STREAM).status_code for _ in range(3)]

    assert statuses == [502] * 3
    assert len(gw.hosts()) == 9
    assert [gw.service.engines.ejections(e) for e in ("e1", "e2", "e3")] == [1, 1, 1]


class _SilentAfterHead(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        raise httpx.ReadTimeout("no first event")
        yield b""  # pragma: no cover - makes this an async generator


def _silent_after_the_head(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_SilentAfterHead()
    )


def test_a_stream_silent_before_its_first_event_everywhere_is_a_retryable_502(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway(_silent_after_the_head)

    response = gw.chat(STREAM)

    # Not the plain request's 504 ("may still be generating; lower max_tokens or stream", do
    # not retry): a stream that sent no token has nothing running twice if retried.
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert "x-should-retry" not in response.headers
    [record] = [record for _id, record in gw.usage.read(10)]
    assert (record.status, record.error_code) == (502, "upstream_error")


def test_5xx_on_the_last_endpoint_is_a_502(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(_503)
    response = gw.chat()
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert len(gw.hosts()) == 3  # every endpoint was tried once


@pytest.mark.parametrize(("status", "expected"), [(429, 429), (503, 502)])
def test_the_engines_retry_after_reaches_the_client(
    make_gateway: Callable[..., Gateway], status: int, expected: int
) -> None:
    gw = make_gateway(lambda request: httpx.Response(status, headers={"retry-after": "9"}))
    response = gw.chat()
    assert response.status_code == expected
    assert response.headers["retry-after"] == "9"


def test_admission_sees_ranked_views_with_loads_and_picks_the_order(
    make_gateway: Callable[..., Gateway],
) -> None:
    world = default_world()
    tenant = world.tenants[TENANT_B]
    world.tenants[TENANT_B] = TenantEntry(
        tenant.id, tenant.slug, tenant.tier, tenant.regions, tenant.aliases, cache_salt="salt-b"
    )
    admission = RecordingAdmission()
    gw = make_gateway(
        chat_any,
        world=world,
        tenant=TENANT_B,
        admission=admission,
        scrape=lambda request: httpx.Response(200, content=METRICS),
    )
    service = gw.service
    gw.client.blocking_portal.call(_wait_for_scrapes, service, ("e1", "e2"))

    response = gw.chat({**CHAT, "max_tokens": 7, "messages": [{"role": "user", "content": "x"}]})

    assert response.status_code == 200
    assert response.headers["x-trunkline-admission"] == "ok"
    [(request, tier, ranked)] = admission.seen
    assert (request.cache_salt, request.regions, request.max_tokens) == ("salt-b", ("eu-west",), 7)
    assert request.prompt is not None and request.prompt.num_tokens >= 1
    assert request.prompt_tokens > 0 and tier.name == "gold"
    assert sorted(v.key for v in ranked) == ["e1", "e2"]  # residency: eu-west only
    assert all((v.load.running, v.load.waiting, v.load.kv_usage) == (3, 2, 0.25) for v in ranked)
    # Admission put the last-ranked endpoint first: that is where the request went.
    [record] = [r for _id, r in gw.usage.read(10)]
    assert record.endpoint == f"http://engine-{ranked[-1].key[1:]}"


async def _wait_for_scrapes(service: GatewayService, endpoints: tuple[str, ...]) -> None:
    """Until every one of ``endpoints`` was scraped (no deadline: the test's timeout is one)."""

    def scraped() -> bool:
        loads = service.engines.loads()
        return all(e in loads and loads[e].running > 0 for e in endpoints)

    while not scraped():
        await service.engines.wait_changed(timeout=1.0)


def test_a_rejecting_admission_sends_nothing_upstream(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway(chat_any, admission=RecordingAdmission(reject=True))
    response = gw.chat()
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert gw.hosts() == []


def test_prompt_text_follows_the_messages_in_order(make_gateway: Callable[..., Gateway]) -> None:
    admission = RecordingAdmission()
    gw = make_gateway(chat_any, admission=admission)
    messages = [
        {"role": "system", "content": "policy " * 40},
        {"role": "user", "content": [{"type": "text", "text": "question"}]},
    ]
    gw.chat({**CHAT, "messages": messages})
    prompt = admission.seen[0][0].prompt
    assert prompt is not None
    assert getattr(prompt, "text", None) == "policy " * 40 + "\nquestion"
    assert json.dumps(CHAT)  # the body itself is passed on unchanged (tested elsewhere)


def test_the_slo_admission_object_plugs_in_over_engine_state() -> None:
    world = default_world()
    key = world.add_key()
    world.publish()
    app = create_gateway_app(
        source=world.store,
        emitter=InMemoryUsageStream(),
        server_secret=SECRET,
        settings=GatewaySettings(snapshot_poll_s=0.05),
        transport=httpx.MockTransport(chat_any),
        admission=lambda engines: AsyncAdmission(AdmissionPolicy(), engines),
    )
    with TestClient(app) as client:
        gw = Gateway(client, key, [], InMemoryUsageStream())
        response = gw.chat()
    assert response.status_code == 200, response.text
    assert "x-trunkline-admission" in response.headers


def test_an_unknown_routing_policy_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match=r"TRUNKLINE_GATEWAY__ROUTING_POLICY.*nope"):
        create_gateway_app(
            source=default_world().store,
            emitter=InMemoryUsageStream(),
            server_secret=SECRET,
            settings=GatewaySettings(routing_policy="nope"),
        )


def test_a_prefix_is_known_to_routing_while_its_request_is_still_unanswered(
    make_gateway: Callable[..., Gateway],
) -> None:
    # A non-streamed answer comes only after the whole generation: the same preamble sent by
    # another client meanwhile must already find where the first one went.
    known_in_flight: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        known_in_flight.append(len(_approx_index(gw.service)))
        return chat_any(request)

    gw = make_gateway(handler, policy="prefix-aware")
    preamble = {"role": "system", "content": "You answer for a telecom operator. " * 20}
    response = gw.chat({**CHAT, "messages": [preamble, {"role": "user", "content": "hi"}]})

    assert response.status_code == 200
    assert known_in_flight and known_in_flight[0] > 0


def _approx_index(service: GatewayService) -> ApproxPrefixIndex:
    assert isinstance(service.policy, PipelinePolicy)
    [index] = [
        s.scorer.index
        for s in service.policy.scorers
        if isinstance(s.scorer, PrefixAffinityScorer)
        and isinstance(s.scorer.index, ApproxPrefixIndex)
    ]
    return index


def test_a_request_whose_preamble_is_cached_there_queues_only_its_new_tokens(
    make_gateway: Callable[..., Gateway],
) -> None:
    # Admission predicts from the prefill queued on each endpoint: a request whose preamble the
    # endpoint already holds adds only what it does not, or a replica serving one hot preamble
    # would look seconds behind and the top tier would be moved off it.
    queued: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        load = gw.service.engines.load("e" + request.url.host.removeprefix("engine-"))
        assert load is not None
        queued.append(load.queued_prompt_tokens)  # this request is in flight: counted
        return chat_any(request)

    gw = make_gateway(handler, policy="prefix-aware")
    preamble = {"role": "system", "content": "You answer for a telecom operator. " * 40}
    for question in ("hi", "and what does roaming cost in Spain?"):
        body = {**CHAT, "messages": [preamble, {"role": "user", "content": question}]}
        assert gw.chat(body).status_code == 200

    first, second = queued
    assert len(set(gw.hosts())) == 1  # the second went where the preamble was
    assert first > 200  # nothing cached yet: the whole prompt
    assert 0 < second < first / 5, queued
