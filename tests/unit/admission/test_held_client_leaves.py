"""A client that goes away while its request is held: what the operator's metrics show."""

from __future__ import annotations

import asyncio

import pytest
from tests.unit.admission.helpers import IDLE, SILVER, endpoint, request
from tests.unit.admission.test_adapter import BUSY, build, warm


async def test_a_hold_the_client_left_is_counted_with_its_wait() -> None:
    """Each hold ends in the wait histogram as admitted or rejected; one whose client left
    ended nowhere, so clients giving up in the queue were invisible to the operator."""
    admission, source, clock = build({"pool/0": IDLE})
    await warm(admission, clock)
    source.current = {"pool/0": BUSY}
    task = asyncio.create_task(admission.admit(request("held"), SILVER, [endpoint()]))
    await source.waiting.wait()
    clock.now = 1.5
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    registry = admission.metrics.registry
    labels = {"tier": "silver", "outcome": "cancelled"}
    assert registry.get_sample_value("trunkline_admission_queue_wait_seconds_count", labels) == 1
    waited = registry.get_sample_value("trunkline_admission_queue_wait_seconds_sum", labels)
    assert waited == pytest.approx(0.5)
