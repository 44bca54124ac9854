"""What the control plane's ``/metrics`` says of its snapshot publishing: each build by kind,
what became of it (stored, refused for a newer version, nothing to patch, failed), the version
stored last, and the periodic check's outcome."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import redis
from cp_support import World
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.publishing import republish_if_stale
from trunkline.apps.runtime import Runtime
from trunkline.snapshot import InMemorySnapshotStore
from trunkline.snapshot.store import Patched
from trunkline.tenancy.changes import Change

COUNTED = ("_total", "_count")
Counts = dict[tuple[str, ...], float]


def counts(runtime: Runtime) -> Counts:
    return {
        (sample.name, *sample.labels.values()): sample.value
        for family in runtime.metrics.collect()
        for sample in family.samples
        if not sample.name.endswith(("_created", "_bucket", "_sum"))
    }


def moved(before: Counts, after: Counts) -> Counts:
    """The counts that moved (the gauges left out)."""
    changed = {k: v - before.get(k, 0.0) for k, v in after.items() if k[0].endswith(COUNTED)}
    return {k: v for k, v in changed.items() if v}


class AnotherControlPlaneFirst:
    """The store, where another control plane stores a newer version just before this
    process's first write (``kind``), which is then refused."""

    def __init__(self, store: InMemorySnapshotStore, kind: str) -> None:
        self.store, self.kind, self.raced = store, kind, False

    def _race(self, kind: str) -> None:
        if kind == self.kind and not self.raced:
            self.raced = True
            loaded = self.store._current
            assert loaded is not None
            self.store.publish(self.store.next_version(), loaded.blobs, published_at=0.0)

    def publish(self, version: int, parts: Mapping[str, bytes], **kw: Any) -> bool:
        self._race("whole")
        return self.store.publish(version, parts, **kw)

    def patch(self, version: int, changed: Mapping[str, bytes | None], **kw: Any) -> Patched:
        self._race("shards")
        return self.store.patch(version, changed, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_build_refused_for_a_newer_version_is_counted_and_built_again(world: World) -> None:
    runtime = world.runtime
    assert runtime.memory_store is not None
    runtime.publisher = AnotherControlPlaneFirst(runtime.memory_store, "whole")  # type: ignore[assignment]
    before = counts(runtime)
    runtime.publish_now()
    assert moved(before, counts(runtime)) == {
        ("trunkline_snapshot_builds_total", "whole"): 2,
        ("trunkline_snapshot_build_seconds_count", "whole"): 2,
        ("trunkline_snapshot_publishes_total", "whole", "refused"): 1,
        ("trunkline_snapshot_publishes_total", "whole", "stored"): 1,
    }
    stored = runtime.memory_store.published_version()
    assert counts(runtime)[("trunkline_snapshot_published_version",)] == stored


def test_a_key_change_patched_then_refused_is_patched_again(world: World) -> None:
    runtime = world.runtime
    assert runtime.memory_store is not None
    runtime.publisher = AnotherControlPlaneFirst(runtime.memory_store, "shards")  # type: ignore[assignment]
    before = counts(runtime)
    runtime.publish_shards({0, 1})
    assert moved(before, counts(runtime)) == {
        ("trunkline_snapshot_builds_total", "shards"): 2,
        ("trunkline_snapshot_build_seconds_count", "shards"): 2,
        ("trunkline_snapshot_publishes_total", "shards", "refused"): 1,
        ("trunkline_snapshot_publishes_total", "shards", "stored"): 1,
    }


def test_a_store_with_nothing_to_patch_is_built_whole(world: World) -> None:
    runtime = world.runtime
    # A store holding no snapshot in parts, in a process that has published none yet (a store
    # older than what it published is published whole without a try).
    runtime.publisher, runtime.published_version = InMemorySnapshotStore(), None
    before = counts(runtime)
    runtime.publish_shards({3})
    assert moved(before, counts(runtime)) == {
        ("trunkline_snapshot_builds_total", "shards"): 1,
        ("trunkline_snapshot_build_seconds_count", "shards"): 1,
        ("trunkline_snapshot_publishes_total", "shards", "no_base"): 1,
        ("trunkline_snapshot_builds_total", "whole"): 1,
        ("trunkline_snapshot_build_seconds_count", "whole"): 1,
        ("trunkline_snapshot_publishes_total", "whole", "stored"): 1,
    }


class AwayStore:
    def next_version(self) -> int:
        raise redis.ConnectionError("Connection refused")

    def __getattr__(self, name: str) -> Any:
        raise redis.ConnectionError("Connection refused")


def test_a_publish_the_store_refuses_is_counted_as_failed(world: World) -> None:
    runtime = world.runtime
    runtime.publisher = AwayStore()  # type: ignore[assignment]
    before = counts(runtime)
    with pytest.raises(redis.ConnectionError):
        runtime.publish_now()  # raised to its caller (``publish`` logs it, the check retries)
    assert moved(before, counts(runtime)) == {
        ("trunkline_snapshot_builds_total", "whole"): 1,
        ("trunkline_snapshot_build_seconds_count", "whole"): 1,
        ("trunkline_snapshot_publishes_total", "whole", "failed"): 1,
    }


def test_publishes_left_to_the_check_while_the_store_is_away_are_counted(world: World) -> None:
    """Not built, nor logged one a write (a frozen Redis logged ~165 warnings in 10 s): counted
    by what they would have built."""
    runtime = world.runtime
    runtime.publisher = AwayStore()  # type: ignore[assignment]
    assert runtime.seen is not None and runtime.seen.generation is not None
    after = runtime.seen.generation  # changes committed since (not in the store)
    runtime.publish(Change(after + 1, frozenset({"key1"})))  # fails: the store is suspected
    before = counts(runtime)
    runtime.publish(Change(after + 2, frozenset({"key2"})))
    runtime.publish(Change(after + 3, frozenset({"key3"})))
    runtime.publish(Change(after + 4, None))
    assert moved(before, counts(runtime)) == {
        ("trunkline_snapshot_publishes_total", "shards", "left_to_check"): 2,
        ("trunkline_snapshot_publishes_total", "whole", "left_to_check"): 1,
    }


def test_the_periodic_checks_outcomes_are_counted(world: World) -> None:
    runtime = world.runtime
    before = counts(runtime)
    assert not republish_if_stale(runtime)  # nothing moved since the last publish
    assert not republish_if_stale(runtime, thorough=True)  # built: the store holds it
    runtime.publisher = InMemorySnapshotStore()  # Redis restarted without its data
    assert republish_if_stale(runtime)
    runtime.publisher = AwayStore()  # type: ignore[assignment]
    with pytest.raises(redis.ConnectionError):
        republish_if_stale(runtime)
    checks = {k: v for k, v in moved(before, counts(runtime)).items() if "checks" in k[0]}
    assert checks == {
        ("trunkline_snapshot_checks_total", "unchanged"): 1,
        ("trunkline_snapshot_checks_total", "current"): 1,
        ("trunkline_snapshot_checks_total", "published"): 1,
        ("trunkline_snapshot_checks_total", "failed"): 1,
    }


class AlwaysBeaten:
    """The store, where another control plane stores a newer version before each of this
    process's whole builds: every one is refused."""

    def __init__(self, store: InMemorySnapshotStore) -> None:
        self.store = store

    def publish(self, version: int, parts: Mapping[str, bytes], **kw: Any) -> bool:
        self.store.publish(self.store.next_version(), {"other": b"other"}, published_at=0.0)
        return self.store.publish(version, parts, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_check_whose_every_publish_is_refused_is_counted_refused(world: World) -> None:
    runtime = world.runtime
    store = InMemorySnapshotStore()
    store.publish(store.next_version(), {"other": b"other"}, published_at=0.0)
    runtime.publisher = AlwaysBeaten(store)  # type: ignore[assignment]
    before = counts(runtime)
    assert not republish_if_stale(runtime, thorough=True)  # nothing of it stored
    checks = {k: v for k, v in moved(before, counts(runtime)).items() if "checks" in k[0]}
    assert checks == {("trunkline_snapshot_checks_total", "refused"): 1}


def sync_gauges(client: TestClient[Any]) -> dict[str, float]:
    """``trunkline_snapshot_in_sync``, and the checks by outcome (``checks_skipped``, …)."""
    samples = [
        sample
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
    ]
    return {s.name: s.value for s in samples if s.name == "trunkline_snapshot_in_sync"} | {
        f"checks_{s.labels['outcome']}": s.value
        for s in samples
        if s.name == "trunkline_snapshot_checks_total"
    }


def wait_for(condition: Callable[[], bool], deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def test_checks_skipped_while_a_publish_hangs_leave_the_store_out_of_sync(world: World) -> None:
    """An API call's publish holds ``publishing``, blocked on an away store: the checks that
    come round meanwhile skip, and say nothing of the store (it is still away)."""
    runtime = world.runtime
    app = create_controlplane_app(runtime, snapshot_check_s=0.02)
    runtime.publisher = AwayStore()  # type: ignore[assignment]
    with TestClient(app) as client:
        wait_for(lambda: sync_gauges(client).get("trunkline_snapshot_in_sync") == 0.0)
        failing = client.get("/healthz").json()["snapshot"]["failing_s"]
        assert runtime.publishing.acquire(timeout=5)
        try:
            skipped = sync_gauges(client).get("checks_skipped", 0.0)
            wait_for(lambda: sync_gauges(client).get("checks_skipped", 0.0) >= skipped + 2)
            assert sync_gauges(client)["trunkline_snapshot_in_sync"] == 0.0
            snapshot = client.get("/healthz").json()["snapshot"]
        finally:
            runtime.publishing.release()
    assert snapshot["in_sync"] is False and snapshot["failing_s"] >= failing


def test_checks_whose_publishes_are_refused_do_not_say_the_store_is_in_sync(world: World) -> None:
    """The store answers again, but other control planes keep storing newer versions first:
    nothing of this configuration was stored, so the store is not known to hold it."""
    runtime = world.runtime
    app = create_controlplane_app(runtime, snapshot_check_s=0.02)
    runtime.publisher = AwayStore()  # type: ignore[assignment]
    with TestClient(app) as client:
        wait_for(lambda: sync_gauges(client).get("trunkline_snapshot_in_sync") == 0.0)
        store = InMemorySnapshotStore()
        store.publish(store.next_version(), {"other": b"other"}, published_at=0.0)
        # As in a control plane started while the store was away: it has published nothing,
        # so each check builds and publishes.
        runtime.seen = runtime.published_version = None
        runtime.publisher = AlwaysBeaten(store)  # type: ignore[assignment]
        wait_for(lambda: sync_gauges(client).get("checks_refused", 0.0) >= 2)
        assert sync_gauges(client)["trunkline_snapshot_in_sync"] == 0.0
        assert client.get("/healthz").json()["snapshot"]["in_sync"] is False
