"""The HTTP load driver, against simulated engines served in-process (no real vLLM here)."""

from __future__ import annotations

import httpx
from tests.unit.engines.helpers import small_h100

from trunkline.engines import create_sim_app
from trunkline.fleet.replay import Load, build_requests, measured_summary
from trunkline.gateway.routing import make_policy
from trunkline.workloads.driver import HttpEndpoint, inter_token_totals, replay_http


class Router(httpx.AsyncBaseTransport):
    """Sends ``http://<host>/…`` to the simulated engine named by the host."""

    def __init__(self, apps: dict[str, httpx.ASGITransport]) -> None:
        self.apps = apps

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.apps[request.url.host].handle_async_request(request)


async def test_requests_go_where_the_policy_says_with_exact_token_counts() -> None:
    apps = {
        name: create_sim_app(model="tiny", profile=small_h100(max_model_len=2048), time_scale=0)
        for name in ("a", "b")
    }
    transport = Router({name: httpx.ASGITransport(app=app) for name, app in apps.items()})
    endpoints = [HttpEndpoint(name, f"http://{name}", "tiny") for name in apps]
    requests = build_requests(Load("shared", 50.0, 6, 80, 64, 5), seed=1)
    async with httpx.AsyncClient(transport=transport) as client:
        measured = await replay_http(requests, endpoints, make_policy("round-robin"), client=client)
        totals = [await inter_token_totals(client, endpoint) for endpoint in endpoints]
    for app in apps.values():
        await app.aclose()

    assert [m.endpoint for m in measured] == ["a", "b"] * 3
    assert all(m.error is None and m.completion_tokens == 5 for m in measured)
    assert [m.cached_tokens for m in measured] == [0, 0, 64, 64, 64, 64]  # shared 64-token prefix
    sent = [m.sent for m in measured]
    assert sent == sorted(sent)
    assert measured_summary(measured)["throughput_tok_s"] > 0
    assert [count for _, count in totals] == [12, 12]  # 3 requests x 4 gaps between 5 tokens
    assert all(total > 0 for total, _ in totals)
