"""The gateway's snapshot holder keeps serving its snapshot while the store is away, and says
so once, not once per poll."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from trunkline.gateway.health_metrics import GatewayHealthCollector
from trunkline.gateway.state import SnapshotHolder
from trunkline.snapshot import InMemorySnapshotStore, KeyEntry, Loaded, Snapshot, store_snapshot
from trunkline.snapshot.store import IncompleteSnapshot


class Calls:
    """Counts a source's calls; a test awaits ``count`` more of them."""

    def __init__(self) -> None:
        self.made = 0
        self._target = 0
        self._reached = asyncio.Event()

    def tick(self) -> None:
        self.made += 1
        if self.made >= self._target:
            self._reached.set()

    async def more(self, count: int) -> None:
        self._target = self.made + count
        self._reached.clear()
        await self._reached.wait()


class FlakySource:
    """A snapshot store holding version 7 that refuses connections while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.polls = Calls()

    async def polled(self, count: int) -> None:
        """Return once the holder polled ``count`` more times."""
        await self.polls.more(count)

    async def version(self) -> int | None:
        self.polls.tick()
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return 7

    async def load(self, held: Mapping[str, bytes] | None = None) -> Loaded | None:
        store = InMemorySnapshotStore()
        store_snapshot(store, msgspec.structs.replace(Snapshot.empty(), version=7))
        return await store.load(held)


async def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = FlakySource()
    holder = SnapshotHolder(source, poll_s=0.001)
    with caplog.at_level(logging.INFO, logger="trunkline.gateway.state"):
        await holder.start()
        source.down = True
        await source.polled(20)
        assert not holder.reachable and holder.current.version == 7, "serves the last one"
        source.down = False
        await source.polled(5)
        await holder.close()
    assert holder.reachable
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(";")[0] for r in lines] == [
        "snapshot store unreachable",
        "snapshot store reachable again",
    ]
    assert (
        "serving snapshot 7" in lines[0].getMessage()
        and "Connection refused" in lines[0].getMessage()
    )
    assert not any(r.exc_info for r in lines), "no traceback for an outage"


async def test_metrics_show_the_store_away_and_the_usage_events_held() -> None:
    source = FlakySource()
    holder = SnapshotHolder(source, poll_s=0.001)

    class Emitter:
        held = 0

    emitter = Emitter()
    registry = CollectorRegistry()
    registry.register(GatewayHealthCollector(holder, emitter))
    await holder.start()
    try:
        await source.polled(2)
        assert registry.get_sample_value("trunkline_snapshot_store_reachable") == 1.0
        assert registry.get_sample_value("trunkline_snapshot_version") == 7.0
        source.down = True
        last_answer = holder.checked_at
        emitter.held = 12
        await source.polled(3)
        assert last_answer is not None and holder.checked_at == last_answer  # no answer since
        before_scrape = time.monotonic() - last_answer
        checked_age = registry.get_sample_value("trunkline_snapshot_checked_age_seconds")
        assert checked_age is not None and checked_age >= before_scrape
        assert registry.get_sample_value("trunkline_snapshot_store_reachable") == 0.0
        assert registry.get_sample_value("trunkline_snapshot_version") == 7.0  # still served
        assert registry.get_sample_value("trunkline_usage_events_held") == 12.0
        age = registry.get_sample_value("trunkline_snapshot_age_seconds")
        assert age is not None and age >= 0
    finally:
        await holder.close()


async def test_a_gateway_that_never_reached_the_store_shows_its_checked_age_since_its_start() -> (
    None
):
    """The age to alert on is there for a gateway started while Redis was away, as for one
    that lost it later: it counts from the gateway's start until the store first answers."""
    source = FlakySource()
    source.down = True
    started = time.monotonic()
    holder = SnapshotHolder(source, poll_s=0.001)
    registry = CollectorRegistry()
    registry.register(GatewayHealthCollector(holder, object()))
    await holder.start()
    try:
        await source.polled(2)
        checked_age = registry.get_sample_value("trunkline_snapshot_checked_age_seconds")
        assert checked_age is not None and 0 <= checked_age <= time.monotonic() - started
        assert registry.get_sample_value("trunkline_snapshot_store_reachable") == 0.0
    finally:
        await holder.close()


class ScriptedSource:
    """A store whose version and parts a test sets: ``parts`` None raises what a store with
    a part gone raises."""

    def __init__(self) -> None:
        self.store = InMemorySnapshotStore()
        self.incomplete = False
        self.loads = Calls()
        self.reported: list[int] = []
        """The versions the holder said it serves, the store holding an older one."""

    async def loaded(self, count: int) -> None:
        """Return once the holder tried ``count`` more loads."""
        await self.loads.more(count)

    def publish(self, version: int, key_ids: list[str]) -> None:
        keys = {k: KeyEntry(k, "hash", "t", "p", None, None, None) for k in key_ids}
        snapshot = msgspec.structs.replace(Snapshot.empty(), version=version, keys=keys)
        store_snapshot(self.store, snapshot)

    async def version(self) -> int | None:
        return self.store.published_version()

    async def report_served(self, version: int) -> None:
        self.reported.append(version)

    async def load(self, held: Mapping[str, bytes] | None = None) -> Loaded | None:
        self.loads.tick()
        if self.incomplete:
            raise IncompleteSnapshot("snapshot parts missing or changing in Redis: ['keys/05']")
        return await self.store.load(held)


async def test_an_older_version_is_never_served_after_a_newer_one() -> None:
    """A key revoked in version 9 was accepted again when the store fell back to version 8
    (an older control plane's leftover snapshot)."""
    source = ScriptedSource()
    holder = SnapshotHolder(source, poll_s=60)
    source.publish(9, ["kept"])
    assert await holder.refresh()
    source.store = InMemorySnapshotStore()
    source.publish(8, ["kept", "revoked"])
    assert not await holder.refresh()
    assert set(holder.current.keys) == {"kept"} and holder.current.version == 9


async def test_an_incomplete_snapshot_keeps_the_last_one_served_and_the_store_reachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It was reported as the store being unreachable, which it was not."""
    source = ScriptedSource()
    source.publish(3, ["a"])
    holder = SnapshotHolder(source, poll_s=0.001)
    with caplog.at_level(logging.WARNING, logger="trunkline.gateway.state"):
        await holder.start()
        source.publish(4, ["a", "b"])
        source.incomplete = True
        await source.loaded(20)
        assert holder.reachable and holder.current.version == 3
        source.incomplete = False
        await source.loaded(1)
        assert holder.current.version == 4
        await holder.close()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "serving snapshot 3" in warnings[0], warnings


async def test_an_older_version_loaded_just_after_a_newer_one_was_polled_is_not_served() -> None:
    """The store went back between the poll of its version and the load (a failover to a
    lagging replica, a restore): the load's older version was served, a key revoked since
    accepted again, for as long as the store stayed behind."""
    source = ScriptedSource()
    holder = SnapshotHolder(source, poll_s=60)
    source.publish(9, ["kept"])
    assert await holder.refresh()
    source.publish(10, ["kept"])
    polled = source.version

    async def then_the_store_goes_back() -> int | None:
        version = await polled()
        source.store = InMemorySnapshotStore()
        source.publish(8, ["kept", "revoked"])
        return version

    source.version = then_the_store_goes_back  # type: ignore[method-assign]
    assert not await holder.refresh()
    assert set(holder.current.keys) == {"kept"} and holder.current.version == 9


async def test_a_store_behind_is_told_the_version_served_at_each_poll_and_warned_of_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store went back below the version served, and no control plane remembered it (Redis
    lost its data and every one restarted): the gateway ignored every version below it, keys
    revoked since accepted, and said nothing but a warning promising a publish that never came.
    It tells the control planes what it serves until a newer version is stored."""
    source = ScriptedSource()
    holder = SnapshotHolder(source, poll_s=60)
    source.publish(9, ["kept"])
    await holder.refresh()
    source.store = InMemorySnapshotStore()
    source.publish(8, ["kept", "revoked"])
    with caplog.at_level(logging.WARNING, logger="trunkline.gateway.state"):
        for _ in range(3):
            assert not await holder.refresh()
    assert source.reported == [9, 9, 9]
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]  # not the load before
    assert [r.getMessage().split(";")[0] for r in warned] == [
        "the snapshot store holds version 8, older than the 9 served"
    ]
    source.publish(10, ["kept"])
    assert await holder.refresh() and holder.current.version == 10
    assert source.reported == [9, 9, 9], "not behind any more"


async def test_a_version_beyond_any_a_control_plane_hands_out_is_not_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tool wrote a version in nanoseconds to the store: the gateway served it, then ignored
    every version the control planes handed out after (a key revoked since accepted) until it
    restarted, the key deleted or not. It keeps what it serves, and says so once."""
    source = ScriptedSource()
    holder = SnapshotHolder(source, poll_s=60)
    source.publish(9, ["kept"])
    await holder.refresh()
    source.publish(time.time_ns(), ["kept", "revoked"])
    with caplog.at_level(logging.WARNING, logger="trunkline.gateway.state"):
        for _ in range(3):
            assert not await holder.refresh()
    assert set(holder.current.keys) == {"kept"} and holder.current.version == 9
    [warned] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "keeping 9" in warned.getMessage()
    source.store = InMemorySnapshotStore()  # the key deleted: the control plane publishes
    source.publish(10, ["kept"])
    assert await holder.refresh() and holder.current.version == 10
