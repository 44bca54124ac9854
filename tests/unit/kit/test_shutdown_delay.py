"""The shutdown delay's ``Connection: close``: every answer sent while it drains says it, so a
client leaves its kept-alive connection for another replica before the listener closes."""

from __future__ import annotations

import asyncio
import signal

import httpx
from litestar import Litestar, get

from support.in_process_server import serving_signals
from trunkline.kit.shutdown_delay import ShutdownDelay, closing_while_draining


async def test_an_answer_to_a_request_begun_before_sigterm_says_connection_close() -> None:
    """A request in flight at SIGTERM (a completion still being generated) was answered on a
    connection kept alive: only requests begun after the signal were told to close, and the
    client's next request on it raced the close at the delay's end."""
    delay = ShutdownDelay(3600.0)  # ended by a second SIGTERM below

    @get("/slow", sync_to_thread=False)
    def slow() -> str:
        signal.raise_signal(signal.SIGTERM)  # arrives while this request is in flight
        return "done"

    app = Litestar(route_handlers=[slow], lifespan=[delay.installed])
    app.asgi_handler = closing_while_draining(app.asgi_handler, delay)
    async with serving_signals(app) as (url, task), httpx.AsyncClient(base_url=url) as client:
        answer = await client.get("/slow")
        assert (answer.status_code, answer.text) == (200, "done")
        assert delay.draining
        assert answer.headers.get("connection") == "close"

        signal.raise_signal(signal.SIGTERM)  # told again: it stops now
        await asyncio.wait_for(task, 30)
