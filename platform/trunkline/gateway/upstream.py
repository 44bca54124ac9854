"""Open an engine call for a request: send it to the first endpoint that answers, failing over
to the next only before any byte was read (so nothing reached the client), and report each
outcome to the engines' health. What the answer says is read in ``engine_answers.py``."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import httpx

from trunkline.auth.secrets import without_password
from trunkline.errors import UpstreamUnavailable
from trunkline.gateway.endpoints import EngineState, Flight
from trunkline.gateway.engine_answers import read_whole
from trunkline.gateway.routing import Candidate

log = logging.getLogger(__name__)

_FAILOVER_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)
"""Errors after which the engine cannot have started on the request, or dropped it unanswered:
a connection reset before the response head means the engine is gone (vLLM also aborts a
request whose connection closed), so sending it elsewhere cannot run it twice."""
_ABORTED = (b'"finish_reason":"abort"', b'"finish_reason": "abort"')
T = TypeVar("T")
ABORTED = "aborted"
"""``Opened.failure`` of a plain answer the engine aborted (:func:`aborted`)."""


class EndpointEjected(httpx.ReadTimeout):
    """The endpoint was ejected while a request waited on it for its first byte."""


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
    :func:`aborted`) while another candidate remains; never on the gateway's own pool of
    connections staying full (``UpstreamUnavailable`` ``gateway_busy``). A read timeout before
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
            reasons.append(f"{endpoint.shown_url}: ejected")
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
            reasons.append(f"{endpoint.shown_url}: ejected")
            log.warning("endpoint ejected while awaited", extra={"endpoint": endpoint.shown_url})
            continue
        except httpx.PoolTimeout:
            engines.ended(flight)
            raise _pool_full() from None
        except _FAILOVER_ERRORS as exc:
            engines.ended(flight)
            engines.failed(endpoint.id, type(exc).__name__)
            reasons.append(f"{endpoint.shown_url}: {type(exc).__name__}")
            log.warning(
                "endpoint did not take the request",
                extra={"endpoint": endpoint.shown_url, "error": f"{type(exc).__name__}: {exc}"},
            )
            continue
        except httpx.TimeoutException as exc:
            engines.ended(flight)
            if not retry_read_errors:  # a long generation, as likely as a stuck engine
                raise
            engines.failed(endpoint.id, type(exc).__name__)
            reasons.append(f"{endpoint.shown_url}: {type(exc).__name__}")
            log.warning(
                "endpoint went silent before answering",
                extra={"endpoint": endpoint.shown_url, "error": type(exc).__name__},
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
                reasons.append(f"{endpoint.shown_url}: {failure}")
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


def _pool_full() -> UpstreamUnavailable:
    """Every connection of the gateway's pool to the engines stayed in use for the pool timeout
    (``__MAX_CONNECTIONS``, held by streams). Not the engine's fault, and not another endpoint's
    to take: the pool is one for them all, so the next would wait as long again (it did, once
    per endpoint, and then said no model endpoint could take the request, while they were
    idle)."""
    log.warning(
        "no connection to the engines came free within the pool timeout: every one of "
        "TRUNKLINE_GATEWAY__MAX_CONNECTIONS is in use (streams hold theirs to their end)"
    )
    return UpstreamUnavailable(
        "The gateway has all its connections to the model endpoints in use; try again shortly.",
        reason="gateway_busy",
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
            "endpoint": without_password(str(url)), "error": type(exc).__name__})  # fmt: skip
        response = await post()
    if whole and response.status_code == 200:
        try:
            await read_whole(response)
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
