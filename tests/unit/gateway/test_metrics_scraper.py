"""The scraper over a scripted transport: a slow engine blocks nobody, failures eject, ejected
endpoints are probed when their ejection ends, and the endpoint set follows the snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from trunkline.gateway.endpoints import EjectionPolicy, EngineState, MetricsScraper
from trunkline.gateway.routing import Candidate, endpoint_view
from trunkline.gateway.routing.prefix_index import ApproxPrefixIndex
from trunkline.snapshot import EndpointEntry, PoolEntry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Engines:
    """``/metrics`` of engines by host: a page, a status, an error, or a hang until released."""

    def __init__(self) -> None:
        self.running: dict[str, int] = {}
        self.broken: set[str] = set()
        self.hanging: dict[str, asyncio.Event] = {}
        self.scrapes: list[str] = []
        self.cache_config: dict[str, str] = {}
        """A ``vllm:cache_config_info`` line by host."""
        self.pages: dict[str, httpx.Response] = {}
        """Another answer by host (a trickle, a page that is not vLLM's)."""

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.scrapes.append(host)
        if host in self.hanging:
            await self.hanging[host].wait()
        if host in self.broken:
            raise httpx.ConnectError("refused", request=request)
        if host in self.pages:
            return self.pages[host]
        page = f'vllm:num_requests_running{{model_name="m"}} {self.running.get(host, 0)}\n'
        page += self.cache_config.get(host, "")
        return httpx.Response(200, content=page.encode())


def _scraper(
    engines: Engines,
    endpoints: Callable[[], list[EndpointEntry]],
    clock: Clock,
    *,
    timeout_s: float = 1.0,
    policy: EjectionPolicy | None = None,
) -> tuple[EngineState, MetricsScraper]:
    state = EngineState(policy or EjectionPolicy(eject_after=2, base_s=5.0, max_s=60.0), clock)
    client = httpx.AsyncClient(transport=httpx.MockTransport(engines))
    return state, MetricsScraper(
        state, client, endpoints, interval_s=0.1, concurrency=4, timeout_s=timeout_s
    )


def _scrape_failures(state: EngineState) -> dict[str, int]:
    return {h.endpoint: h.scrape_failures for h in state.health_report()}


def _entries(*names: str) -> list[EndpointEntry]:
    return [EndpointEntry(name, f"http://{name}") for name in names]


async def test_a_hanging_engine_delays_no_other_and_is_not_piled_up() -> None:
    engines = Engines()
    engines.running = {"fast": 3}
    engines.hanging["slow"] = asyncio.Event()
    state, scraper = _scraper(engines, lambda: _entries("slow", "fast"), Clock())

    first = scraper.tick()
    done, pending = await asyncio.wait(first, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1 and state.loads()["fast"].running == 3

    second = scraper.tick()  # the slow one is still being scraped: only the fast one again
    await asyncio.gather(*second)
    assert len(second) == 1 and engines.scrapes.count("slow") == 1

    engines.hanging["slow"].set()
    await asyncio.gather(*pending)
    await scraper.close()


async def test_failed_scrapes_eject_and_the_probe_readmits() -> None:
    engines = Engines()
    engines.broken.add("a")
    clock = Clock()
    state, scraper = _scraper(engines, lambda: _entries("a"), clock)

    for _ in range(2):
        await asyncio.gather(*scraper.tick())
    assert not state.in_service("a")
    assert scraper.tick() == []  # ejected: left alone

    engines.broken.clear()
    clock.now += 5.0  # the ejection is over: the next scrape is the probe
    await asyncio.gather(*scraper.tick())
    assert state.in_service("a")
    await scraper.close()


async def test_endpoints_follow_the_snapshot() -> None:
    engines = Engines()
    current = _entries("a", "b")
    state, scraper = _scraper(engines, lambda: current, Clock())
    await asyncio.gather(*scraper.tick())
    assert set(state.loads()) == {"a", "b"}

    current = _entries("b", "c")
    await asyncio.gather(*scraper.tick())
    assert set(state.loads()) == {"b", "c"}
    await scraper.close()


async def test_an_endpoint_taken_out_with_requests_on_it_is_watched_until_they_end() -> None:
    """Taken out of the configuration (scaled down), then stopped with a request still on it:
    a vLLM stopping on SIGTERM can leave it open and silent. Before, the endpoint was dropped
    at once and its scrapes with it: nothing ejected it, and a plain request waited out the
    read timeout (300 s, then a 504), where on an endpoint still configured it moves on as its
    scrapes fail."""
    engines = Engines()
    current = _entries("a", "b")
    state, scraper = _scraper(engines, lambda: current, Clock())
    await asyncio.gather(*scraper.tick())
    moved_on: list[str] = []
    flight = state.sent("b", 10, streamed=False)
    flight.on_ejected = lambda: moved_on.append("b")

    current = _entries("a")
    await asyncio.gather(*scraper.tick())
    engines.broken.add("b")  # its engine stopped: connections refused
    for _ in range(2):
        await asyncio.gather(*scraper.tick())
    assert moved_on == ["b"]

    state.ended(flight)  # the request went elsewhere: nothing is left on b
    await asyncio.gather(*scraper.tick())
    scraped = engines.scrapes.count("b")
    await asyncio.gather(*scraper.tick())
    assert engines.scrapes.count("b") == scraped  # no longer scraped
    assert set(state.loads()) == {"a"}
    await scraper.close()


async def test_an_endpoint_put_back_while_its_requests_drain_is_tracked_once_and_kept() -> None:
    """Taken out with a request on it, then put back (a configuration change undone) before
    the request ended: it is one endpoint, its request still counted, scraped once per round
    at its address, and kept once that request ends; taken out again, it goes when the next
    one on it ends, whether it finished, failed or its client left."""
    engines = Engines()
    current = _entries("a", "b")
    state, scraper = _scraper(engines, lambda: current, Clock())
    forgotten: list[str] = []
    state.on_removed = forgotten.append
    await asyncio.gather(*scraper.tick())
    flight = state.sent("b", 10, streamed=False)

    current = _entries("a")
    await asyncio.gather(*scraper.tick())
    assert state.draining() == {"b"}
    current = _entries("a", "b")
    before = engines.scrapes.count("b")
    await asyncio.gather(*scraper.tick())
    assert state.draining() == set()
    assert engines.scrapes.count("b") == before + 1
    assert [h.in_flight for h in state.health_report()] == [0, 1]

    state.ended(flight)
    await asyncio.gather(*scraper.tick())
    assert set(state.loads()) == {"a", "b"}
    assert forgotten == ["b"]  # when it left, not when its request ended after it came back

    cancelled = state.sent("b", 10)  # its client leaves before the first token
    current = _entries("a")
    await asyncio.gather(*scraper.tick())
    state.ended(cancelled)
    await asyncio.gather(*scraper.tick())
    assert set(state.loads()) == {"a"} and state.draining() == set()
    await scraper.close()


async def test_the_background_loop_keeps_loads_fresh() -> None:
    engines = Engines()
    state, scraper = _scraper(engines, lambda: _entries("a"), Clock())
    await scraper.start()
    try:
        for running in (1, 2, 3):
            engines.running["a"] = running
            while state.loads().get("a") is None or state.loads()["a"].running != running:
                await state.wait_changed(timeout=1.0)
    finally:
        await scraper.close()


async def test_the_engines_kv_capacity_reaches_the_view_routing_sees() -> None:
    engines = Engines()
    engines.cache_config["a"] = (
        'vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="2000"} 1.0\n'
    )
    state, scraper = _scraper(engines, lambda: _entries("a", "b"), Clock())
    pool = PoolEntry("p", "m", "h100", "eu", False, 16, tuple(_entries("a", "b")))
    await asyncio.gather(*scraper.tick())

    a, b = (endpoint_view(Candidate(pool, e), state.load(e.id)) for e in pool.endpoints)

    assert (a.kv_capacity_tokens, b.kv_capacity_tokens) == (32000, None)
    index = ApproxPrefixIndex(400_000)
    assert (index.capacity_of(a), index.capacity_of(b)) == (32000, 400_000)
    # The snapshot's figure is the fallback; the engine's own wins.
    configured = PoolEntry(
        "p", "m", "h100", "eu", False, 16, tuple(_entries("a", "b")), kv_capacity_tokens=8000
    )
    views = [endpoint_view(Candidate(configured, e), state.load(e.id)) for e in pool.endpoints]
    assert [view.kv_capacity_tokens for view in views] == [32000, 8000]
    await scraper.close()


async def _trickle() -> AsyncIterator[bytes]:
    while True:  # a byte now and then, each read well within any per-read timeout
        yield b"#"
        await asyncio.sleep(0.01)


async def test_a_page_that_trickles_in_fails_as_a_whole_and_frees_its_slot() -> None:
    """httpx bounds each read, not the scrape: one byte at a time kept a scrape (and one of
    the shared slots) forever, and enough such pages stopped every endpoint's scrapes."""
    engines = Engines()
    engines.pages = {f"t{i}": httpx.Response(200, content=_trickle()) for i in range(4)}
    engines.running["good"] = 2
    names = [*engines.pages, "good"]
    state, scraper = _scraper(engines, lambda: _entries(*names), Clock(), timeout_s=0.2)

    await asyncio.wait_for(asyncio.gather(*scraper.tick()), timeout=10)
    assert _scrape_failures(state) == {"t0": 1, "t1": 1, "t2": 1, "t3": 1, "good": 0}
    assert state.loads()["good"].running == 2  # waited for a slot, then scraped
    await scraper.close()


async def test_a_page_too_big_is_a_failed_scrape() -> None:
    engines = Engines()
    engines.pages = {
        "huge": httpx.Response(200, content=b"vllm:num_requests_running 1\n" * 200_000),
        # vLLM with --disable-log-stats: Prometheus text without its gauges, load unknown
        "no-stats": httpx.Response(200, content=b"# TYPE process_cpu_seconds counter\n"),
    }
    names = ("huge", "no-stats", "a")
    state, scraper = _scraper(engines, lambda: _entries(*names), Clock())
    for _ in range(2):
        await asyncio.gather(*scraper.tick())
    assert _scrape_failures(state) == {"huge": 2, "no-stats": 0, "a": 0}
    assert not state.in_service("huge")
    await scraper.close()


async def test_an_endpoint_serving_no_metrics_stays_in_service_with_its_load_unknown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An engine behind a server without vLLM's /metrics (404, or a page that is not
    Prometheus) serves completions: its scrapes failed, and it was ejected for good (every
    probe failed again). Now it stays routable, with its load unknown, and is told of once."""
    engines = Engines()
    engines.pages = {
        "404": httpx.Response(404, json={"detail": "Not Found"}),
        "html": httpx.Response(200, content=b"<html><body>It works</body></html>"),
    }
    clock = Clock()
    state, scraper = _scraper(engines, lambda: _entries("404", "html", "a"), clock)
    with caplog.at_level(logging.INFO, logger="trunkline.gateway.endpoints.state"):
        for _ in range(5):
            await asyncio.gather(*scraper.tick())
    assert _scrape_failures(state) == {"404": 0, "html": 0, "a": 0}
    assert state.routable("404") and state.routable("html")
    assert math.isinf(state.loads()["404"].age_s)  # unknown, as before any scrape
    told = {h.endpoint: h.without_metrics for h in state.health_report()}
    assert told == {"404": "HTTP 404", "html": "not Prometheus text", "a": None}
    warnings = [r for r in caplog.records if "no engine metrics" in r.getMessage()]
    assert sorted(r.endpoint_id for r in warnings) == ["404", "html"]  # once each

    # Its requests judge its health; a scrape that answers, even 404, is the probe.
    for _ in range(2):
        state.failed("404", "HTTP 500")
    assert not state.routable("404")
    clock.now += 5.0
    await asyncio.gather(*scraper.tick())
    assert state.routable("404")

    # Metrics served again: its load is read (by its next scrape, once its back-off is out),
    # and that is said once too.
    engines.pages.pop("404")
    engines.running["404"] = 4
    clock.now += EjectionPolicy().probe_max_s
    with caplog.at_level(logging.INFO, logger="trunkline.gateway.endpoints.state"):
        await asyncio.gather(*scraper.tick())
    assert state.loads()["404"].running == 4
    assert [h.without_metrics for h in state.health_report() if h.endpoint == "404"] == [None]
    assert any("engine metrics again" in r.getMessage() for r in caplog.records)
    await scraper.close()


async def test_an_endpoint_serving_no_metrics_is_scraped_ever_less_often_until_it_does() -> None:
    """Its scrapes went on at the full rate (10 a second) forever, each for nothing. Now they
    back off, up to the longest probe interval, while it stays listed as serving none; once it
    serves metrics it is scraped at the full rate again."""
    engines = Engines()
    engines.pages = {"404": httpx.Response(404, json={"detail": "Not Found"})}
    clock = Clock()
    policy = EjectionPolicy(eject_after=2, base_s=0.5, probe_max_s=4.0)
    state, scraper = _scraper(engines, lambda: _entries("404", "a"), clock, policy=policy)

    async def ticks(count: int) -> list[float]:
        """When, over ``count`` ticks 0.1 s apart, "404" was scraped."""
        scraped_at = []
        for _ in range(count):
            clock.now = round(clock.now + 0.1, 6)
            before = len(engines.scrapes)
            await asyncio.gather(*scraper.tick())
            if "404" in engines.scrapes[before:]:
                scraped_at.append(clock.now)
        return scraped_at

    scraped_at = await ticks(300)
    assert engines.scrapes.count("a") == 300  # the metered one: every tick
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(scraped_at)]
    assert gaps == sorted(gaps) and gaps[0] < gaps[-1] <= policy.probe_max_s
    assert [h.without_metrics for h in state.health_report()] == ["HTTP 404", None]
    assert state.routable("404")

    engines.pages.pop("404")  # metrics served: found within the longest back-off
    found_at = (await ticks(round(policy.probe_max_s / 0.1)))[:1]
    assert found_at and [h.without_metrics for h in state.health_report()] == [None, None]
    assert len(await ticks(10)) == 10  # the full rate again


async def test_an_endpoint_leaving_the_snapshot_has_its_scrape_cancelled() -> None:
    engines = Engines()
    engines.hanging["gone"] = asyncio.Event()
    current = _entries("gone", "a")
    _state, scraper = _scraper(engines, lambda: current, Clock())
    [hanging] = [t for t in scraper.tick() if t.get_name().endswith("gone")]
    await asyncio.sleep(0)
    current = _entries("a")
    scraper.tick()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(hanging, timeout=5)
    assert hanging.cancelled()
    await scraper.close()


async def test_many_endpoints_are_read_less_often_within_the_scrape_budget() -> None:
    """303 endpoints at ten scrapes a second each kept a gateway process half a core busy
    idle, and made its requests twice as slow."""
    current = _entries("a", "b")
    state = EngineState(EjectionPolicy(), Clock())
    client = httpx.AsyncClient(transport=httpx.MockTransport(Engines()))
    scraper = MetricsScraper(state, client, lambda: current, interval_s=0.1, max_per_s=100)
    scraper.tick()
    assert scraper.interval_s() == 0.1  # few endpoints: as configured
    current = _entries(*(f"e{i}" for i in range(300)))
    scraper.tick()
    assert scraper.interval_s() == 3.0  # 300 endpoints at 100 scrapes a second
    await scraper.close()
