"""The control plane's ``/metrics`` and its request-body timeout, over real sockets to a control
plane served by uvicorn: requests counted by route template (never an id), snapshot publishing
as it happened, late heads and late bodies counted, and a late body answered as a problem."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.gateway import serve_on_loopback
from support.raw_http import (
    GENEROUS_S,
    connect,
    header_deadline_passed,
    read_response,
    until_closed,
)
from trunkline.apps import serving
from trunkline.apps.controlplane import create_controlplane_app
from unit.controlplane.cp_support import World

HEADER_TIMEOUT_S = 0.5
BODY_TIMEOUT_S = 3.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples_of(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class ControlPlane:
    url: str
    world: World

    def client(self, who: str | None = "root") -> httpx.AsyncClient:
        """A client on a new connection per request: none idles into the header timeout."""
        headers = {} if who is None else {"Authorization": f"Bearer {self.world.tokens[who]}"}
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        return httpx.AsyncClient(base_url=self.url, headers=headers, limits=no_reuse)

    async def scrape(self) -> Samples:
        async with self.client(None) as client:
            answer = await client.get("/metrics")
        assert answer.status_code == 200
        kind = answer.headers["content-type"]
        assert kind.startswith("text/plain; version=") and kind.count("charset") == 1
        return samples_of(answer.text)


@pytest.fixture
async def controlplane(world: World) -> AsyncIterator[ControlPlane]:
    settings = world.runtime.settings.controlplane
    settings.body_timeout_s = BODY_TIMEOUT_S
    app = create_controlplane_app(world.runtime)
    async with serve_on_loopback(
        app, header_timeout_s=HEADER_TIMEOUT_S, name=serving.CONTROL_PLANE
    ) as url:
        yield ControlPlane(url, world)


def requests_counted(samples: Samples) -> dict[tuple[str, str, str], float]:
    return {
        (labels["route"], labels["method"], labels["status"]): value
        for (name, pairs), value in samples.items()
        if name == "trunkline_controlplane_requests_total"
        for labels in [dict(pairs)]
    }


async def test_requests_are_counted_by_route_template_method_and_status(
    controlplane: ControlPlane,
) -> None:
    world = controlplane.world
    acme = world.tenant("acme")
    project = world.project("acme", "demo")
    async with controlplane.client() as root, controlplane.client(None) as nobody:
        for _ in range(3):
            assert (await root.get(f"/api/v1/tenants/{acme}/projects")).status_code == 200
        assert (await root.get(f"/api/v1/tenants/{acme}/projects/{project}")).status_code == 200
        missing = "00000000-0000-4000-8000-000000000000"
        assert (await root.get(f"/api/v1/tenants/{missing}")).status_code == 404
        assert (await root.get("/api/v1/no/such/route")).status_code == 404
        assert (await root.request("BREW", "/api/v1/tiers")).status_code == 405
        assert (await root.delete("/api/v1/tiers")).status_code == 405
        assert (await root.request("BREW", f"/api/v1/no/such/{missing}")).status_code == 404
        assert (await nobody.get("/api/v1/tiers")).status_code == 401
        for probe in ("/livez", "/healthz", "/metrics"):
            assert (await nobody.get(probe)).status_code == 200
            assert (await nobody.get(f"{probe}/")).status_code == 200  # the same, not counted
    async with controlplane.client(None) as scraper:
        text = (await scraper.get("/metrics")).text

    projects = "/api/v1/tenants/{tenant_id}/projects"
    assert requests_counted(samples_of(text)) == {
        (projects, "GET", "200"): 3,
        (projects + "/{project_id}", "GET", "200"): 1,
        ("/api/v1/tenants/{tenant_id}", "GET", "404"): 1,
        ("other", "GET", "404"): 1,
        # The router's answers to a route's wrong method: the route's, no made-up method label.
        ("/api/v1/tiers", "other", "405"): 1,
        ("/api/v1/tiers", "DELETE", "405"): 1,
        ("other", "other", "404"): 1,  # no route at the path
        ("/api/v1/tiers", "GET", "401"): 1,
    }
    durations = samples_of(text)
    assert durations[
        ("trunkline_controlplane_request_duration_seconds_count",
         (("method", "GET"), ("route", projects)))
    ] == 3  # fmt: skip
    # Nothing names a tenant, a project, a user or a token.
    for secret in (acme, project, missing, "acme", "root@platform", world.tokens["root"]):
        assert secret not in text


async def test_a_publish_shows_in_the_snapshot_metrics(controlplane: ControlPlane) -> None:
    world = controlplane.world
    before = await controlplane.scrape()
    body = {"project_id": world.project("acme", "demo"), "name": "metered"}
    async with controlplane.client() as root:
        created = await root.post(f"/api/v1/tenants/{world.tenant('acme')}/keys", json=body)
        assert created.status_code == 201
        tier = {"name": "copper", "priority": 1, "ttft_slo_ms": 5000, "itl_slo_ms": 500}
        assert (await root.post("/api/v1/tiers", json=tier)).status_code == 201
    after = await controlplane.scrape()

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    builds = "trunkline_snapshot_builds_total"
    publishes = "trunkline_snapshot_publishes_total"
    assert moved(builds, kind="shards") == 1  # the key: its shard patched in
    assert moved(publishes, kind="shards", outcome="stored") == 1
    assert moved(builds, kind="whole") == 1  # the tier: built whole
    assert moved(publishes, kind="whole", outcome="stored") == 1
    assert moved("trunkline_snapshot_build_seconds_count", kind="whole") == 1
    assert world.runtime.memory_store is not None
    stored = world.runtime.memory_store.published_version()
    assert after[("trunkline_snapshot_published_version", ())] == stored
    assert after[("trunkline_snapshot_published_age_seconds", ())] >= 0


async def test_a_late_head_is_counted_on_the_control_planes_metrics(
    controlplane: ControlPlane,
) -> None:
    key = ("trunkline_header_timeouts_total", ())
    before = (await controlplane.scrape())[key]
    await header_deadline_passed(controlplane.url)
    assert (await controlplane.scrape())[key] == before + 1


def post_head(controlplane: ControlPlane, path: str, length: int) -> bytes:
    token = controlplane.world.tokens["root"]
    lines = [
        f"POST {path} HTTP/1.1",
        "host: controlplane",
        f"authorization: Bearer {token}",
        "content-type: application/json",
        f"content-length: {length}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_body_that_stalls_is_a_408_problem_and_is_counted(
    controlplane: ControlPlane,
) -> None:
    path = f"/api/v1/tenants/{controlplane.world.tenant('acme')}/projects"
    body = json.dumps({"name": "never-whole"}).encode()
    before = await controlplane.scrape()
    reader, writer = await connect(controlplane.url)
    try:
        writer.write(post_head(controlplane, path, len(body)) + body[:5])
        status, headers, answer = await read_response(reader)
        rest = await until_closed(reader)  # the server does not wait for the rest
    finally:
        writer.close()
    assert status == 408 and rest == b""
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    problem: dict[str, Any] = json.loads(answer)
    assert problem == {
        "type": "urn:trunkline:problem:request_timeout",
        "title": "Request Timeout",
        "status": 408,
        "detail": f"the request body did not arrive whole within {BODY_TIMEOUT_S:g} s",
        "instance": path,
        "code": "request_timeout",
    }
    after = await controlplane.scrape()
    timeouts = ("trunkline_body_timeouts_total", ())
    assert after[timeouts] == before.get(timeouts, 0) + 1
    late = ("/api/v1/tenants/{tenant_id}/projects", "POST", "408")
    assert requests_counted(after)[late] == requests_counted(before).get(late, 0) + 1
    async with controlplane.client() as root:  # nothing was created
        listed = await root.get(path)
    assert "never-whole" not in {p["name"] for p in listed.json()}


async def test_a_slow_body_within_the_limit_is_read_whole(controlplane: ControlPlane) -> None:
    path = f"/api/v1/tenants/{controlplane.world.tenant('acme')}/projects"
    body = json.dumps({"name": "slow-but-fine"}).encode()
    reader, writer = await connect(controlplane.url)
    try:
        writer.write(post_head(controlplane, path, len(body)) + body[:5])
        await header_deadline_passed(controlplane.url)  # slower than a head may be
        writer.write(body[5:])
        status, _headers, answer = await read_response(reader)
    finally:
        writer.close()
    assert status == 201, answer
    assert json.loads(answer)["name"] == "slow-but-fine"
    samples = await controlplane.scrape()
    assert samples.get(("trunkline_body_timeouts_total", ()), 0) == 0


async def test_a_client_leaving_mid_body_is_a_499_not_a_logged_failure(
    controlplane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    path = f"/api/v1/tenants/{controlplane.world.tenant('acme')}/projects"
    body = json.dumps({"name": "left"}).encode()
    left = ("/api/v1/tenants/{tenant_id}/projects", "POST", "499")
    before = requests_counted(await controlplane.scrape())
    _reader, writer = await connect(controlplane.url)
    writer.write(post_head(controlplane, path, len(body)) + body[:5])
    await writer.drain()
    writer.close()
    async with asyncio.timeout(GENEROUS_S):  # until the server has seen it go
        while requests_counted(await controlplane.scrape()).get(left, 0) == before.get(left, 0):  # noqa: ASYNC110 - polls /metrics
            await asyncio.sleep(0.02)
    counted = requests_counted(await controlplane.scrape())
    moved = {k: v - before.get(k, 0) for k, v in counted.items() if v != before.get(k, 0)}
    assert moved == {left: 1}  # once, and not as a 500 (nor a 400)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
