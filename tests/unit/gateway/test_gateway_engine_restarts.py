"""The gateway's approximate prefix index follows its engines: an engine restarted (seen by its
counters or its start time) or an endpoint taken out of the configuration is forgotten, and one
taken out with requests on it is watched until they end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import httpx
import msgspec
from tests.unit.gateway.conftest import default_world
from tests.unit.gateway.engines_support import (
    CHAT,
    METRICS,
    Gateway,
    approx_index,
    wait_for_scrapes,
)
from tests.unit.gateway.upstreams import chat_any

from trunkline.gateway.service import GatewayService
from trunkline.settings import EngineStateSettings


def test_an_engine_that_restarted_is_forgotten_by_the_approximate_index(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """A restarted engine's cache is empty: prompts routed there before must not keep being
    sent back to it (recomputed there) while another endpoint may hold them warm."""
    served = {f"engine-{i}": 1000 for i in range(1, 5)}  # prompt tokens: a cumulative counter

    def scrape(request: httpx.Request) -> httpx.Response:
        counter = f"vllm:prompt_tokens_total {served[request.url.host]}\n".encode()
        return httpx.Response(200, content=METRICS + counter)

    gw = engine_gateway(chat_any, policy="prefix-aware", scrape=scrape)
    service = gw.service
    gw.client.blocking_portal.call(wait_for_scrapes, service, ("e1", "e2", "e3", "e4"))
    preamble = {"role": "system", "content": "You answer for a telecom operator. " * 20}
    assert gw.chat({**CHAT, "messages": [preamble]}).status_code == 200
    [host] = gw.hosts()
    index = approx_index(service)
    held = len(index)
    assert held > 0

    other = next(h for h in served if h != host)
    served[other] = 5  # the other engine restarted: what went to the first one stays
    served[host] += 1  # and the first moved on
    gw.client.blocking_portal.call(_wait_for_restart_seen, service, "e" + other[-1])
    assert len(index) == held
    served[host] = 5  # now the one that holds the preamble restarted
    gw.client.blocking_portal.call(_wait_for_restart_seen, service, "e" + host[-1])
    assert len(index) == 0


def test_an_engine_restart_its_counters_cannot_show_is_seen_by_its_start_time(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """vLLM with ``--disable-log-stats`` serves no vLLM series at all, so no counter can go
    back; nor can one across a spell of 404s (a proxy in front while the engine was down).
    Its page still says when its process started (``process_start_time_seconds``). Before,
    such a restart went unseen: the approximate index kept sending the prompts it had sent
    there to the engine's now empty cache."""
    started = {f"engine-{i}": 1.7e9 for i in range(1, 5)}
    missing: set[str] = set()
    scrapes: Counter[str] = Counter()

    def scrape(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        scrapes[host] += 1
        if host in missing:
            return httpx.Response(404, text="default backend - 404")
        page = "# TYPE process_start_time_seconds gauge\n"
        page += f"process_start_time_seconds {started[host]}\n"
        return httpx.Response(200, content=page.encode())

    def scraped_again(host: str) -> None:
        gw.client.blocking_portal.call(_wait_for_scrapes_of, gw.service, scrapes, host)

    # A page without metrics is read again after the probe interval: kept short here.
    engines = EngineStateSettings(ejection_base_s=0.05, ejection_probe_max_s=0.05)
    gw = engine_gateway(chat_any, policy="prefix-aware", scrape=scrape, engines=engines)
    preamble = {"role": "system", "content": "You answer for a telecom operator. " * 20}
    for host in started:
        scraped_again(host)
    assert gw.chat({**CHAT, "messages": [preamble]}).status_code == 200
    [host] = gw.hosts()
    index = approx_index(gw.service)
    held = len(index)
    assert held > 0

    scraped_again(host)
    assert len(index) == held  # the same process: nothing forgotten
    started[host] = 1.8e9  # restarted
    scraped_again(host)
    assert len(index) == 0

    assert gw.chat({**CHAT, "messages": [preamble]}).status_code == 200
    [_, host] = gw.hosts()
    assert len(index) > 0
    missing.add(host)  # its proxy answers 404 while the engine restarts behind it
    scraped_again(host)
    started[host] = 1.9e9
    missing.clear()
    scraped_again(host)
    assert len(index) == 0


def test_a_start_time_read_slightly_differently_on_each_page_is_no_restart(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """``process_start_time_seconds`` is worked out from the host's boot time and the
    process's clock ticks: on some hosts it reads a little differently from one page to the
    next (the boot time moves by a second as the clock is adjusted, the sum is rounded
    another way). Before, each such page was taken as a restart, and the approximate index
    forgot what it had sent the engine at nearly every scrape: prompts whose preamble the
    engine cached went anywhere. A process started later by more than that is a restart."""
    started = {f"engine-{i}": 1.7e9 for i in range(1, 5)}
    jitter = [0.0, 0.01, -1.0, 1.0, 0.99]
    scrapes: Counter[str] = Counter()

    def scrape(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        scrapes[host] += 1
        read = started[host] + jitter[scrapes[host] % len(jitter)]
        page = "# TYPE process_start_time_seconds gauge\n"
        page += f"process_start_time_seconds {read!r}\n"
        return httpx.Response(200, content=page.encode())

    def scraped_again(host: str) -> None:
        gw.client.blocking_portal.call(_wait_for_scrapes_of, gw.service, scrapes, host)

    gw = engine_gateway(chat_any, policy="prefix-aware", scrape=scrape)
    preamble = {"role": "system", "content": "You answer for a telecom operator. " * 20}
    for host in started:
        scraped_again(host)
    assert gw.chat({**CHAT, "messages": [preamble]}).status_code == 200
    [host] = gw.hosts()
    index = approx_index(gw.service)
    held = len(index)
    assert held > 0

    for _ in jitter:  # a page with each reading
        scraped_again(host)
    assert len(index) == held  # the same process: nothing forgotten

    started[host] += 30.0  # restarted (an engine takes longer than that to start)
    scraped_again(host)
    assert len(index) == 0


async def _wait_for_scrapes_of(service: GatewayService, scrapes: Counter[str], host: str) -> None:
    """Until ``host``'s page was read twice more: the first of them applied (an endpoint is
    not scraped again before its scrape ended)."""
    target = scrapes[host] + 2
    while scrapes[host] < target:
        await service.engines.wait_changed(timeout=0.05)


def test_an_endpoint_taken_out_of_the_configuration_is_forgotten_by_the_approximate_index(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """An endpoint disabled (its engine upgraded, restarted) and enabled again under its id
    comes back with an empty cache: the prompts routed there before must not be sent back to
    it. Before, the index kept every block of every endpoint that ever left the configuration,
    so a gateway under autoscaling (endpoints added and removed all day) also grew by each
    endpoint's whole index, tens of thousands of blocks, for every endpoint it ever saw."""
    world = default_world()
    gw = engine_gateway(chat_any, world=world, policy="prefix-aware")
    service = gw.service
    preamble = {"role": "system", "content": "You answer for a telecom operator. " * 20}
    assert gw.chat({**CHAT, "messages": [preamble]}).status_code == 200
    [host] = gw.hosts()
    endpoint = "e" + host[-1]
    index = approx_index(service)
    assert len(index) > 0

    pools = dict(world.pools)
    for name, pool in pools.items():
        kept = tuple(e for e in pool.endpoints if e.id != endpoint)
        world.pools[name] = msgspec.structs.replace(pool, endpoints=kept)
    world.publish()
    gw.client.blocking_portal.call(_wait_until_untracked, service, endpoint)
    assert len(index) == 0

    world.pools.update(pools)  # enabled again: a fresh engine behind the same id
    world.publish()
    gw.client.blocking_portal.call(_wait_until_tracked, service, endpoint)
    assert len(index) == 0


async def _wait_until_untracked(service: GatewayService, endpoint: str) -> None:
    """Until the engine state no longer tracks ``endpoint`` (the snapshot without it seen)."""
    while service.engines.load(endpoint) is not None:
        await service.engines.wait_changed(timeout=0.05)


async def _wait_until_tracked(service: GatewayService, endpoint: str) -> None:
    """Until the engine state tracks ``endpoint`` again."""
    while service.engines.load(endpoint) is None:
        await service.engines.wait_changed(timeout=0.05)


async def _wait_for_restart_seen(service: GatewayService, endpoint: str) -> None:
    """Until a scrape of ``endpoint`` shows its counters back at 5 tokens (the restart)."""
    while True:
        load = service.engines.load(endpoint)
        if load is not None and service.engines._endpoints[endpoint].scan.prompt_tokens == 5:
            return
        await service.engines.wait_changed(timeout=1.0)
