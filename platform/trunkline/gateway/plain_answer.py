"""Finishing a plain (non-streamed) answer: read the engine's answer whole, judge it and meter
it once. An answer the engine aborted, one that is not JSON, an engine's 5xx or an engine set
up wrong is the gateway's upstream error (502); the engine's own refusals (a 400, a 429) reach
the client with their ``Retry-After``. A stream's counterpart is ``stream_relay.py``."""

from __future__ import annotations

import asyncio
import time

import httpx

from trunkline.errors import UpstreamError
from trunkline.gateway.engine_answers import AnswerTooLarge, read_usage, read_whole
from trunkline.gateway.errors import engine_error
from trunkline.gateway.meter import UsageMeter
from trunkline.gateway.reply import Reply
from trunkline.gateway.upstream import ABORTED, MISCONFIGURED

__all__ = ["finish_plain"]


async def finish_plain(
    response: httpx.Response,
    meter: UsageMeter,
    headers: dict[str, str],
    failure: str | None,
) -> Reply:
    try:
        payload = await read_whole(response)
    except AnswerTooLarge:
        meter.answer_too_large()
        raise
    except httpx.HTTPError as exc:
        meter.engine_failed(type(exc).__name__)
        meter.finish(502, "upstream_error")
        raise UpstreamError(
            "The model endpoint failed while answering.", reason="upstream_error"
        ) from exc
    except asyncio.CancelledError as exc:  # the client left, or the gateway stopped
        meter.cancelled(exc)
        raise
    finally:
        await response.aclose()
    meter.tally.first_byte = time.perf_counter()
    meter.first_byte()
    status = response.status_code
    if failure == ABORTED:  # by the last endpoint: the others were left
        meter.finish(502, "upstream_error")
        raise UpstreamError(
            "The model endpoint stopped before finishing the answer.", reason="upstream_error"
        )
    if status == 200 and not read_usage(payload, meter.tally):
        meter.engine_failed("not_json")
        meter.finish(502, "upstream_error")
        raise UpstreamError("The model endpoint's answer was not JSON.", reason="upstream_error")
    if status >= 500 or status in MISCONFIGURED:
        # The engine's own 5xx, or an engine set up wrong, is our upstream failure.
        meter.finish(502, "upstream_error")
        raise UpstreamError(
            f"The model endpoint answered HTTP {status}.",
            reason="upstream_error",
            extra={"headers": _retry_headers(response)},
        )
    if status != 200:
        meter.finish(status, "upstream_rejected")
        headers.update(_retry_headers(response))
        return Reply(status, engine_error(status, payload), None, headers)
    meter.finish(status, None)
    return Reply(status, payload, None, headers)


_RETRY_HEADERS = ("retry-after", "retry-after-ms")


def _retry_headers(response: httpx.Response) -> dict[str, str]:
    """When the engine (or what fronts it: llm-d's gateway sheds with 429) asked to be retried:
    its answer reaches the client, so does when to retry."""
    return {name: response.headers[name] for name in _RETRY_HEADERS if name in response.headers}
