"""The gateway with engine state: the loads and views admission and routing see, a pluggable
admission object, and routing's prefix index (retries and ejection: test_gateway_failover)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import TestClient
from tests.unit.gateway.conftest import SECRET, TENANT_B, default_world
from tests.unit.gateway.engines_support import (
    CHAT,
    METRICS,
    UNHURRIED_S,
    Gateway,
    RecordingAdmission,
    approx_index,
    wait_for_scrapes,
)
from tests.unit.gateway.upstreams import chat_any

from trunkline.apps.gateway import create_gateway_app, prompt_tokens, routing_policy
from trunkline.engines.events import BlockStored
from trunkline.errors import ConfigurationError
from trunkline.gateway.admission.adapter import AsyncAdmission
from trunkline.gateway.admission.policy import AdmissionPolicy
from trunkline.gateway.prompt_tokens import PromptTokens
from trunkline.gateway.routing import EndpointView, RequestView, kv_event_index
from trunkline.gateway.routing.prefix_index import apply_kv_events
from trunkline.gateway.routing.text_prompt import TextPrompt
from trunkline.gateway.routing.token_prompt import TokenPrompt
from trunkline.gateway.routing.vllm_hashes import VllmHashing
from trunkline.gateway.service import GatewayService
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.settings import GatewaySettings
from trunkline.snapshot import TenantEntry


def test_admission_sees_ranked_views_with_loads_and_picks_the_order(
    engine_gateway: Callable[..., Gateway],
) -> None:
    world = default_world()
    tenant = world.tenants[TENANT_B]
    world.tenants[TENANT_B] = TenantEntry(
        tenant.id, tenant.slug, tenant.tier, tenant.regions, tenant.aliases, cache_salt="salt-b"
    )
    admission = RecordingAdmission()
    gw = engine_gateway(
        chat_any,
        world=world,
        tenant=TENANT_B,
        admission=admission,
        scrape=lambda request: httpx.Response(200, content=METRICS),
    )
    service = gw.service
    gw.client.blocking_portal.call(wait_for_scrapes, service, ("e1", "e2"))

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


def test_a_rejecting_admission_sends_nothing_upstream(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(chat_any, admission=RecordingAdmission(reject=True))
    response = gw.chat()
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert gw.hosts() == []


def test_prompt_text_follows_the_messages_in_order(engine_gateway: Callable[..., Gateway]) -> None:
    admission = RecordingAdmission()
    gw = engine_gateway(chat_any, admission=admission)
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


@pytest.mark.parametrize("name", ["prefix-aware", "cost-aware"])
def test_gateway_processes_break_ties_each_their_own_way(name: str) -> None:
    """Each worker process (``--workers``) and gateway replica makes its own policy. With the
    profile's one seed they all drew the same tie-breaks: the first request of every process
    over idle, equal endpoints went to the same one, and so did every k-th request after."""
    request = RequestView("r1", "tenant-a", "gold", "llama", prompt_tokens=10)
    idle = [EndpointView(f"e{i}", "pool", "eu-west", "h100", 16) for i in range(4)]
    processes = [routing_policy(name) for _ in range(16)]

    firsts = {policy.rank(request, idle)[0] for policy in processes}

    assert len(firsts) > 1  # all 16 alike by chance: one in 4**15


def test_a_kv_event_policy_without_tokenizers_is_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="trunkline.apps.gateway"):
        assert prompt_tokens(GatewaySettings(), routing_policy("prefix-aware")) is None
        assert caplog.records == []
        precise = GatewaySettings(routing_policy="precise-prefix")
        assert prompt_tokens(precise, routing_policy("precise-prefix")) is not None
    [record] = caplog.records
    assert "routed by load alone" in record.getMessage()
    assert "TRUNKLINE_GATEWAY__TOKENIZERS" in record.getMessage()


def test_a_tokenizer_directory_without_a_tokenizer_is_refused_at_start(tmp_path: Path) -> None:
    settings = GatewaySettings(
        routing_policy="precise-prefix", tokenizers={"llama-8b-served": str(tmp_path)}
    )
    with pytest.raises(ConfigurationError, match="TOKENIZERS: no tokenizer for 'llama-8b-served'"):
        prompt_tokens(settings, routing_policy("precise-prefix"))


class _WordTokenizer:
    """A stand-in for the model's tokenizer: one token per word of the last message."""

    def prompt_ids(self, kind: str, body: Mapping[str, Any]) -> list[int] | None:
        text = body["messages"][-1]["content"]
        return [sum(map(ord, word)) for word in text.split()] if isinstance(text, str) else None


def test_precise_prefix_routes_to_the_endpoint_whose_kv_events_hold_the_prompt(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(chat_any, policy="precise-prefix")
    hashing = VllmHashing()
    gw.service.prompt_tokens = PromptTokens(
        {"llama-8b-served": _WordTokenizer()}, hashing, max_queue_wait_s=UNHURRIED_S
    )
    index = kv_event_index(gw.service.policy)
    assert index is not None
    preamble = " ".join(f"word{n}" for n in range(64))  # four 16-token blocks
    blocks = hashing.block_hashes(_WordTokenizer().prompt_ids("chat", _ask(preamble)) or [], 16)
    apply_kv_events(index, "e2", [BlockStored(tuple(blocks), None, (), 16)])

    for n in range(3):
        assert gw.chat(_ask(f"{preamble} question {n}")).status_code == 200

    # Every request went to the one engine holding the preamble's blocks.
    assert gw.hosts() == ["engine-2"] * 3


def test_with_a_tokenizer_every_policy_sees_the_prompts_exact_tokens(
    engine_gateway: Callable[..., Gateway],
) -> None:
    admission = RecordingAdmission()
    gw = engine_gateway(chat_any, policy="prefix-aware", admission=admission)
    gw.service.prompt_tokens = PromptTokens(
        {"llama-8b-served": _WordTokenizer()}, VllmHashing(), max_queue_wait_s=UNHURRIED_S
    )

    assert gw.chat(_ask("one two three four five")).status_code == 200
    assert gw.chat({"model": "llama", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "parts"}]}]}).status_code == 200  # fmt: skip

    (first, _, _), (second, _, _) = admission.seen
    # Routing and admission count the tokens the engine will see, not an estimate...
    assert isinstance(first.prompt, TokenPrompt) and first.num_prompt_tokens == 5
    # ...and what the tokenizer cannot take is hashed as text, as without one.
    assert isinstance(second.prompt, TextPrompt)


def _ask(content: str) -> dict[str, Any]:
    return {"model": "llama", "messages": [{"role": "user", "content": content}]}


def test_a_prefix_is_known_to_routing_while_its_request_is_still_unanswered(
    engine_gateway: Callable[..., Gateway],
) -> None:
    # A non-streamed answer comes only after the whole generation: the same preamble sent by
    # another client meanwhile must already find where the first one went.
    known_in_flight: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        known_in_flight.append(len(approx_index(gw.service)))
        return chat_any(request)

    gw = engine_gateway(handler, policy="prefix-aware")
    preamble = {"role": "system", "content": "You answer for a telecom operator. " * 20}
    response = gw.chat({**CHAT, "messages": [preamble, {"role": "user", "content": "hi"}]})

    assert response.status_code == 200
    assert known_in_flight and known_in_flight[0] > 0


def test_a_request_whose_preamble_is_cached_there_queues_only_its_new_tokens(
    engine_gateway: Callable[..., Gateway],
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

    gw = engine_gateway(handler, policy="prefix-aware")
    preamble = {"role": "system", "content": "You answer for a telecom operator. " * 40}
    for question in ("hi", "and what does roaming cost in Spain?"):
        body = {**CHAT, "messages": [preamble, {"role": "user", "content": question}]}
        assert gw.chat(body).status_code == 200

    first, second = queued
    assert len(set(gw.hosts())) == 1  # the second went where the preamble was
    assert first > 200  # nothing cached yet: the whole prompt
    assert 0 < second < first / 5, queued


def test_an_engine_of_another_block_size_shows_in_health_metrics_and_the_log(
    engine_gateway: Callable[..., Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    """The pools say block_size 16; engine-1 runs with 32: prefix routing matches none of its
    cache. The operator reads which endpoint, which pool, both sizes and what to set; setting
    the pool's block_size is seen when the configuration changes."""

    def scrape(request: httpx.Request) -> httpx.Response:
        size = 32 if request.url.host == "engine-1" else 16
        config = f'vllm:cache_config_info{{block_size="{size}",num_gpu_blocks="100"}} 1\n'
        return httpx.Response(200, content=METRICS + config.encode())

    world = default_world()
    with caplog.at_level(logging.INFO, logger="trunkline.gateway.endpoints.block_sizes"):
        gw = engine_gateway(chat_any, world=world, scrape=scrape)
        service = gw.service
        gw.client.blocking_portal.call(wait_for_scrapes, service, ("e1", "e2", "e3", "e4"))
        health = gw.client.get("/health").json()
        exposition = gw.client.get("/metrics").text
        [warning] = _block_size_lines(caplog)  # e2, e3, e4 agree: no word

        # The operator sets h100-eu's block_size to 32: e1 agrees, e2 (16) no longer does.
        pool = world.pools["h100-eu"]
        world.pools["h100-eu"] = msgspec.structs.replace(pool, block_size=32)
        world.publish()
        gw.client.blocking_portal.call(_wait_for_log, service, caplog, 3)
        after = gw.client.get("/health").json()

    assert health["engines"]["block_size_mismatches"] == [
        {"endpoint": "e1", "pool": "h100-eu", "engine_block_size": 32, "pool_block_size": 16}
    ]
    assert health["status"] == "ok"  # routing still serves it, blind to its cache
    assert 'trunkline_endpoint_block_size_mismatch{endpoint="e1",pool="h100-eu"} 1.0' in (
        exposition
    )
    assert 'trunkline_endpoint_block_size_mismatch{endpoint="e2",pool="h100-eu"} 0.0' in (
        exposition
    )
    assert "endpoint e1 of pool h100-eu" in warning and "block_size to 32" in warning
    lines = sorted(_block_size_lines(caplog)[1:])
    assert "endpoint e1 of pool h100-eu: KV block sizes now agree" in lines[0]
    assert "endpoint e2 of pool h100-eu: its engine's KV block size is 16" in lines[1]
    assert after["engines"]["block_size_mismatches"] == [
        {"endpoint": "e2", "pool": "h100-eu", "engine_block_size": 16, "pool_block_size": 32}
    ]


async def _wait_for_log(
    service: GatewayService, caplog: pytest.LogCaptureFixture, lines: int
) -> None:
    """Until ``lines`` records were logged (checked at each scrape; no deadline: the test's
    timeout is one)."""
    while len(_block_size_lines(caplog)) < lines:
        await service.engines.wait_changed(timeout=1.0)


def _block_size_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the block-size check logged (the others log too where the root logger says INFO)."""
    checks = "trunkline.gateway.endpoints.block_sizes"
    return [r.getMessage() for r in caplog.records if r.name == checks]


def test_engines_serving_no_metrics_keep_serving_and_show_in_health(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """Engines whose servers answer /metrics 404 (not vLLM's, or a proxy passing only /v1 on):
    their scrapes failed, they were ejected, and every probe failed again, so routing only
    reached them failing open. Now they are routed with their load unknown, and /health and
    /metrics say why."""
    scrapes: dict[str, int] = {}

    def scrape(request: httpx.Request) -> httpx.Response:
        scrapes[request.url.host] = scrapes.get(request.url.host, 0) + 1
        return httpx.Response(404, json={"detail": "Not Found"})

    gw = engine_gateway(chat_any, scrape=scrape)
    service = gw.service

    async def scraped_often() -> None:  # EJECT_AFTER_FAILURES (3) times, each endpoint
        while len(scrapes) < 4 or min(scrapes.values()) < 3:
            await service.engines.wait_changed(timeout=0.1)

    gw.client.blocking_portal.call(scraped_often)
    response = gw.chat()
    engines = gw.client.get("/health").json()["engines"]
    exposition = gw.client.get("/metrics").text

    assert response.status_code == 200
    assert engines["ejected"] == []
    assert engines["without_metrics"] == [
        {"endpoint": e, "reason": "HTTP 404"} for e in ("e1", "e2", "e3", "e4")
    ]
    assert 'trunkline_endpoint_metrics_age_seconds{endpoint="e1"} +Inf' in exposition
    assert 'trunkline_endpoint_failures_total{endpoint="e1",kind="scrape"} 0.0' in exposition
