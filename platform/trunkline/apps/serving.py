"""Run several ASGI apps under uvicorn in one event loop, stopped together on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Generator, Iterable
from typing import Any

import uvicorn

from trunkline.kit.header_timeout import header_timeout_protocol

GATEWAY = "gateway"
CONTROL_PLANE = "controlplane"
"""Server names, under which each counts the connections it closed for a late request head."""


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def base_url(host: str, port: int) -> str:
    """``http://host:port`` of a server listening on ``host``, an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def connection_options(
    *, header_timeout_s: float | None, keep_alive_timeout_s: float | None, name: str
) -> dict[str, Any]:
    """uvicorn's options for how a server holds its connections, for ``uvicorn.Config`` or
    ``uvicorn.run``: ``header_timeout_s`` closes a connection whose request head is late,
    counted under ``name``, and ``keep_alive_timeout_s`` one idle after its last response
    (docs/gateway.md, Settings). None leaves uvicorn's own (test engines: its protocol, and
    vLLM's keep-alive of 5 s)."""
    options: dict[str, Any] = {}
    if header_timeout_s is not None:
        options["http"] = header_timeout_protocol(header_timeout_s, name)
    if keep_alive_timeout_s is not None:
        options["timeout_keep_alive"] = keep_alive_timeout_s  # typed int by uvicorn; a float works
    return options


def server(
    app: Any,
    host: str,
    port: int,
    *,
    log_level: str = "warning",
    header_timeout_s: float | None = None,
    keep_alive_timeout_s: float | None = None,
    name: str = "server",
    drain_s: int | None = None,
) -> uvicorn.Server:
    """A server for ``app`` that its owner runs and stops; the timeouts as
    :func:`connection_options`. Stopped, it waits ``drain_s`` for the requests in flight,
    then cancels them (None: until they end by themselves)."""
    options = connection_options(
        header_timeout_s=header_timeout_s, keep_alive_timeout_s=keep_alive_timeout_s, name=name
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,  # its lines in the format trunkline.kit.logging configured
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=drain_s,
        **options,
    )
    return _QuietServer(config)


async def wait_started(servers: Iterable[uvicorn.Server], tasks: list[asyncio.Task[None]]) -> None:
    """Return once every server listens; raise if one of them exited instead."""
    pending = list(servers)
    while pending:
        for task in tasks:
            if task.done():
                task.result()
                raise RuntimeError("a server stopped during start-up (is its port in use?)")
        pending = [s for s in pending if not s.started]
        await asyncio.sleep(0.02)


def install_stop_signals(stop: asyncio.Event) -> None:
    on_stop_signal(stop.set)


def on_stop_signal(callback: Callable[[], None]) -> None:
    """Call ``callback`` on Ctrl-C or SIGTERM, from now on (in place of what was called)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, callback)


def stop(servers: list[uvicorn.Server], drain_s: int) -> None:
    """Stop ``servers``: each waits up to ``drain_s`` for its requests in flight, which a
    second Ctrl-C cuts now. Said when there are any: else the wait looks like a hang."""
    for s in servers:
        s.should_exit = True
    on_stop_signal(lambda: cut_requests(servers))
    if waiting := sum(len(s.server_state.tasks) for s in servers):
        print(
            f"Stopping: waiting up to {drain_s} s for {waiting} request(s) in flight; "
            "Ctrl-C again to cut them now.",
            flush=True,
        )


def cut_requests(servers: Iterable[uvicorn.Server]) -> None:
    """End a stop's drain now: cancel the requests in flight, as its timeout would (a stream
    ends with the gateway's ``gateway_stopped`` error, metered as cut)."""
    for s in servers:
        for task in list(s.server_state.tasks):
            task.cancel(msg="cut: stopped again while its requests drained")
