"""Talk to engines: open an upstream call with failover before the first byte (reporting each
outcome to the engines' health), relay streams event by event without buffering, and read usage
on the way through."""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
import msgspec

from trunkline.errors import UpstreamUnavailable
from trunkline.gateway.endpoints import EngineState, Flight
from trunkline.gateway.errors import engine_error
from trunkline.gateway.routing import Candidate

log = logging.getLogger(__name__)

_FAILOVER_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)
"""Errors after which the engine cannot have started on the request, or dropped it unanswered:
a connection reset before the response head means the engine is gone (vLLM also aborts a
request whose connection closed), so sending it elsewhere cannot run it twice."""
_DONE_EVENT = b"data: [DONE]"
_DONE = _DONE_EVENT + b"\n\n"
_ABORTED = (b'"finish_reason":"abort"', b'"finish_reason": "abort"')
_FINISH_REASON = b'"finish_reason":'
_FINISH_REASON_LEN = len(_FINISH_REASON)
T = TypeVar("T")
ABORTED = "aborted"
"""``Opened.failure`` of a plain answer the engine aborted (:func:`aborted`)."""


class EndpointEjected(httpx.ReadTimeout):
    """The endpoint was ejected while a request waited on it for its first byte."""


class NotAStream(httpx.RemoteProtocolError):
    """A streamed request was answered 200 without an event stream: what fronts the engine sent
    a whole answer or an error page. Nothing has reached the client, so the next endpoint is
    tried, as when an engine fails before its first event."""


class EngineGaveUp(httpx.HTTPError):
    """The engine ended a stream unfinished: an event said it aborted or failed the request,
    or ``[DONE]`` came before any ``finish_reason``."""


def aborted(answer: bytes) -> bool:
    """Whether a plain answer says the engine aborted it (``finish_reason: "abort"``).

    vLLM ends what it runs that way when it stops on SIGTERM (docs/real-vllm.md), and a client
    that left reads no answer: an aborted answer is the engine's failure, never a finish. A
    quote inside generated text is escaped, so no text matches."""
    return _ABORTED[0] in answer or _ABORTED[1] in answer


async def unless_ejected(flight: Flight, waiting: Awaitable[T]) -> T:
    """Await what a request waits on before its first byte (the response head, a stream's
    first event); given up, raising :class:`EndpointEjected`, if the flight's endpoint is
    ejected meanwhile (``Flight.on_ejected``). Nothing reached the client yet, so the request can
    move to the next endpoint instead of waiting on an engine that stopped; closing the
    connection makes vLLM abort whatever it had started of it."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(None) as abandoned:

            def abandon() -> None:
                if abandoned.when() is None:  # once
                    abandoned.reschedule(loop.time())

            flight.on_ejected = abandon
            try:
                return await waiting
            finally:
                flight.on_ejected = None
    except TimeoutError as exc:
        raise EndpointEjected("endpoint ejected before the first byte") from exc


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


class _ErrorInfo(msgspec.Struct):
    code: int | str | None = None


class _ErrorEvent(msgspec.Struct):
    error: _ErrorInfo


_error_event_decoder = msgspec.json.Decoder(_ErrorEvent)


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
    finished: bool = False
    """A stream's event had a ``finish_reason`` (or an error blaming the request): the engine
    ended the answer, rather than gave it up."""

    def take_usage(self, usage: _Usage) -> None:
        self.usage_seen = True
        self.prompt_tokens = usage.prompt_tokens
        self.completion_tokens = usage.completion_tokens or 0
        details = usage.prompt_tokens_details
        cached = (details.cached_tokens or 0) if details else 0
        self.cached_tokens = min(max(cached, 0), self.prompt_tokens)  # an engine's miscount

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_byte is None else (self.first_byte - self.started) * 1000


@dataclass(frozen=True, slots=True)
class Opened:
    """The upstream call that answered: where it went, its response, its in-flight record."""

    index: int
    """Position of ``candidate`` in the list tried."""
    candidate: Candidate
    response: httpx.Response
    flight: Flight
    failure: str | None = None
    """Why the answer is the engine's failure (``HTTP 5xx``, ``aborted``): the last candidate's
    is returned all the same, for the caller to answer the client."""


async def open_upstream(
    client: httpx.AsyncClient,
    candidates: Sequence[Candidate],
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    engines: EngineState,
    prefill_tokens: Sequence[int] = (),
    retry_read_errors: bool = False,
    streamed: bool = True,
    attempting: Callable[[Candidate], None] | None = None,
) -> Opened:
    """Send to the first candidate that answers; fail over only before any byte was read.

    Fails over on a connection that could not be made or was dropped or reset before the
    response head (a plain request's: before its whole answer, its first byte for the client),
    on the endpoint's ejection while that is awaited (an engine that stopped answers no one;
    :func:`unless_ejected`), and on a 5xx answer, one in ``MISCONFIGURED``, a 429 (load shed:
    not counted against the endpoint) or a plain answer the engine aborted (see
    :func:`aborted`) while another candidate remains. A read timeout before
    the response head is retried only with ``retry_read_errors`` (streams: vLLM sends the head
    at once, so silence means a stuck engine, and it counts against the endpoint; a plain
    request may still be generating: sending it again would run it twice, and a long answer is
    no fault of the engine's). Each outcome goes to ``engines`` for health (but a streamed 200's:
    the caller reports it when the stream ended, whole or not), and each
    attempt is accounted in flight there until it ends (``streamed``: whether its first byte
    will be its first token), with ``prefill_tokens[i]`` for ``candidates[i]``: the prompt
    tokens it will likely prefill (0 when not given). ``attempting`` hears of each candidate
    as the request is sent to it.
    """
    reasons = []
    last = len(candidates) - 1
    shed = False
    for index, candidate in enumerate(candidates):
        endpoint = candidate.endpoint
        if index and _ejected_meanwhile(engines, candidates, index):
            reasons.append(f"{endpoint.url}: ejected")
            continue
        tokens = prefill_tokens[index] if index < len(prefill_tokens) else 0
        flight = engines.sent(endpoint.id, tokens, streamed=streamed)
        url = _upstream_url(endpoint.url, path)
        if attempting is not None:
            attempting(candidate)
        try:
            sending = _send(client, url, body, headers, whole=not streamed)
            response = await unless_ejected(flight, sending)
        except EndpointEjected:
            engines.ended(flight)
            reasons.append(f"{endpoint.url}: ejected")
            log.warning("endpoint ejected while awaited", extra={"endpoint": endpoint.url})
            continue
        except _FAILOVER_ERRORS as exc:
            engines.ended(flight)
            if not isinstance(exc, httpx.PoolTimeout):  # our own pool, not the engine's fault
                engines.failed(endpoint.id, type(exc).__name__)
            reasons.append(f"{endpoint.url}: {type(exc).__name__}")
            log.warning(
                "endpoint did not take the request",
                extra={"endpoint": endpoint.url, "error": f"{type(exc).__name__}: {exc}"},
            )
            continue
        except httpx.TimeoutException as exc:
            engines.ended(flight)
            if not retry_read_errors:  # a long generation, as likely as a stuck engine
                raise
            engines.failed(endpoint.id, type(exc).__name__)
            reasons.append(f"{endpoint.url}: {type(exc).__name__}")
            log.warning(
                "endpoint went silent before answering",
                extra={"endpoint": endpoint.url, "error": type(exc).__name__},
            )
            continue
        except BaseException:
            engines.ended(flight)
            raise
        failure = _failure(response, streamed)
        if failure is not None:
            shedding = response.status_code == SHEDDING
            if not shedding:
                engines.failed(endpoint.id, failure)
            # One more endpoint after a 429, not every one: a pool shedding load as a whole
            # would otherwise take each request once per endpoint.
            if index < last and not (shedding and shed):
                shed = shed or shedding
                engines.ended(flight)
                await response.aclose()
                reasons.append(f"{endpoint.url}: {failure}")
                continue
        elif response.status_code != 200 or not streamed:
            # A stream's head says nothing yet: it succeeds once whole (or fails on the way).
            engines.succeeded(endpoint.id)
        return Opened(index, candidate, response, flight, failure)
    raise UpstreamUnavailable(
        "No model endpoint could take the request; try again shortly.",
        reason="upstream_unavailable",
        extra={"attempts": reasons},
    )


def _ejected_meanwhile(engines: EngineState, candidates: Sequence[Candidate], index: int) -> bool:
    """Whether the failover candidate at ``index`` was ejected since the request was routed
    (while it waited on an earlier one) and a later one is still in service: a stopped engine
    would hold the request as the first one did. When every one left is ejected, each is
    tried all the same, as routing does (fail open)."""
    if engines.routable(candidates[index].endpoint.id):
        return False
    return any(engines.routable(c.endpoint.id) for c in candidates[index + 1 :])


_STALE_CONNECTION_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
"""What a request meets, before any response, on a pooled keep-alive connection the engine
closed as it was reused: vLLM's server closes connections idle for 5 s, and httpx keeps them 5 s
too. Seen against a live vLLM in the failover test (``ReadError`` on the replica that stayed up,
a 503 when it was the last endpoint left). Sent once more on a new connection before it counts
against the endpoint or moves on; an engine that is gone refuses the new connection."""


async def _send(
    client: httpx.AsyncClient, url: httpx.URL, body: bytes, headers: dict[str, str], *,
    whole: bool,
) -> httpx.Response:  # fmt: skip
    """The engine's response; with ``whole``, a 200's body read too (what a plain request waits
    for: vLLM sends it at once, complete, after the head)."""

    def post() -> Awaitable[httpx.Response]:
        request = client.build_request("POST", url, content=body, headers=headers)
        return client.send(request, stream=True)

    try:
        response = await post()
    except _STALE_CONNECTION_ERRORS as exc:
        log.info("connection closed under the request; sending it once more", extra={
            "endpoint": str(url), "error": type(exc).__name__})  # fmt: skip
        response = await post()
    if whole and response.status_code == 200:
        try:
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
    return response


MISCONFIGURED = frozenset({401, 403, 404, 405})
"""What an engine answers to a request it was set up not to take: a key the gateway does not
send (vLLM's ``--api-key``), a served model name or path it does not serve. The endpoint's
fault, not the request's: it counts against the endpoint, the next one is tried, and the
client never gets these statuses as if about its own key or model."""
SHEDDING = 429
"""What an engine, or llm-d's gateway in front of it, answers when it sheds load: the next
endpoint is tried (the request did not run), but it is no failure to eject the engine for."""


def _failure(response: httpx.Response, streamed: bool) -> str | None:
    """Why an engine's answer is not the request's to keep (a 5xx, a status in
    ``MISCONFIGURED``, load shed, a plain answer it aborted), or None."""
    status = response.status_code
    if status >= 500 or status in MISCONFIGURED or status == SHEDDING:
        return f"HTTP {status}"
    if not streamed and status == 200 and aborted(response.content):
        return ABORTED
    return None


@functools.lru_cache(maxsize=4096)
def _upstream_url(base: str, path: str) -> httpx.URL:
    """An engine's URL for ``path``, parsed once: httpx copies a parsed URL for a fraction
    of what parsing the string takes on every request."""
    return httpx.URL(base + path)


def read_usage(body: bytes, tally: Tally) -> bool:
    """Take the usage block of a non-streamed JSON response, if it has one; False when the body
    is not a JSON object at all (not an engine's answer: an HTML page of what fronts it)."""
    try:
        parsed = _usage_decoder.decode(body)
    except msgspec.ValidationError:  # JSON, but its usage is not vLLM's: an answer all the same
        return _is_json_object(body)
    except msgspec.DecodeError:
        return False
    if parsed.usage is not None:
        tally.take_usage(parsed.usage)
    return True


def _is_json_object(body: bytes) -> bool:
    try:
        return isinstance(msgspec.json.decode(body), dict)
    except msgspec.DecodeError:
        return False


def is_event_stream(response: httpx.Response) -> bool:
    """Whether ``response`` is the server-sent events a streamed request must get (vLLM's
    ``text/event-stream``), not a whole answer or an error page sent with 200."""
    kind: str = response.headers.get("content-type", "")
    return kind.split(";")[0].strip().lower() == "text/event-stream"


async def relay_events(
    response: httpx.Response, tally: Tally, *, keep_usage_chunk: bool
) -> AsyncIterator[bytes]:
    """Yield whole SSE events as they arrive; note usage; drop the usage-only chunk
    when the client did not ask for it. Raises httpx errors if the engine dies, and
    :class:`EngineGaveUp` where it ends the stream unfinished (what came before still goes
    out): vLLM stopping on SIGTERM ends what it runs with ``finish_reason: "abort"``, an error
    event (its engine core died) or ``[DONE]`` alone (docs/real-vllm.md); so is a stream
    closed with neither a finish nor ``[DONE]``. A usage-only chunk
    goes out with what follows it, so a stream that ends unfinished before its first token
    has sent nothing yet."""
    frames, held = _Frames(), b""
    async for piece in response.aiter_raw():
        if tally.first_byte is None:
            tally.first_byte = time.perf_counter()
        events = frames.feed(piece)
        if not events:
            continue
        out = bytearray()
        for event in events:
            verdict = _verdict(event, tally, keep_usage_chunk)
            if verdict is _REFUSED:
                event, verdict = _in_openai_shape(event), _SEND
            if verdict is _SEND:
                if held:
                    out += held
                    held = b""
                out += event
                out += b"\n\n"
            elif verdict is _HOLD:
                held += event + b"\n\n"
            elif verdict is _GAVE_UP:
                if out:
                    yield bytes(out)
                raise EngineGaveUp("the engine ended the stream unfinished")
        if out:
            yield bytes(out)
    rest = frames.rest()
    if not tally.finished and not _finishes(rest, tally):
        # Closed without a finish or [DONE] (a proxy ending its body where the engine broke
        # off): unfinished as [DONE] alone is, not an answer that came whole.
        raise EngineGaveUp("the engine's stream ended unfinished")
    if held or rest.strip():
        yield held + rest


def _finishes(tail: bytes, tally: Tally) -> bool:
    """Whether the stream's last bytes, an event its end cut short of its blank line, finish
    it (noted on ``tally``)."""
    event = tail.strip()
    return bool(event) and _verdict(event, tally, True) is not _GAVE_UP and tally.finished


class _Frames:
    """Whole SSE events cut from the pieces a stream arrives in, each byte joined and searched
    for the blank line that ends its event once: the piece holding an event's end joins those
    before it. An event arriving in many pieces was searched and copied again at each (vLLM's
    first event of a completion streamed with ``echo`` and ``logprobs`` carries the whole
    prompt's log-probabilities: 16 MB in 64 kB pieces held the event loop 2-6 s)."""

    __slots__ = ("_newline", "_pending")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._newline = False
        """The pending bytes end with a newline (an event's end may span two pieces)."""

    def feed(self, piece: bytes) -> list[bytes]:
        """The events ``piece`` ends (none while an event is still arriving)."""
        if b"\n\n" not in piece and not (self._newline and piece[:1] == b"\n"):
            if piece:
                self._pending.append(piece)
                self._newline = piece[-1:] == b"\n"
            return []
        self._pending.append(piece)
        *events, rest = b"".join(self._pending).split(b"\n\n")
        self._pending = [rest] if rest else []
        self._newline = rest[-1:] == b"\n"
        return events

    def rest(self) -> bytes:
        """What came after the last whole event."""
        return b"".join(self._pending)


class _Verdict(enum.Enum):
    SEND = enum.auto()
    HOLD = enum.auto()
    """Sent with the next event sent: if the stream turns out unfinished, it never is."""
    DROP = enum.auto()
    GAVE_UP = enum.auto()
    REFUSED = enum.auto()
    """The engine's error event blaming the request (a 4xx): sent, in OpenAI's shape."""


_SEND, _HOLD, _GAVE_UP, _REFUSED = _Verdict.SEND, _Verdict.HOLD, _Verdict.GAVE_UP, _Verdict.REFUSED


def _verdict(event: bytes, tally: Tally, keep_usage_chunk: bool) -> _Verdict:
    """What to do with one event (noting its usage and finish on ``tally``)."""
    if event == _DONE_EVENT:
        return _Verdict.SEND if tally.finished else _Verdict.GAVE_UP
    if not event.startswith(b"data: {"):
        return _Verdict.SEND
    tally.chunks += 1
    at = event.rfind(_FINISH_REASON)  # from the end, where vLLM writes it
    if at >= 0:
        at += _FINISH_REASON_LEN
        if not event.startswith(b"null", at):  # most are (written without a space)
            reason = _finish_reason(event, at)
            if reason == b"abort":
                return _Verdict.GAVE_UP
            tally.finished = tally.finished or reason is not None
    elif event.startswith(b'data: {"error"'):
        if _refusal_status(event) is None:
            return _Verdict.GAVE_UP
        tally.finished = True  # by the request's fault: the client reads why
        return _Verdict.REFUSED
    if b'"usage":{' not in event and b'"usage": {' not in event:
        return _Verdict.SEND
    try:
        parsed = _usage_decoder.decode(event[6:])
    except msgspec.DecodeError:
        return _Verdict.SEND
    if parsed.usage is not None:
        tally.take_usage(parsed.usage)
        if not parsed.choices:
            return _Verdict.HOLD if keep_usage_chunk else _Verdict.DROP
    return _Verdict.SEND


def _finish_reason(event: bytes, at: int) -> bytes | None:
    """The ``finish_reason`` string whose value starts at ``at`` (``length``, ``abort``...),
    None if it is none. A quote inside generated text is escaped, so no text matches."""
    value = event[at : at + 24].lstrip()
    end = value.find(b'"', 1)
    return value[1:end] if value.startswith(b'"') and end > 0 else None


def _refusal_status(event: bytes) -> int | None:
    """The 4xx ``code`` of an error event blaming the request; None when it is the engine's
    failure: vLLM sends one (``"code": 500``) to the streams it runs when its engine core
    died."""
    try:
        code = _error_event_decoder.decode(event[6:]).error.code
    except msgspec.DecodeError:
        return None
    return code if isinstance(code, int) and 400 <= code < 500 else None


def _in_openai_shape(event: bytes) -> bytes:
    """An engine's error event blaming the request as OpenAI words one, as the engine's 4xx
    answers are (:func:`engine_error`): vLLM's ``"type": "BadRequestError"`` and integer
    ``code`` reached clients that read ``type`` and ``code`` as OpenAI's."""
    return b"data: " + engine_error(_refusal_status(event) or 400, event[6:])


def error_event(message: str, code: str, *, kind: str = "server_error") -> bytes:
    """The event that ends a stream in error (OpenAI's error shape), then ``[DONE]``."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return b"data: " + msgspec.json.encode(body) + b"\n\n" + _DONE
