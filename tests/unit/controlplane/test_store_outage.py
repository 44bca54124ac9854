"""After a call to the snapshot store failed, publishes leave their change to the check until
a call succeeds, or for ``hold_s`` (a process with no check running)."""

from __future__ import annotations

import pytest
import redis

from trunkline.apps.store_outage import StoreOutage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _fail(outage: StoreOutage, error: Exception) -> None:
    with pytest.raises(type(error)), outage.watch():
        raise error


def test_a_failed_call_is_suspected_until_one_succeeds() -> None:
    outage = StoreOutage(hold_s=10.0, clock=Clock())
    assert not outage.suspected()
    _fail(outage, redis.TimeoutError("Timeout reading from socket"))
    assert outage.suspected()
    with outage.watch():
        pass  # the store answered
    assert not outage.suspected()


def test_a_failure_is_suspected_for_hold_s_only() -> None:
    clock = Clock()
    outage = StoreOutage(hold_s=10.0, clock=clock)
    _fail(outage, redis.ConnectionError("refused"))
    clock.now += 9.9
    assert outage.suspected()
    clock.now += 0.2
    assert not outage.suspected()


def test_an_error_not_the_store_s_says_nothing_of_it() -> None:
    outage = StoreOutage(hold_s=10.0, clock=Clock())
    _fail(outage, RuntimeError("the database"))
    assert not outage.suspected()
    _fail(outage, redis.TimeoutError("frozen"))
    _fail(outage, RuntimeError("the database"))
    assert outage.suspected()


def test_an_outage_is_logged_when_it_starts_and_when_it_ends_once_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not once a write: a frozen Redis logged a warning per write (~165 in 10 s)."""
    outage = StoreOutage(hold_s=10.0, clock=Clock())
    with caplog.at_level("INFO", logger="trunkline.apps.store_outage"):
        for _ in range(5):
            _fail(outage, redis.TimeoutError("Timeout reading from socket"))
        for _ in range(3):
            with outage.watch():
                pass
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 2, said
    assert "failed a call (TimeoutError)" in said[0]
    assert "answers again" in said[1]


def test_what_waits_for_the_store_is_said_once_each_when_an_outage_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The control plane's publishes and quota usage reads share one Redis, and one outage:
    its start says what each does meanwhile (an app built twice over one runtime tells it
    twice)."""
    outage = StoreOutage(hold_s=10.0, clock=Clock())
    for _ in range(2):
        outage.also("the quota endpoints show no usage (usage: null)")
    with caplog.at_level("WARNING", logger="trunkline.apps.store_outage"):
        _fail(outage, redis.TimeoutError("Timeout reading from socket"))
    assert [record.getMessage() for record in caplog.records] == [
        "Redis failed a call (TimeoutError); until one answers, publishes after writes are "
        "left to the control plane's check, and the quota endpoints show no usage (usage: null)"
    ]
