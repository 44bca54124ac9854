"""Held requests and the health of their endpoints: an endpoint ejected while a request waits
for it is no longer where admission sends it (the engine-state source scripted at the
boundary)."""

from __future__ import annotations

import asyncio

from tests.unit.admission.helpers import IDLE, SILVER, endpoint, request
from tests.unit.admission.test_adapter import BUSY, build, warm


async def test_a_request_held_while_its_endpoint_is_ejected_is_not_sent_there() -> None:
    """An ejected engine stops being scraped and its requests move elsewhere, so its load
    looks light: held requests were admitted onto it, first in their order, and waited on it
    or failed there."""
    admission, source, clock = build({"pool/0": IDLE, "pool/1": IDLE})
    await warm(admission, clock)
    source.current = {"pool/0": BUSY, "pool/1": BUSY}
    ranked = [endpoint("pool/0"), endpoint("pool/1")]
    task = asyncio.create_task(admission.admit(request("held"), SILVER, ranked))
    await source.waiting.wait()
    source.ejected.add("pool/0")
    clock.now = 1.1
    await source.publish({"pool/0": IDLE, "pool/1": BUSY})
    for _ in range(10):
        await asyncio.sleep(0)  # the held request woke to the change and was judged
    assert not task.done()  # still held: the only endpoint with room is out of service
    clock.now = 1.2
    await source.publish({"pool/0": IDLE, "pool/1": IDLE})
    result = await task
    assert result.order[0] == 1


async def test_a_request_held_while_every_endpoint_is_ejected_is_judged_as_routing_would() -> None:
    """Routing tries every endpoint when all are ejected (fail open); so does a held request."""
    admission, source, clock = build({"pool/0": IDLE, "pool/1": IDLE})
    await warm(admission, clock)
    source.current = {"pool/0": BUSY, "pool/1": BUSY}
    ranked = [endpoint("pool/0"), endpoint("pool/1")]
    task = asyncio.create_task(admission.admit(request("held"), SILVER, ranked))
    await source.waiting.wait()
    source.ejected.update({"pool/0", "pool/1"})
    clock.now = 1.1
    await source.publish({"pool/0": BUSY, "pool/1": IDLE})
    result = await task
    assert result.order[0] == 1
