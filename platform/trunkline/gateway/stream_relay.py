"""Relaying a stream from the engine to the client, event by event, once its first event came:
the engine failing, going silent or the key being revoked ends it with an error event, and
it is metered once however it ends."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import httpx

from trunkline.gateway.authn import expired
from trunkline.gateway.engine_answers import AnswerTooLarge, error_event
from trunkline.gateway.meter import CLIENT_CLOSED, UsageMeter
from trunkline.gateway.state import SnapshotHolder
from trunkline.snapshot import KeyEntry, Snapshot

__all__ = ["relay_stream"]

log = logging.getLogger(__name__)


async def relay_stream(
    response: httpx.Response,
    meter: UsageMeter,
    first: bytes,
    rest: AsyncIterator[bytes],
    *,
    holder: SnapshotHolder,
    idle_s: float,
    ejected_idle_s: float,
) -> AsyncIterator[bytes]:
    """A stream's events to the client, from its first: each as the engine sends it, ended
    with an error event when the engine fails, goes silent for ``idle_s`` (``ejected_idle_s``
    once its endpoint is ejected) or the key is revoked; metered once, however it ends."""
    status: int = CLIENT_CLOSED
    code: str | None = "client_closed"
    loop, limit = asyncio.get_running_loop(), idle_s
    flight, ejected = meter.flight, False
    key = meter.principal.key
    try:
        failure, message = None, ""
        try:
            # The timer runs only while the engine is awaited, never while the client is.
            async with asyncio.timeout(None) as idle:

                def endpoint_ejected() -> None:
                    nonlocal ejected, limit
                    ejected, limit = True, min(limit, ejected_idle_s)
                    deadline = idle.when()
                    # The engine is awaited now, and its silence not already timed out
                    # (an expiring timer cannot be rescheduled: the ejector would get the
                    # RuntimeError).
                    if deadline is not None and not idle.expired():
                        idle.reschedule(min(deadline, loop.time() + limit))

                if flight is not None:
                    flight.on_ejected = endpoint_ejected
                try:
                    if first:
                        yield first
                    while True:
                        idle.reschedule(loop.time() + limit)
                        chunk = await anext(rest, None)
                        idle.reschedule(None)
                        if chunk is None:
                            break
                        if _revoked(key, holder.current):
                            raise _KeyRevoked
                        yield chunk
                finally:
                    if flight is not None:  # before the timer ends with the block
                        flight.on_ejected = None
            status, code = 200, None
            meter.engine_answered()
        except _KeyRevoked:
            # A leaked key revoked mid-stream stops generating at the next snapshot, not
            # at the end of its longest answer. Metered as cancelled: what it streamed is
            # billed.
            log.info("stream ended: its API key was revoked", extra={"key_id": key.key_id})
            status, code = CLIENT_CLOSED, "key_revoked"
            yield error_event(
                "The API key of this request was revoked; the stream was ended.",
                "invalid_api_key",
                kind="invalid_request_error",
            )
        except AnswerTooLarge as exc:  # not the engine's failure: its health is not counted
            failure, message = type(exc).__name__, exc.message
        except httpx.HTTPError as exc:
            failure, message = type(exc).__name__, "The model endpoint failed mid-stream."
            meter.engine_failed(failure)
        except TimeoutError:
            # Not counted against the endpoint: an engine short of KV cache pauses the
            # streams it preempted, and ejecting it would pile its load on the others. A
            # stopped engine fails its scrapes, and those eject it; its silent streams
            # then end after the shorter ``ejected_stream_idle_s``.
            failure = "StreamStalled"
            sent = "was taken out of service and sent" if ejected else "sent"
            message = f"The model endpoint {sent} nothing for {limit:g} s mid-stream."
        if failure is not None:
            log.warning(
                "engine failed mid-stream",
                extra={
                    "endpoint": meter.endpoint_url,
                    "reason": failure,
                    "request_id": meter.request_id,
                    "tenant_id": meter.principal.tenant.id,
                },
            )
            status, code = 502, "upstream_error"
            yield error_event(message, "upstream_error")
    finally:
        await response.aclose()
        meter.finish(status, code)


class _KeyRevoked(Exception):
    """The stream's API key left the configuration (revoked) while it streamed."""


def _revoked(key: KeyEntry, snapshot: Snapshot) -> bool:
    """Whether ``key`` was revoked: gone from ``snapshot``, and not because it expired (an
    expired key leaves at the next publication too; a stream it began runs to its end)."""
    return key.key_id not in snapshot.keys and not expired(key, time.time())
