"""Talk to engines: open an upstream call with failover before the first byte, relay
streams event by event without buffering, and read usage on the way through."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import msgspec

from trunkline.errors import UpstreamUnavailable
from trunkline.gateway.routing import Candidate

log = logging.getLogger(__name__)

_RETRYABLE_STATUS = frozenset({502, 503})
_DONE = b"data: [DONE]\n\n"


class _Details(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: _Details | None = None


class _WithUsage(msgspec.Struct):
    usage: _Usage | None = None
    choices: list[msgspec.Raw] | None = None


_usage_decoder = msgspec.json.Decoder(_WithUsage)


@dataclass
class Tally:
    """What one request used, filled in as the response goes by."""

    started: float = field(default_factory=time.perf_counter)
    first_byte: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    chunks: int = 0
    usage_seen: bool = False

    def take_usage(self, usage: _Usage) -> None:
        self.usage_seen = True
        self.prompt_tokens = usage.prompt_tokens
        self.completion_tokens = usage.completion_tokens or 0
        details = usage.prompt_tokens_details
        self.cached_tokens = (details.cached_tokens or 0) if details else 0

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_byte is None else (self.first_byte - self.started) * 1000


async def open_upstream(
    client: httpx.AsyncClient,
    candidates: list[Candidate],
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> tuple[Candidate, httpx.Response]:
    """Send to the first candidate that answers; fail over only before any byte was read."""
    reasons = []
    for candidate in candidates:
        request = client.build_request(
            "POST", candidate.endpoint.url + path, content=body, headers=headers
        )
        try:
            response = await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            reasons.append(f"{candidate.endpoint.url}: {type(exc).__name__}")
            log.warning("endpoint refused the request", extra={"endpoint": candidate.endpoint.url})
            continue
        if response.status_code in _RETRYABLE_STATUS and candidate is not candidates[-1]:
            await response.aclose()
            reasons.append(f"{candidate.endpoint.url}: HTTP {response.status_code}")
            continue
        return candidate, response
    raise UpstreamUnavailable(
        "No model endpoint could take the request; try again shortly.",
        reason="upstream_unavailable",
        extra={"attempts": reasons},
    )


def read_usage(body: bytes, tally: Tally) -> None:
    """Take the usage block of a non-streamed JSON response, if it has one."""
    try:
        parsed = _usage_decoder.decode(body)
    except msgspec.DecodeError:
        return
    if parsed.usage is not None:
        tally.take_usage(parsed.usage)


async def relay_events(
    response: httpx.Response, tally: Tally, *, keep_usage_chunk: bool
) -> AsyncIterator[bytes]:
    """Yield whole SSE events as they arrive; note usage; drop the usage-only chunk
    when the client did not ask for it. Raises httpx errors if the engine dies."""
    buffer = b""
    async for piece in response.aiter_raw():
        if tally.first_byte is None:
            tally.first_byte = time.perf_counter()
        buffer += piece
        if b"\n\n" not in buffer:
            continue
        *events, buffer = buffer.split(b"\n\n")
        out = bytearray()
        for event in events:
            if _keep(event, tally, keep_usage_chunk):
                out += event + b"\n\n"
        if out:
            yield bytes(out)
    if buffer.strip():
        yield buffer


def _keep(event: bytes, tally: Tally, keep_usage_chunk: bool) -> bool:
    if not event.startswith(b"data: {"):
        return True
    tally.chunks += 1
    if b'"usage":{' not in event and b'"usage": {' not in event:
        return True
    try:
        parsed = _usage_decoder.decode(event[6:])
    except msgspec.DecodeError:
        return True
    if parsed.usage is not None:
        tally.take_usage(parsed.usage)
        if not keep_usage_chunk and not parsed.choices:
            return False
    return True


def error_event(message: str, code: str) -> bytes:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
    return b"data: " + msgspec.json.encode(body) + b"\n\n" + _DONE
