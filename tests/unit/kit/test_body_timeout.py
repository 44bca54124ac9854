"""The request-body timeout: a body still arriving at the deadline is the app's error, counted;
one whole in time is read, and the connection is then watched for as long as the app likes; a
client leaving before its body is whole is the app's 499."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from trunkline.errors import ClientClosed, RequestTimeout
from trunkline.kit.body_timeout import BodyTimeout

SCOPE = {"type": "http", "method": "POST", "path": "/"}


def timeout(registry: CollectorRegistry, timeout_s: float) -> BodyTimeout:
    return BodyTimeout(timeout_s, lambda s: RequestTimeout(f"not within {s:g} s"), registry)


async def test_a_body_that_stalls_raises_the_apps_error_and_is_counted() -> None:
    registry = CollectorRegistry()
    stalled = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not stalled.is_set():
            stalled.set()
            return {"type": "http.request", "body": b"{", "more_body": True}
        await asyncio.Event().wait()  # the rest never comes
        raise AssertionError

    async def app(_scope: Any, receive: Any, _send: Any) -> None:
        while (await receive()).get("more_body"):
            pass

    with pytest.raises(RequestTimeout, match=r"not within 0\.05 s"):
        await timeout(registry, 0.05).wrap(app)(SCOPE, receive, None)  # type: ignore[arg-type]
    assert registry.get_sample_value("trunkline_body_timeouts_total") == 1


async def test_once_the_body_is_whole_waiting_for_a_disconnect_is_not_cut() -> None:
    registry = CollectorRegistry()
    left = asyncio.Event()
    parts = iter([{"type": "http.request", "body": b"{}", "more_body": False}])

    async def receive() -> dict[str, Any]:
        part = next(parts, None)
        if part is not None:
            return part
        await left.wait()  # the client leaves once the deadline has passed
        return {"type": "http.disconnect"}

    async def app(_scope: Any, receive: Any, _send: Any) -> None:
        assert (await receive())["body"] == b"{}"
        assert (await receive())["type"] == "http.disconnect"

    bounded = timeout(registry, 0.01).wrap(app)
    watching = asyncio.create_task(bounded(SCOPE, receive, None))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)  # well past the deadline, the app still waiting
    left.set()
    await watching
    assert registry.get_sample_value("trunkline_body_timeouts_total") == 0


@pytest.mark.parametrize("timeout_s", [None, 5.0])
async def test_a_client_leaving_mid_body_is_client_closed(timeout_s: float | None) -> None:
    """Not the framework's "client disconnected prematurely" (a 500, logged as a failure)."""
    registry = CollectorRegistry()
    parts = iter([{"type": "http.request", "body": b"{", "more_body": True}])

    async def receive() -> dict[str, Any]:
        return next(parts, {"type": "http.disconnect"})

    async def app(_scope: Any, receive: Any, _send: Any) -> None:
        while (await receive()).get("more_body"):
            pass

    bounded = BodyTimeout(timeout_s, RequestTimeout, registry).wrap(app)
    with pytest.raises(ClientClosed):
        await bounded(SCOPE, receive, None)  # type: ignore[arg-type]
    assert registry.get_sample_value("trunkline_body_timeouts_total") == 0
