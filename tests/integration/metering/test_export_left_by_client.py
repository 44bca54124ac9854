"""A billing export a client stops reading is closed at once: its database transaction (an
export of every tenant reads one view of the database) is not left open until the garbage
collector finds it, which took up to a minute."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator

import httpx
import pytest
from litestar import Litestar, get
from litestar.response import Stream

from support.gateway import serve_on_loopback
from trunkline.billing import controllers
from trunkline.billing.exports import Export


class Source:
    """An export's pieces, endless, telling when it is closed (its session with it);
    ``failing_close``: its close fails, as a rollback on a connection lost would."""

    def __init__(self, *, failing_close: bool = False) -> None:
        self.closed = threading.Event()
        self.failing_close = failing_close

    def chunks(self) -> Iterator[bytes]:
        try:
            while True:
                yield b"x" * 65_536
        finally:
            self.closed.set()
            if self.failing_close:
                raise OSError("the database connection was lost while the export closed")


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_an_export_the_client_leaves_is_closed_at_once() -> None:
    source = Source()

    @get("/export", sync_to_thread=False)
    def export() -> Stream:
        chunks = source.chunks()
        return controllers._download(Export(chunks, "text/csv", "all.csv", final=False))

    gc.disable()  # only an explicit close counts, not a collection that happens to run
    try:
        async with serve_on_loopback(Litestar([export])) as url, httpx.AsyncClient() as client:
            async with client.stream("GET", f"{url}/export") as response:
                assert response.status_code == 200
                async for _piece in response.aiter_bytes():
                    break  # the client leaves after its first piece
            closed = await _wait(source.closed)
    finally:
        gc.enable()
    assert closed, "the export was still open 10 s after its client left"


async def _wait(event: threading.Event, timeout_s: float = 10.0) -> bool:
    import anyio.to_thread

    return await anyio.to_thread.run_sync(event.wait, timeout_s)


async def test_a_close_failing_after_the_client_left_is_not_an_export_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    errors = Errors()
    for name in ("trunkline.billing.controllers", "uvicorn.error"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", [*logger.handlers, errors])
        monkeypatch.setattr(logger, "disabled", False)
    source = Source(failing_close=True)

    @get("/export", sync_to_thread=False)
    def export() -> Stream:
        return controllers._download(Export(source.chunks(), "text/csv", "all.csv", final=False))

    async with serve_on_loopback(Litestar([export])) as url, httpx.AsyncClient() as client:
        async with client.stream("GET", f"{url}/export") as response:
            async for _piece in response.aiter_bytes():
                break  # the client leaves
        assert await _wait(source.closed)
    # the server has stopped: its response task, and the close it awaited, ended
    assert errors.messages == [], "a close after the client left reported as a failed export"
