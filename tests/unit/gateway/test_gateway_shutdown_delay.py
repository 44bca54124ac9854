"""``trunkline gateway`` told to stop (SIGTERM, as Kubernetes does): its readiness probe fails
at once while it goes on serving for its shutdown delay, so the load balancers in front stop
sending it requests before it stops accepting them. Run under a real uvicorn server on loopback,
with the signal raised in this process."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from tests.unit.gateway.conftest import default_world, gateway_app

from support.in_process_server import serving_signals
from trunkline.kit.shutdown_delay import ShutdownDelay
from trunkline.metering.stream import InMemoryUsageStream


@asynccontextmanager
async def serving(delay: ShutdownDelay) -> AsyncIterator[tuple[str, asyncio.Task[None]]]:
    """The gateway, its shutdown delay ``delay``, under uvicorn (signals and all)."""
    world = default_world()
    world.publish()
    engines = httpx.MockTransport(lambda _request: httpx.Response(500))
    app = gateway_app(world, InMemoryUsageStream(), shutdown_delay=delay, transport=engines)
    async with serving_signals(app) as served:
        yield served


async def test_sigterm_fails_readiness_at_once_and_the_gateway_serves_on() -> None:
    """Before, SIGTERM closed the listener at once: requests the load balancers still sent
    for a moment were refused, and ``/health`` said ``ok`` to the end."""
    delay = ShutdownDelay(3600.0)  # ended by a second SIGTERM below
    async with serving(delay) as (url, task), httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/health")).json()["status"] == "ok"

        signal.raise_signal(signal.SIGTERM)

        ready = await client.get("/health")  # on the connection kept alive before
        assert (ready.status_code, ready.json()) == (503, {"status": "draining"})
        assert ready.headers["connection"] == "close"  # leave it for another replica
        async with httpx.AsyncClient(base_url=url) as fresh:  # a new connection is taken
            assert (await fresh.get("/livez")).status_code == 200
            models = await fresh.get("/v1/models")
            assert models.status_code == 401  # served: answered as ever (no key here)
        assert not task.done()

        signal.raise_signal(signal.SIGTERM)  # told again: it stops now

        await asyncio.wait_for(task, 30)


async def test_the_gateway_stops_by_itself_once_its_delay_is_over() -> None:
    delay = ShutdownDelay(0.2)
    async with serving(delay) as (_url, task):
        signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(task, 30)  # no second signal: the delay ran out
        assert delay.draining
