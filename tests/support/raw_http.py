"""HTTP/1.1 over a raw socket, for tests of what a server does with slow or stalled clients
(a late head, a late body, an answer read slowly): what it answers, and when it closes the
connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

__all__ = [
    "GENEROUS_S",
    "HeldResponse",
    "connect",
    "header_deadline_passed",
    "read_response",
    "read_slowly",
    "until_closed",
]

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


@contextlib.contextmanager
def read_slowly(port: int, request: bytes) -> Iterator[HeldResponse]:
    """``request`` sent to 127.0.0.1:``port`` by a client that reads the answer's first bytes
    and then nothing: with a receive buffer of 4 kB, a body of more than a few hundred kB
    (what the server's socket and uvicorn buffer) keeps the response in flight."""
    with socket.socket() as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.settimeout(30)
        conn.connect(("127.0.0.1", port))
        conn.sendall(request)
        yield HeldResponse(conn, conn.recv(1024))


@dataclass
class HeldResponse:
    conn: socket.socket
    head: bytes
    """The answer's first bytes (its status line and some headers)."""

    def until_closed(self) -> bytes:
        """The whole answer, read until the server closes the connection (a read waiting 30 s
        fails)."""
        received = self.head
        while chunk := self.conn.recv(65536):
            received += chunk
        return received
