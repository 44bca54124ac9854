"""Requests through a gateway, kept as their clients saw them, and where the gateway sent them.

:class:`Client` sends ``/v1/completions`` requests (streamed or plain) to a served gateway and
keeps an :class:`Outcome` for each from the moment it is sent; :class:`UpstreamLog` is a
transport for the gateway's engine requests: real HTTP, noting which engine each prompt went to
first.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from support.vllm import ALIAS
from trunkline.apps.gateway import upstream_limits
from trunkline.settings import GatewaySettings

__all__ = ["Client", "Outcome", "UpstreamLog"]


@dataclass
class Outcome:
    """What a client saw of one request."""

    prompt: str
    streamed: bool
    max_tokens: int
    sent_at: float
    ended_at: float = math.inf
    status: int = 0
    request_id: str = ""
    tokens: int | None = None
    """``usage.completion_tokens`` of the answer."""
    finish_reason: str | None = None
    chunks: int = 0
    """Stream chunks with a choice in them."""
    error: dict[str, Any] | None = None
    """The error event of a stream, the error body of a plain answer, or the client's error
    (``transport``) where the connection to the gateway failed."""
    done: bool = False
    """A stream's ``data: [DONE]``."""

    @property
    def whole(self) -> bool:
        """Answered in full: every token asked for (vLLM's ``ignore_eos``), nothing failed."""
        return (
            self.status == 200
            and self.error is None
            and (self.tokens, self.finish_reason) == (self.max_tokens, "length")
            and (self.done or not self.streamed)
        )

    @property
    def cut_with_error_event(self) -> bool:
        """A stream that came part way, then ended with the gateway's error event."""
        return (
            self.streamed
            and self.status == 200
            and self.chunks > 0
            and (self.error or {}).get("code") == "upstream_error"
            and self.done
        )

    @property
    def refused_retryably(self) -> bool:
        """Answered with the gateway's OpenAI error for an engine that failed (502 or 503): a
        client may send it again."""
        code = (self.error or {}).get("code")
        return self.status in (502, 503) and code in ("upstream_error", "upstream_unavailable")


@dataclass
class Client:
    """Sends requests through the gateway; ``outcomes`` has every one, from when it was sent."""

    http: httpx.AsyncClient
    url: str
    api_key: str
    outcomes: list[Outcome] = field(default_factory=list)

    def sibling(self) -> Client:
        """Another client on the same connection pool, with outcomes of its own."""
        return Client(self.http, self.url, self.api_key)

    async def send(
        self,
        streamed: bool,
        max_tokens: int,
        *,
        prompt: str | None = None,
        first_chunk: asyncio.Event | None = None,
    ) -> Outcome:
        """One request (with a prompt of its own unless given); ``first_chunk`` is set when a
        stream's first chunk came."""
        sent_at = time.monotonic()
        outcome = Outcome(prompt or f"sent at {sent_at}", streamed, max_tokens, sent_at)
        self.outcomes.append(outcome)
        body = {
            "model": ALIAS,
            "prompt": outcome.prompt,
            "max_tokens": max_tokens,
            "ignore_eos": True,  # a random model's early EOS would cut answers short
        }
        try:
            if streamed:
                await self._stream(body, outcome, first_chunk or asyncio.Event())
            else:
                await self._plain(body, outcome)
        except httpx.TransportError as exc:  # no answer, or a cut one: kept, for the test to judge
            outcome.error = {"transport": repr(exc)}
        finally:
            outcome.ended_at = time.monotonic()
        return outcome

    async def _plain(self, body: dict[str, Any], outcome: Outcome) -> None:
        url = f"{self.url}/v1/completions"
        response = await self.http.post(url, json=body, headers=self._headers)
        outcome.status = response.status_code
        outcome.request_id = response.headers.get("x-request-id", "")
        answer = response.json()
        if response.status_code != 200:
            outcome.error = answer["error"]
            return
        outcome.tokens = answer["usage"]["completion_tokens"]
        outcome.finish_reason = answer["choices"][0]["finish_reason"]

    async def _stream(
        self, body: dict[str, Any], outcome: Outcome, first_chunk: asyncio.Event
    ) -> None:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        url = f"{self.url}/v1/completions"
        async with self.http.stream("POST", url, json=body, headers=self._headers) as response:
            outcome.status = response.status_code
            outcome.request_id = response.headers.get("x-request-id", "")
            if response.status_code != 200:
                outcome.error = json.loads(await response.aread())["error"]
                return
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    outcome.done = True
                elif line.startswith("data: "):
                    _take_chunk(json.loads(line[len("data: ") :]), outcome)
                    if outcome.chunks:
                        first_chunk.set()

    @property
    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}


def _take_chunk(chunk: dict[str, Any], outcome: Outcome) -> None:
    if "error" in chunk:
        outcome.error = chunk["error"]
        return
    if chunk.get("usage"):
        outcome.tokens = chunk["usage"]["completion_tokens"]
    for choice in chunk.get("choices", []):
        outcome.chunks += 1
        outcome.finish_reason = choice.get("finish_reason") or outcome.finish_reason


class UpstreamLog(httpx.AsyncBaseTransport):
    """Real HTTP to the engines (``create_gateway_app(transport=...)``), pooled as the gateway
    of ``settings`` pools it, noting the engine (base URL) each prompt was sent to first."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._http = httpx.AsyncHTTPTransport(limits=upstream_limits(settings))
        self.first_sent: dict[str, str] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content).get("prompt")
        if isinstance(prompt, str):
            url = request.url
            self.first_sent.setdefault(prompt, f"{url.scheme}://{url.host}:{url.port}")
        return await self._http.handle_async_request(request)

    async def aclose(self) -> None:
        await self._http.aclose()
