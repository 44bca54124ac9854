"""Run simulated vLLM engines as real HTTP servers on loopback ports, in-process.

:class:`SimulatedEngines` serves each :class:`EngineSpec` with uvicorn on ``127.0.0.1`` and an
OS-assigned port, as tasks of the current event loop (no signal handlers, so it can live inside
an app or a test). :func:`start_in_thread` runs the same on a private loop in a daemon thread,
for synchronous callers such as plain pytest fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

import uvicorn

from trunkline.engines.profiles import AcceleratorProfile, get_profile
from trunkline.engines.server import SimApp, create_sim_app

__all__ = ["EngineFleetThread", "EngineSpec", "SimulatedEngines", "start_in_thread"]


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One simulated engine: the model it serves and the accelerator it pretends to be."""

    model: str
    profile: str | AcceleratorProfile = "h100"
    seed: int = 0
    time_scale: float = 1.0

    def build(self) -> SimApp:
        profile = get_profile(self.profile) if isinstance(self.profile, str) else self.profile
        return create_sim_app(
            model=self.model, profile=profile, seed=self.seed, time_scale=self.time_scale
        )


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host and reports readiness."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


def _bind_loopback(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class SimulatedEngines:
    """``async with SimulatedEngines(specs) as engines:`` then call ``engines.urls``."""

    def __init__(self, specs: Sequence[EngineSpec], *, host: str = "127.0.0.1") -> None:
        self.specs = list(specs)
        self.host = host
        self.apps: list[SimApp] = []
        self.urls: list[str] = []
        self._servers: list[_Server] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> SimulatedEngines:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every engine and wait until each one accepts requests."""
        try:
            for spec in self.specs:
                await self._start_one(spec)
        except BaseException:
            await self.stop()
            raise

    async def _start_one(self, spec: EngineSpec) -> None:
        app = spec.build()
        sock = _bind_loopback(self.host)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            interface="asgi3",
            lifespan="on",
            log_level="warning",
            log_config=None,  # its lines in the format trunkline.kit.logging configured
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = _Server(config)
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        self.apps.append(app)
        self._servers.append(server)
        self._tasks.append(task)
        ready = asyncio.ensure_future(server.ready.wait())
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if not server.ready.is_set():
            ready.cancel()
            raise RuntimeError(f"simulated engine for {spec.model!r} failed to start")
        self.urls.append(f"http://{self.host}:{port}")

    async def stop(self) -> None:
        """Shut every server down (open streams are cut after a second)."""
        for server in self._servers:
            server.should_exit = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for app in self.apps:
            await app.aclose()
        self._servers.clear()
        self._tasks.clear()


class EngineFleetThread:
    """Simulated engines served from a background thread; see :func:`start_in_thread`."""

    def __init__(self, specs: Sequence[EngineSpec], *, host: str = "127.0.0.1") -> None:
        self._fleet = SimulatedEngines(specs, host=host)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=self._main, name="trunkline-sim-engines", daemon=True
        )

    @property
    def urls(self) -> list[str]:
        return list(self._fleet.urls)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("simulated engines did not start in time")
        if self._error is not None:
            raise RuntimeError("simulated engines failed to start") from self._error

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> EngineFleetThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with self._fleet:
                self._ready.set()
                await self._stop.wait()
        except BaseException as error:  # reported to the starting thread
            self._error = error
        finally:
            self._ready.set()


def start_in_thread(specs: Sequence[EngineSpec], *, timeout: float = 30.0) -> EngineFleetThread:
    """Serve ``specs`` from a daemon thread; returns once every URL accepts requests."""
    handle = EngineFleetThread(specs)
    handle.start(timeout)
    return handle
