"""The simulated vLLM server: a plain ASGI app speaking vLLM's OpenAI-compatible HTTP surface.

Routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``,
``POST /v1/embeddings``, ``GET /health``, ``GET /metrics``. Generation goes through an
:class:`~trunkline.engines.runner.AsyncEngine`; a client that disconnects mid-request has its
request aborted in the engine, freeing its batch slot and KV blocks, as vLLM does.
An engine that stopped answers as vLLM's dead engine core does: a stream's last event is an
error (code 500) before ``[DONE]``, other requests get a 500, and ``/health`` a 503.

The engine driver starts with the first request, on the loop serving it, so the app also works
under clients that send no lifespan events (``httpx.ASGITransport``); it stops at lifespan
shutdown or :meth:`SimApp.aclose` (``async with create_sim_app(...) as app``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from trunkline.engines.core import EngineCore
from trunkline.engines.events import RequestUsage, TokenEvent
from trunkline.engines.kv_publisher import ZmqKvEventPublisher
from trunkline.engines.metrics import METRICS_CONTENT_TYPE, EngineMetrics
from trunkline.engines.openai_requests import (
    ApiError,
    GenerateParams,
    ServedModel,
    parse_chat,
    parse_completion,
    parse_embeddings,
)
from trunkline.engines.openai_responses import (
    Answer,
    Reply,
    embeddings_body,
    logprobs_body,
    model_list_body,
)
from trunkline.engines.profiles import AcceleratorProfile
from trunkline.engines.runner import AsyncEngine, EngineClosedError, RequestStream
from trunkline.engines.tokens import answer_logprobs, detokenize, embed_tokens, logprob_seed
from trunkline.kit.asgi import unless_client_leaves

__all__ = ["SimApp", "create_sim_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_Handler = Callable[[bytes, Send, Receive], Awaitable[None]]

_JSON = b"application/json"
_SSE = b"text/event-stream; charset=utf-8"
_DONE = b"data: [DONE]\n\n"
_ENGINE_DEAD = ApiError(
    500,
    "EngineCore encountered an issue. See stack trace (above) for the root cause.",
    kind="InternalServerError",
)
"""What vLLM answers, plain or as a stream's last event, when its engine core has died."""
EMBEDDING_DIMENSIONS = 256


async def _respond(send: Send, status: int, body: bytes, content_type: bytes = _JSON) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send: Send, status: int, payload: object) -> None:
    await _respond(send, status, msgspec.json.encode(payload))


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client disconnected before sending its body")
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _decode(body: bytes) -> object:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"Invalid JSON in request body: {exc}") from None


class SimApp:
    """An ASGI app serving one simulated model; also an async context manager."""

    def __init__(
        self,
        *,
        model: str,
        profile: AcceleratorProfile,
        seed: int = 0,
        time_scale: float = 1.0,
        kv_events_endpoint: str | None = None,
        kv_replay_endpoint: str | None = None,
    ) -> None:
        self.model = model
        self.profile = profile
        self.created = int(time.time())
        # vLLM's --kv-events-config: the same ZMQ messages, topic kv@MODEL, and replays.
        self.kv_publisher = (
            ZmqKvEventPublisher(
                kv_events_endpoint, f"kv@{model}", replay_endpoint=kv_replay_endpoint
            )
            if kv_events_endpoint
            else None
        )
        self.core = EngineCore(profile, seed=seed, kv_event_sink=self.kv_publisher)
        self.metrics = EngineMetrics(self.core, model)
        self.engine = AsyncEngine(self.core, time_scale=time_scale, metrics=self.metrics)
        self._served = ServedModel(model, profile.max_model_len)
        self._routes: dict[str, tuple[str, _Handler]] = {
            "/v1/models": ("GET", self._models),
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/completions": ("POST", self._completions),
            "/v1/embeddings": ("POST", self._embeddings),
            "/health": ("GET", self._health),
            "/metrics": ("GET", self._metrics),
        }

    async def __aenter__(self) -> SimApp:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.engine.aclose()
        if self.kv_publisher is not None:
            self.kv_publisher.close()
            self.kv_publisher = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["path"].rstrip("/") or "/")
        if route is None:
            await _respond_json(send, 404, {"detail": "Not Found"})
            return
        method, handler = route
        if scope["method"] != method:
            await _respond_json(send, 405, {"detail": "Method Not Allowed"})
            return
        try:
            body = await _read_body(receive) if method == "POST" else b""
        except ConnectionError:
            return
        try:
            await handler(body, send, receive)
        except ApiError as error:
            await _respond_json(send, error.status, error.body())
        except EngineClosedError:  # before the response started: streams end on their own
            await _respond_json(send, _ENGINE_DEAD.status, _ENGINE_DEAD.body())

    # -- simple routes -----------------------------------------------------------------------

    async def _health(self, body: bytes, send: Send, receive: Receive) -> None:
        await _respond(send, 503 if self.engine.closed else 200, b"", b"text/plain")

    async def _metrics(self, body: bytes, send: Send, receive: Receive) -> None:
        await _respond(send, 200, self.metrics.render(), METRICS_CONTENT_TYPE.encode())

    async def _models(self, body: bytes, send: Send, receive: Receive) -> None:
        payload = model_list_body(self.model, self.created, self.profile.max_model_len)
        await _respond_json(send, 200, payload)

    async def _embeddings(self, body: bytes, send: Send, receive: Receive) -> None:
        params = parse_embeddings(_decode(body), self._served)
        vectors = [embed_tokens(tokens, EMBEDDING_DIMENSIONS) for tokens in params.inputs]
        prompt_tokens = sum(len(tokens) for tokens in params.inputs)
        payload = embeddings_body(
            self.model, int(time.time()), vectors, params.encoding_format, prompt_tokens
        )
        await _respond_json(send, 200, payload)

    # -- generation --------------------------------------------------------------------------

    async def _chat(self, body: bytes, send: Send, receive: Receive) -> None:
        params = parse_chat(_decode(body), self._served)
        await self._generate(params, Reply.new("chat", self.model, int(time.time())), send, receive)

    async def _completions(self, body: bytes, send: Send, receive: Receive) -> None:
        params = parse_completion(_decode(body), self._served)
        await self._generate(
            params, Reply.new("completion", self.model, int(time.time())), send, receive
        )

    async def _generate(
        self, params: GenerateParams, reply: Reply, send: Send, receive: Receive
    ) -> None:
        streams = self._submit(params)
        if params.stream:
            work = self._send_stream(streams, reply, params, send)
        else:
            work = self._send_full(streams, reply, params, send)
        try:
            await unless_client_leaves(work, receive)
        finally:  # the response is complete or the client went away: free the engine
            for stream in streams:
                stream.abort()

    def _submit(self, params: GenerateParams) -> list[RequestStream]:
        """One engine request per choice, as vLLM runs n > 1 and a list of prompts; the n
        answers of a prompt sample with seed, seed + 1, ... when a seed is given. One the
        engine refuses is vLLM's 400 (its serving code answers a ValueError so), the
        choices already queued withdrawn."""
        streams: list[RequestStream] = []
        try:
            for index, (prompt, max_tokens) in enumerate(params.answers()):
                seed = None if params.seed is None else params.seed + index % params.n
                stream = self.engine.submit(
                    prompt,
                    max_tokens,
                    cache_salt=params.cache_salt,
                    seed=seed,
                    ends_at_max=params.ends_at_max,
                    stop_texts=params.stop,
                    min_tokens=params.min_tokens,
                )
                streams.append(stream)
        except ValueError as exc:
            for queued in streams:
                queued.abort()
            raise ApiError(400, str(exc)) from None
        return streams

    async def _send_full(
        self, streams: list[RequestStream], reply: Reply, params: GenerateParams, send: Send
    ) -> None:
        seeds = _logprob_seeds(params)

        async def answer(index: int, stream: RequestStream) -> tuple[Answer, RequestUsage]:
            events = [event async for event in stream]
            last = events[-1]
            assert last.finish_reason is not None and last.usage is not None
            tokens = [event.token_id for event in events]
            logprobs = None
            if params.logprobs is not None:
                tokens_logprobs = answer_logprobs(seeds[index], tokens, params.logprobs)
                logprobs = logprobs_body(reply.kind, tokens_logprobs)
            last_chars = len(detokenize(tokens[-1:]))
            generated, stop_reason = params.cut_at_stop(detokenize(tokens), last_chars, len(tokens))
            text = params.answer_text(index, generated)
            return Answer(text, last.finish_reason, logprobs, stop_reason), last.usage

        done = await asyncio.gather(*(answer(i, s) for i, s in enumerate(streams)))
        body = reply.full([a for a, _ in done], _usage([u for _, u in done], params.n))
        await _respond_json(send, 200, body)

    async def _send_stream(
        self, streams: list[RequestStream], reply: Reply, params: GenerateParams, send: Send
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", _SSE), (b"cache-control", b"no-cache")],
            }
        )
        events: asyncio.Queue[tuple[int, TokenEvent | BaseException | None]] = asyncio.Queue()

        async def forward(index: int, stream: RequestStream) -> None:
            try:
                async for event in stream:
                    events.put_nowait((index, event))
            except Exception as exc:  # the engine closed or failed: the response ends with it
                events.put_nowait((index, exc))
            else:
                events.put_nowait((index, None))

        tasks = [asyncio.create_task(forward(i, s)) for i, s in enumerate(streams)]
        seeds = _logprob_seeds(params)
        choices = [
            _StreamedChoice(index, seeds[index] if seeds else b"", len(prompt))
            for index, (prompt, _max_tokens) in enumerate(params.answers())
        ]
        try:
            running = len(streams)
            while running:
                index, event = await events.get()
                if isinstance(event, EngineClosedError):  # vLLM's last words, then [DONE]
                    await _send_event(send, _ENGINE_DEAD.body())
                    break
                if isinstance(event, BaseException):
                    raise event
                if event is None:
                    running -= 1
                    continue
                for payload in choices[index].payloads(event, reply, params):
                    await _send_event(send, payload)
            finished = [choice.usage for choice in choices if choice.usage is not None]
            if params.include_usage and not running and len(finished) == len(streams):
                await _send_event(send, reply.usage_chunk(_usage(finished, params.n)))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await send({"type": "http.response.body", "body": _DONE})


@dataclasses.dataclass(slots=True)
class _StreamedChoice:
    """One choice of a stream: what it has sent so far."""

    index: int
    seed: bytes
    """What draws its made-up log-probabilities (empty when none were asked for)."""
    prompt_tokens: int
    tokens: int = 0
    characters: int = 0
    usage: RequestUsage | None = None
    generated: str = ""
    """With stop strings: its answer's text so far, of which ``shown`` characters were sent."""
    shown: int = 0

    def payloads(self, event: TokenEvent, reply: Reply, params: GenerateParams) -> list[Any]:
        """The SSE payloads of its next token."""
        text, stop_reason = self._next_text(event, params)
        if event.first:  # the echoed prompt leads the first chunk, as vLLM sends it
            text = params.answer_text(self.index, text)
        elif params.echo_only:
            text = ""
        logprobs = None
        if params.logprobs is not None:
            token = answer_logprobs(self.seed, (event.token_id,), params.logprobs, self.tokens)
            logprobs = logprobs_body(reply.kind, token, self.characters)
        self.tokens += 1
        self.characters += len(text)
        if event.usage is not None:
            self.usage = event.usage
        return reply.chunks(
            text,
            event.finish_reason,
            first=event.first,
            logprobs=logprobs,
            index=self.index,
            running=(self.prompt_tokens, self.tokens) if params.continuous_usage else None,
            stop_reason=stop_reason,
        )

    def _next_text(self, event: TokenEvent, params: GenerateParams) -> tuple[str, str | None]:
        """The answer's text to send with this token, and the stop string it met (if any).
        As vLLM, with stop strings it holds back the text that could begin one (the longest
        less a character) until the answer ends, and sends a stop string only when
        ``include_stop_str_in_output`` asks for it."""
        if not params.stop:
            return detokenize((event.token_id,)), None
        latest = detokenize((event.token_id,))
        self.generated += latest
        stop_reason = None
        if event.finished:
            ready, stop_reason = params.cut_at_stop(self.generated, len(latest), self.tokens + 1)
        else:
            ready = self.generated[: len(self.generated) - params.stop_held()]
        text = ready[self.shown :]
        self.shown += len(text)
        return text, stop_reason


def _logprob_seeds(params: GenerateParams) -> list[bytes]:
    """Per choice, what draws its made-up log-probabilities (its prompt); none unasked."""
    if params.logprobs is None:
        return []
    return [logprob_seed(prompt) for prompt, _max_tokens in params.answers()]


def _usage(usages: list[RequestUsage], n: int) -> RequestUsage:
    """One response's usage over its answers, as vLLM counts it: each prompt once (its first
    answer's prefill, cached tokens included), every answer's tokens."""
    firsts = usages[::n]
    return dataclasses.replace(
        usages[0],
        prompt_tokens=sum(u.prompt_tokens for u in firsts),
        cached_tokens=sum(u.cached_tokens for u in firsts),
        completion_tokens=sum(u.completion_tokens for u in usages),
    )


async def _send_event(send: Send, payload: object) -> None:
    data = b"data: " + msgspec.json.encode(payload) + b"\n\n"
    await send({"type": "http.response.body", "body": data, "more_body": True})


def create_sim_app(
    *,
    model: str,
    profile: AcceleratorProfile,
    seed: int = 0,
    time_scale: float = 1.0,
    kv_events_endpoint: str | None = None,
    kv_replay_endpoint: str | None = None,
) -> SimApp:
    """A simulated vLLM server for ``model`` on ``profile``; ``time_scale`` < 1 runs faster;
    ``kv_events_endpoint`` (``tcp://127.0.0.1:PORT``) publishes its KV events like vLLM, and
    ``kv_replay_endpoint`` answers requests to replay them."""
    return SimApp(
        model=model,
        profile=profile,
        seed=seed,
        time_scale=time_scale,
        kv_events_endpoint=kv_events_endpoint,
        kv_replay_endpoint=kv_replay_endpoint,
    )
