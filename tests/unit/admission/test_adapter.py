"""The gateway's async adapter, with a fake engine-state source at the boundary."""

from __future__ import annotations

import asyncio
import json

import pytest
from tests.unit.admission.helpers import BRONZE, FULL, IDLE, SILVER, endpoint, request

from trunkline.gateway.admission import (
    DECISION_HEADER,
    AdmissionMetrics,
    AdmissionOverloaded,
    AdmissionPolicy,
    AdmissionSloUnattainable,
    AsyncAdmission,
)
from trunkline.gateway.errors import encode_error
from trunkline.gateway.routing import EndpointLoad

BUSY = EndpointLoad(running=235.0, kv_usage=0.6)


class FakeLoads:
    """Loads set by the test; ``wait_changed`` returns when the test publishes new ones."""

    def __init__(self, loads: dict[str, EndpointLoad]) -> None:
        self.current = loads
        self.waiting = asyncio.Event()
        self._changed = asyncio.Event()
        self.changes = 0
        self.ejected: set[str] = set()

    def loads(self) -> dict[str, EndpointLoad]:
        return self.current

    def load(self, endpoint: str) -> EndpointLoad | None:
        return self.current.get(endpoint)

    def routable(self, endpoint: str) -> bool:
        return endpoint not in self.ejected

    def serves(self, endpoint: str) -> bool:
        return endpoint in self.current

    async def wait_changed(self, timeout: float) -> None:  # noqa: ASYNC109 (the protocol)
        self.waiting.set()
        await self._changed.wait()  # the test decides when time moves on
        self._changed.clear()

    async def publish(self, loads: dict[str, EndpointLoad]) -> None:
        self.current = loads
        self.changes += 1
        self.waiting.clear()
        self._changed.set()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def build(loads: dict[str, EndpointLoad]) -> tuple[AsyncAdmission, FakeLoads, Clock]:
    source, clock = FakeLoads(loads), Clock()
    return AsyncAdmission(AdmissionPolicy(), source, clock=clock), source, clock


def decisions(admission: AsyncAdmission, tier: str, outcome: str, reason: str = "none") -> float:
    value = admission.metrics.registry.get_sample_value(
        "trunkline_admission_decisions_total", {"tier": tier, "outcome": outcome, "reason": reason}
    )
    return value or 0.0


async def warm(admission: AsyncAdmission, clock: Clock, count: int = 20) -> None:
    for index in range(count):
        clock.now = index / count
        await admission.admit(request(f"w{index}"), SILVER, [endpoint()])
    clock.now = 1.0


async def test_an_admitted_request_tries_the_chosen_endpoint_first_and_says_so() -> None:
    admission, _, _ = build({"pool/0": FULL, "pool/1": IDLE})
    ranked = [endpoint("pool/0"), endpoint("pool/1")]
    result = await admission.admit(request(), SILVER, ranked)
    assert result.order == [1, 0]
    assert result.headers == {DECISION_HEADER: "admitted"}
    assert decisions(admission, "silver", "admitted") == 1


async def test_a_held_request_is_admitted_when_new_loads_free_an_engine() -> None:
    admission, source, clock = build({"pool/0": IDLE})
    await warm(admission, clock)
    source.current = {"pool/0": BUSY}
    task = asyncio.create_task(admission.admit(request("held"), SILVER, [endpoint()]))
    await source.waiting.wait()
    assert admission.policy.held() == 1
    clock.now = 1.25
    await source.publish({"pool/0": IDLE})
    result = await task
    assert result.order == [0]
    assert result.headers == {DECISION_HEADER: "admitted", "x-trunkline-admission-wait-ms": "250"}
    assert decisions(admission, "silver", "queued") == 1
    wait = admission.metrics.registry.get_sample_value(
        "trunkline_admission_queue_wait_seconds_sum", {"tier": "silver", "outcome": "admitted"}
    )
    assert wait == pytest.approx(0.25)


async def test_a_held_request_whose_deadline_can_no_longer_be_met_is_rejected_with_503() -> None:
    admission, source, clock = build({"pool/0": IDLE})
    await warm(admission, clock)
    source.current = {"pool/0": BUSY}
    task = asyncio.create_task(admission.admit(request("held"), SILVER, [endpoint()]))
    await source.waiting.wait()
    clock.now = 2.95  # silver's 2 s SLO ends at 3.0
    await source.publish({"pool/0": BUSY})
    with pytest.raises(AdmissionSloUnattainable) as caught:
        await task
    status, body = encode_error(caught.value)
    assert status == 503
    assert json.loads(body)["error"]["code"] == "deadline_exceeded"
    headers = caught.value.extra["headers"]
    assert headers[DECISION_HEADER] == "rejected;deadline_exceeded"
    assert int(headers["retry-after"]) >= 1 and int(headers["retry-after-ms"]) >= 1000
    assert admission.policy.held() == 0
    assert decisions(admission, "silver", "rejected", "deadline_exceeded") == 1


async def test_bronze_on_a_full_fleet_is_refused_at_once_with_429_and_retry_after() -> None:
    admission, _, _ = build({"pool/0": FULL})
    with pytest.raises(AdmissionOverloaded) as caught:
        await admission.admit(request(tier="bronze"), BRONZE, [endpoint()])
    status, body = encode_error(caught.value)
    error = json.loads(body)["error"]
    assert (status, error["type"], error["code"]) == (429, "rate_limit_error", "overloaded")
    assert "bronze" in error["message"]
    headers = caught.value.extra["headers"]
    assert headers[DECISION_HEADER] == "rejected;overloaded"
    retry_ms = int(headers["retry-after-ms"])
    assert 1000 <= retry_ms <= 30_000
    assert int(headers["retry-after"]) == -(-retry_ms // 1000)
    assert decisions(admission, "bronze", "rejected", "overloaded") == 1


async def test_a_client_that_goes_away_while_held_leaves_the_queue() -> None:
    admission, source, clock = build({"pool/0": IDLE})
    await warm(admission, clock)
    source.current = {"pool/0": BUSY}
    task = asyncio.create_task(admission.admit(request("held"), SILVER, [endpoint()]))
    await source.waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert admission.policy.held() == 0
    assert admission.metrics.registry.get_sample_value("trunkline_admission_held_requests") == 0


async def test_metrics_can_live_on_the_gateways_registry() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    admission = AsyncAdmission(
        AdmissionPolicy(), FakeLoads({}), metrics=AdmissionMetrics(registry), clock=Clock()
    )
    await admission.admit(request(), SILVER, [endpoint()])
    assert (
        registry.get_sample_value(
            "trunkline_admission_decisions_total",
            {"tier": "silver", "outcome": "admitted", "reason": "none"},
        )
        == 1
    )


async def test_held_requests_are_judged_once_per_change_of_the_loads_however_many_wake() -> None:
    """Each held request woken by a change polled the policy, which judges every held one: N
    held cost N polls of N requests at every scrape and every request's start and end (about
    3 ms a change with 34 held, measured), on the event loop every request shares."""
    admission, source, clock = build({"pool/0": IDLE, "pool/1": IDLE})
    await warm(admission, clock)
    ranked = [endpoint("pool/0"), endpoint("pool/1")]
    source.current = {"pool/0": BUSY, "pool/1": BUSY}
    held = [
        asyncio.create_task(admission.admit(request(f"held{n}", tenant=f"t{n}"), SILVER, ranked))
        for n in range(2)
    ]
    for _ in range(10):
        await asyncio.sleep(0)  # each is held and waits
    assert admission.policy.held() == 2
    polls = 0
    judge = admission.policy.poll

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal polls
        polls += 1
        return judge(*args, **kwargs)  # type: ignore[arg-type]

    admission.policy.poll = counted  # type: ignore[method-assign]
    for step in range(1, 4):
        clock.now = 1.0 + step * 0.01  # within the recheck interval: the change alone wakes them
        await source.publish({"pool/0": BUSY, "pool/1": BUSY})
        for _ in range(10):
            await asyncio.sleep(0)  # every held request woke and waits again
        assert polls == step
    assert admission.policy.held() == 2  # still held: each poll judged them both
    clock.now = 1.25
    await source.publish({"pool/0": IDLE, "pool/1": IDLE})
    results = await asyncio.gather(*held)
    assert all(result.decision.outcome == "admitted" for result in results)
