"""SLO admission as the gateway runs it by default: over scraped engine state, answered in
OpenAI's error shape with the headers a client needs."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from tests.unit.gateway.conftest import TENANT_A, Harness, default_world
from tests.unit.gateway.upstreams import chat_any

from trunkline.gateway.service import GatewayService
from trunkline.settings import GatewaySettings
from trunkline.snapshot import TenantEntry, TierEntry

CHAT = {"model": "llama", "messages": [{"role": "user", "content": "hello"}]}
# Every engine full: all sequence slots taken, a queue behind them, the KV cache used up.
FULL = (
    b'vllm:num_requests_running{model_name="m"} 256\n'
    b'vllm:num_requests_waiting{model_name="m"} 40\n'
    b'vllm:kv_cache_usage_perc{model_name="m"} 0.99\n'
)
IDLE = b'vllm:num_requests_running{model_name="m"} 0\n'


def _gateway(make_gateway: Callable[..., Harness], tier: str, page: bytes) -> tuple[Harness, str]:
    world = default_world()
    world.tiers["bronze"] = TierEntry("bronze", 10, 10_000, None, False)
    acme = world.tenants[TENANT_A]
    world.tenants[TENANT_A] = TenantEntry(acme.id, acme.slug, tier, acme.regions, acme.aliases)
    key = world.add_key()
    harness = make_gateway(
        chat_any,
        world,
        settings=GatewaySettings(snapshot_poll_s=0.05),  # admission: "slo", the default
        scrape_transport=httpx.MockTransport(lambda _request: httpx.Response(200, content=page)),
    )
    service: GatewayService = harness.client.app.state.gateway
    harness.client.blocking_portal.call(_until_scraped, service)
    return harness, key


async def _until_scraped(service: GatewayService) -> None:
    """Until every chat endpoint was scraped once (no deadline: the test's timeout is one)."""
    while not all(e in service.engines.loads() for e in ("e1", "e2", "e3")):
        await service.engines.wait_changed(timeout=1.0)
    while any(service.engines.loads()[e].age_s == float("inf") for e in ("e1", "e2", "e3")):
        await service.engines.wait_changed(timeout=1.0)


def _chat(harness: Harness, key: str) -> httpx.Response:
    return harness.client.post(
        "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"}
    )


def test_bronze_on_a_full_fleet_is_shed_at_once_with_a_429_it_can_retry(
    make_gateway: Callable[..., Harness],
) -> None:
    harness, key = _gateway(make_gateway, "bronze", FULL)

    response = _chat(harness, key)

    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("overloaded", "rate_limit_error")
    assert "bronze" in error["message"]
    retry_s = int(response.headers["retry-after"])
    assert retry_s >= 1 and int(response.headers["retry-after-ms"]) == retry_s * 1000
    assert response.headers["x-trunkline-admission"] == "rejected;overloaded"
    # Nothing reached an engine, and the rejection is counted by tier and reason.
    assert [r for r in harness.upstream if r.url.path != "/metrics"] == []
    metrics = harness.client.get("/metrics").text
    counted = 'trunkline_admission_decisions_total{outcome="rejected",reason="overloaded",'
    assert f'{counted}tier="bronze"}} 1.0' in metrics


def test_an_idle_fleet_admits_and_says_so(make_gateway: Callable[..., Harness]) -> None:
    harness, key = _gateway(make_gateway, "bronze", IDLE)

    response = _chat(harness, key)

    assert response.status_code == 200, response.text
    assert response.headers["x-trunkline-admission"].startswith("admitted")
