"""Engine state behind a real gateway over real HTTP: simulated engines on loopback ports are
scraped, one dies mid-run and is ejected while clients keep going without errors, and KV-cache
events from the engines reach the precise prefix index.

Run with ``-s`` to see the measured scrape staleness (reported, never asserted: it depends on
the machine's load).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

import httpx
import pytest
import uvicorn
from tests.unit.gateway.conftest import SECRET, World, default_world

from support.servers import free_port
from trunkline.apps import serving
from trunkline.apps.gateway import create_gateway_app
from trunkline.engines import create_sim_app, get_profile
from trunkline.engines.server import SimApp
from trunkline.gateway.endpoints import EngineState
from trunkline.gateway.routing import kv_event_index
from trunkline.gateway.service import GatewayService
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.settings import EngineStateSettings, GatewaySettings
from trunkline.snapshot import AliasEntry, EndpointEntry, PoolEntry

MODEL = "llama-8b-served"
ENGINES = 3
PREAMBLE = "You are the support agent of a telecom operator; be brief and polite. " * 12


@dataclass
class Fleet:
    apps: list[SimApp]
    servers: list[uvicorn.Server]
    tasks: list[asyncio.Task[None]]
    urls: list[str]
    kv_addresses: list[str | None] = field(default_factory=list)

    async def kill(self, index: int) -> None:
        """The engine process dies: its port closes, open connections are cut."""
        self.servers[index].should_exit = True
        self.servers[index].force_exit = True
        await self.tasks[index]

    async def stop(self) -> None:
        for server in self.servers:
            server.should_exit = True
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for app in self.apps:
            await app.aclose()


async def start_fleet(count: int, *, kv_events: bool = False) -> Fleet:
    fleet = Fleet([], [], [], [])
    for _ in range(count):
        kv = f"tcp://127.0.0.1:{free_port()}" if kv_events else None
        app = create_sim_app(
            model=MODEL, profile=get_profile("h100"), time_scale=0.05, kv_events_endpoint=kv
        )
        port = free_port()
        server = serving.server(app, "127.0.0.1", port)
        fleet.apps.append(app)
        fleet.servers.append(server)
        fleet.tasks.append(asyncio.create_task(server.serve()))
        fleet.urls.append(f"http://127.0.0.1:{port}")
        fleet.kv_addresses.append(kv)
    await serving.wait_started(fleet.servers, fleet.tasks)
    return fleet


@dataclass
class Live:
    base_url: str
    key: str
    usage: InMemoryUsageStream
    service: GatewayService
    fleet: Fleet
    app: object

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def start_gateway(
    fleet: Fleet, policy: str, admission: Literal["slo", "off"] = "slo"
) -> tuple[Live, uvicorn.Server, asyncio.Task[None]]:
    world: World = default_world()
    endpoints = tuple(
        EndpointEntry(f"e{i}", url, kv_events=kv)
        for i, (url, kv) in enumerate(zip(fleet.urls, fleet.kv_addresses, strict=True))
    )
    world.pools = {"h100-eu": PoolEntry("h100-eu", MODEL, "h100", "eu-west", False, 16, endpoints)}
    world.aliases = {"llama": AliasEntry("llama", MODEL, "chat", ("h100-eu",))}
    key = world.add_key()
    world.publish()
    usage = InMemoryUsageStream()
    settings = GatewaySettings(
        snapshot_poll_s=0.05,
        routing_policy=policy,
        admission=admission,
        engines=EngineStateSettings(ejection_base_s=30.0),  # stays ejected for the whole test
    )
    app = create_gateway_app(
        source=world.store, emitter=usage, server_secret=SECRET, settings=settings
    )
    port = free_port()
    server = serving.server(app, "127.0.0.1", port)
    task = asyncio.create_task(server.serve())
    await serving.wait_started([server], [task])
    service: GatewayService = app.state.gateway
    return Live(f"http://127.0.0.1:{port}/v1", key, usage, service, fleet, app), server, task


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    fleet = await start_fleet(ENGINES)
    gateway, server, task = await start_gateway(fleet, "prefix-aware")
    try:
        yield gateway
    finally:
        server.should_exit = True
        await task
        await fleet.stop()


async def _until(
    engines: EngineState, what: str, done: Callable[[], bool], rounds: int = 600
) -> None:
    """Wait for engine-state changes until ``done``, a bounded number of times (a change comes
    with every scrape, ten times a second), never on a deadline."""
    for _ in range(rounds):
        if done():
            return
        await engines.wait_changed(timeout=1.0)
    raise AssertionError(f"{what}: not after {rounds} engine-state changes")


@dataclass
class Outcome:
    started: float
    ok: bool
    detail: str


async def _client(
    live: Live, http: httpx.AsyncClient, number: int, outcomes: list[Outcome], stop: asyncio.Event
) -> None:
    turn = 0
    while not stop.is_set():
        turn += 1
        stream = turn % 2 == 0
        body = {
            "model": "llama",
            "max_tokens": 8,
            "stream": stream,
            "messages": [{"role": "user", "content": f"{PREAMBLE} client {number} turn {turn}"}],
        }
        started = time.monotonic()
        try:
            response = await http.post("/chat/completions", json=body, headers=live.headers)
            ok = response.status_code == 200 and (
                not stream or ('"error"' not in response.text and "[DONE]" in response.text)
            )
            detail = f"{response.status_code} {response.text[-200:]}"
        except httpx.HTTPError as exc:
            ok, detail = False, repr(exc)
        outcomes.append(Outcome(started, ok, detail))


async def _staleness(live: Live, samples: list[float], stop: asyncio.Event) -> None:
    """Sample how old the live endpoints' figures are, every 10 ms."""
    while not stop.is_set():
        for key, load in live.service.engines.loads().items():
            if live.service.engines.in_service(key) and load.age_s != float("inf"):
                samples.append(load.age_s)
        await asyncio.sleep(0.01)


async def test_an_engine_dying_mid_run_is_ejected_and_no_new_request_fails(live: Live) -> None:
    outcomes: list[Outcome] = []
    ages: list[float] = []
    stop = asyncio.Event()
    engines = live.service.engines
    async with httpx.AsyncClient(base_url=live.base_url, timeout=30.0) as http:
        clients = [asyncio.create_task(_client(live, http, n, outcomes, stop)) for n in range(6)]
        sampler = asyncio.create_task(_staleness(live, ages, stop))
        await _until(engines, "30 requests", lambda: len(outcomes) >= 30)
        # The engine the shared preamble went to: prefix-aware routing keeps it there while
        # that engine has room, so it is the one whose death moves traffic.
        served = Counter(record.endpoint for _id, record in live.usage.read(10_000))
        victim = live.fleet.urls.index(served.most_common(1)[0][0])
        killed_at = time.monotonic()
        await live.fleet.kill(victim)
        await _until(engines, "the ejection", lambda: not engines.in_service(f"e{victim}"))
        ejected_at = time.monotonic()
        await _until(
            engines, "40 more requests", lambda: sum(o.started > ejected_at for o in outcomes) >= 40
        )
        stop.set()
        await asyncio.gather(*clients, sampler)

    after_kill = [o for o in outcomes if o.started > killed_at]
    assert after_kill and all(o.ok for o in after_kill), [o.detail for o in after_kill if not o.ok]
    records = [record for _id, record in live.usage.read(10_000)]
    sent_after = [
        r for r in records if r.started_at > time.time() - (time.monotonic() - ejected_at)
    ]
    # Served by the survivors only; prefix-aware may keep them all on one (the preamble's new
    # home has room), so not necessarily on both.
    survivors = {url for index, url in enumerate(live.fleet.urls) if index != victim}
    assert sent_after and {r.endpoint for r in sent_after} <= survivors
    ages.sort()
    print(
        f"\nscrape staleness over {len(ages)} samples (interval 100 ms): "
        f"p50 {statistics.median(ages) * 1000:.0f} ms, "
        f"p99 {ages[int(len(ages) * 0.99)] * 1000:.0f} ms, max {ages[-1] * 1000:.0f} ms; "
        f"ejected {(ejected_at - killed_at) * 1000:.0f} ms after the kill; "
        f"{len(outcomes)} requests, {sum(not o.ok for o in outcomes)} failed "
        f"(all started before the kill)"
    )


async def test_kv_events_of_simulated_engines_reach_the_precise_index() -> None:
    fleet = await start_fleet(2, kv_events=True)
    live, server, task = await start_gateway(fleet, "precise-prefix")
    try:
        index = kv_event_index(live.service.policy)
        assert index is not None
        headers = live.headers
        async with httpx.AsyncClient(base_url=live.base_url, timeout=30.0) as http:
            # ZMQ's slow joiner: send until events arrive, as a client would keep sending.
            for turn in range(100):
                if len(index):
                    break
                body = {
                    "model": "llama",
                    "max_tokens": 2,
                    "messages": [{"role": "user", "content": f"{PREAMBLE} {turn}"}],
                }
                response = await http.post("/chat/completions", json=body, headers=headers)
                assert response.status_code == 200
            assert len(index), "no KV event of the simulated engines reached the index"
            health = (await http.get(live.base_url.removesuffix("/v1") + "/health")).json()
        subscriptions = health["engines"]["kv_events"]
        assert len(subscriptions) == 2 and all(s["connected"] for s in subscriptions.values())
        assert sum(s["events"] for s in subscriptions.values()) > 0
    finally:
        server.should_exit = True
        await task
        await fleet.stop()
