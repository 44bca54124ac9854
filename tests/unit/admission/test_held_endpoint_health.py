"""Held requests and the health of their endpoints: an endpoint ejected while a request waits
for it is no longer where admission sends it (the engine-state source scripted at the
boundary)."""

from __future__ import annotations

import asyncio

import pytest
from tests.unit.admission.helpers import IDLE, SILVER, endpoint, request
from tests.unit.admission.test_adapter import BUSY, Clock, build, warm

from trunkline.gateway.admission import AdmissionPolicy, AdmissionSloUnattainable, AsyncAdmission
from trunkline.gateway.endpoints.scan import MetricsScan
from trunkline.gateway.endpoints.state import EngineState


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


async def test_over_the_gateways_engine_state_a_request_held_is_not_sent_to_an_ejected_engine() -> (
    None
):
    """The same over the gateway's own EngineState: an engine that restarted (its page shows
    nothing running) and then failed requests until ejected."""
    clock = Clock()
    engines = EngineState(clock=clock)
    engines.sync(["pool/0", "pool/1"])
    admission = AsyncAdmission(AdmissionPolicy(), engines, clock=clock, recheck_s=60.0)
    ranked = [endpoint("pool/0"), endpoint("pool/1")]
    for n in range(20):  # silver's recent dispatches on idle engines, so that it may be held
        clock.now = n / 20
        await admission.admit(request(f"w{n}"), SILVER, ranked)
    clock.now = 1.0
    busy = MetricsScan(running=235.0, kv_usage=0.6)
    engines.scraped("pool/0", busy, sent_at=1.0)
    engines.scraped("pool/1", busy, sent_at=1.0)
    task = asyncio.create_task(admission.admit(request("held"), SILVER, ranked))
    for _ in range(10):
        await asyncio.sleep(0)
    assert admission.policy.held() == 1
    clock.now = 1.1
    engines.scraped("pool/0", MetricsScan(), sent_at=1.1)  # restarted: nothing running
    for _ in range(3):
        engines.failed("pool/0", "ConnectError")
    assert not engines.routable("pool/0")
    for _ in range(10):
        await asyncio.sleep(0)  # the held request woke to each change and was judged
    assert not task.done()
    clock.now = 1.2
    engines.scraped("pool/1", MetricsScan(), sent_at=1.2)
    result = await task
    assert result.order[0] == 1


async def test_a_request_held_while_its_endpoint_leaves_the_configuration_is_not_sent_there() -> (
    None
):
    """An endpoint removed from the configuration while a request waited (a reload, a scale
    down) is no longer tracked, so its load stayed what it was when the request arrived: the
    held request was admitted onto it, an engine the gateway no longer serves."""
    admission, source, clock = build({"pool/0": IDLE, "pool/1": IDLE})
    await warm(admission, clock)
    source.current = {"pool/0": IDLE, "pool/1": BUSY}
    first = asyncio.create_task(admission.admit(request("a", "a"), SILVER, [endpoint("pool/1")]))
    await source.waiting.wait()
    ranked = [endpoint("pool/0"), endpoint("pool/1")]
    second = asyncio.create_task(admission.admit(request("b", "b"), SILVER, ranked))
    for _ in range(10):
        await asyncio.sleep(0)
    assert admission.policy.held() == 2  # the second waits its turn behind the first
    clock.now = 1.1
    await source.publish({"pool/1": IDLE})  # pool/0 left the configuration
    assert (await first).order == [0]
    assert (await second).order[0] == 1


async def test_a_held_request_is_not_sent_to_an_endpoint_removed_while_it_drains() -> None:
    """An endpoint that left the configuration while requests of this gateway were still on it
    stays tracked (and scraped) until they end: it counted as in service, and the request held
    for it was admitted onto an engine the gateway no longer serves, once it drained."""
    clock = Clock()
    engines = EngineState(clock=clock)
    engines.sync(["pool/0", "pool/1"])
    admission = AsyncAdmission(AdmissionPolicy(), engines, clock=clock, recheck_s=60.0)
    ranked = [endpoint("pool/0"), endpoint("pool/1")]
    for n in range(20):  # silver's recent dispatches on idle engines, so that it may be held
        clock.now = n / 20
        await admission.admit(request(f"w{n}"), SILVER, ranked)
    clock.now = 1.0
    busy = MetricsScan(running=235.0, kv_usage=0.6)
    engines.scraped("pool/0", busy, sent_at=1.0)
    engines.scraped("pool/1", busy, sent_at=1.0)
    still_on_it = engines.sent("pool/0", 1000)
    task = asyncio.create_task(admission.admit(request("held"), SILVER, ranked))
    for _ in range(10):
        await asyncio.sleep(0)
    assert admission.policy.held() == 1
    clock.now = 1.1
    engines.sync(["pool/1"])  # scaled down: pool/0 drains its one request
    engines.first_byte(still_on_it)
    engines.scraped("pool/0", MetricsScan(running=1.0), sent_at=1.1)
    for _ in range(10):
        await asyncio.sleep(0)  # the held request woke to each change and was judged
    assert not task.done()
    clock.now = 1.2
    engines.scraped("pool/1", MetricsScan(), sent_at=1.2)
    result = await task
    assert result.order[0] == 1


async def test_a_request_held_while_every_endpoint_of_its_ranking_leaves_is_refused_at_once() -> (
    None
):
    """Failing open when every endpoint is out is for ejections (routing tries them all); an
    endpoint that left the configuration is not routed to again. A request held while all of
    its ranking left was judged on their loads as of its arrival and admitted onto an engine
    the gateway no longer serves. Now it is refused, to be retried on today's endpoints."""
    admission, source, clock = build({"pool/0": IDLE, "pool/1": IDLE})
    await warm(admission, clock)
    source.current = {"pool/0": IDLE, "pool/1": BUSY}
    first = asyncio.create_task(admission.admit(request("a", "a"), SILVER, [endpoint("pool/1")]))
    await source.waiting.wait()
    second = asyncio.create_task(admission.admit(request("b", "b"), SILVER, [endpoint("pool/0")]))
    for _ in range(10):
        await asyncio.sleep(0)
    assert admission.policy.held() == 2  # the second waits its turn behind the first
    clock.now = 1.1
    await source.publish({"pool/1": IDLE})  # pool/0 left the configuration
    assert (await first).order == [0]
    with pytest.raises(AdmissionSloUnattainable) as refused:
        await second
    assert refused.value.extra["headers"]["retry-after"] == "1"


async def test_a_request_held_for_an_endpoint_not_tracked_yet_is_served_there() -> None:
    """Engine state follows a new configuration at its next scrape tick: an endpoint routing
    took from it may not be tracked yet. It has not left the configuration, so a request held
    for it is not refused as if it had."""
    clock = Clock()
    engines = EngineState(clock=clock)
    engines.sync(["pool/0"])
    admission = AsyncAdmission(AdmissionPolicy(), engines, clock=clock, recheck_s=60.0)
    for n in range(20):  # silver's recent dispatches on idle engines, so that it may be held
        clock.now = n / 20
        await admission.admit(request(f"w{n}"), SILVER, [endpoint("pool/0")])
    clock.now = 1.0
    engines.scraped("pool/0", MetricsScan(running=235.0, kv_usage=0.6), sent_at=1.0)
    first = asyncio.create_task(admission.admit(request("a", "a"), SILVER, [endpoint("pool/0")]))
    second = asyncio.create_task(admission.admit(request("b", "b"), SILVER, [endpoint("pool/1")]))
    for _ in range(10):
        await asyncio.sleep(0)
    assert admission.policy.held() == 2  # the second waits its turn behind the first
    clock.now = 1.1
    engines.scraped("pool/0", MetricsScan(), sent_at=1.1)
    assert (await first).order == [0]
    assert (await second).order == [0]


async def test_a_request_held_for_an_endpoint_back_in_the_configuration_is_served_there() -> None:
    """An endpoint removed from the configuration and back in it (disabled, enabled again)
    still counted as gone until engine state's next scrape tick: a request routing sent to it
    alone was refused with 503, that engine in service."""
    clock = Clock()
    engines = EngineState(clock=clock)
    configuration = {"pool/0", "pool/1"}
    engines.in_snapshot = configuration.__contains__  # as the engine monitor tells it
    engines.sync(configuration)
    configuration.discard("pool/1")
    engines.sync(configuration)
    configuration.add("pool/1")  # back, before the next tick syncs engine state
    admission = AsyncAdmission(AdmissionPolicy(), engines, clock=clock, recheck_s=60.0)
    for n in range(20):  # silver's recent dispatches on idle engines, so that it may be held
        clock.now = n / 20
        await admission.admit(request(f"w{n}"), SILVER, [endpoint("pool/0")])
    clock.now = 1.0
    engines.scraped("pool/0", MetricsScan(running=235.0, kv_usage=0.6), sent_at=1.0)
    first = asyncio.create_task(admission.admit(request("a", "a"), SILVER, [endpoint("pool/0")]))
    second = asyncio.create_task(admission.admit(request("b", "b"), SILVER, [endpoint("pool/1")]))
    for _ in range(10):
        await asyncio.sleep(0)
    assert admission.policy.held() == 2  # the second waits its turn behind the first
    clock.now = 1.1
    engines.scraped("pool/0", MetricsScan(), sent_at=1.1)
    assert (await first).order == [0]
    assert (await second).order == [0]
