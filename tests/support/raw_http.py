"""HTTP/1.1 over a raw socket, for tests of what a server does with slow or stalled clients
(a late head, a late body): what it answers, and when it closes the connection."""

from __future__ import annotations

import asyncio

import pytest

__all__ = ["GENEROUS_S", "connect", "header_deadline_passed", "read_response", "until_closed"]

GENEROUS_S = 10.0
"""How long a test waits for what should come after a fraction of a second."""


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def header_deadline_passed(url: str) -> None:
    """Returns once a connection opened now was closed by the server at ``url`` for sending no
    head: any connection opened before it has been open longer than the header timeout by then."""
    reader, writer = await connect(url)
    try:
        assert await until_closed(reader) == b""
    finally:
        writer.close()


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before it closed the connection; fails if it is still open after
    ``GENEROUS_S``."""
    received = b""
    try:
        async with asyncio.timeout(GENEROUS_S):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"still open after {GENEROUS_S} s; it had sent {received!r}")
    return received


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(GENEROUS_S):
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        status_line, *lines = head.strip().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body
