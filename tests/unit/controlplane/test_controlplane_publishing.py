"""Publishing after changes: changes committed in parallel share a snapshot build."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cp_support import TENANTS_DIR, World, snapshot

from trunkline.apps import change_publisher, config_state, publishing
from trunkline.apps.publishing import SnapshotSync, check_published, republish_if_stale
from trunkline.apps.runtime import Runtime
from trunkline.auth.principal import Principal
from trunkline.billing.pricebook import PriceBook, version_from_document
from trunkline.billing.pricebook_store import apply_price_book
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.keys.service import create_key
from trunkline.quota import book as quota_book
from trunkline.snapshot import InMemorySnapshotStore
from trunkline.snapshot.store import Patched
from trunkline.tenancy.changes import Change, unit_of_work
from trunkline.tenancy.manifests import apply_manifests


class HeldFirstPublish:
    """The store, whose first write (a whole publish or a patch) waits until ``release`` is
    set: a slow build."""

    def __init__(self, store: InMemorySnapshotStore) -> None:
        self.store = store
        self.entered, self.release = threading.Event(), threading.Event()
        self.writes: list[str] = []

    def _held(self, kind: str) -> None:
        self.writes.append(kind)
        if len(self.writes) == 1:
            self.entered.set()
            assert self.release.wait(10)

    def publish(self, version: int, parts: Mapping[str, bytes], **kw: Any) -> bool:
        self._held("whole")
        return self.store.publish(version, parts, **kw)

    def patch(self, version: int, changed: Mapping[str, bytes | None], **kw: Any) -> Patched:
        self._held("shards")
        return self.store.patch(version, changed, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_keys_created_in_parallel_share_snapshot_builds(world: World) -> None:
    """Each created key rebuilt and published the whole snapshot, one at a time: 0.3 keys/s
    at 40,000 keys however many callers ran in parallel. Now each publishes the shards of
    the keys waiting when it starts."""
    runtime = world.runtime
    assert runtime.memory_store is not None
    gate = HeldFirstPublish(runtime.memory_store)
    runtime.publisher = gate
    tenant = uuid.UUID(world.tenant("acme"))
    project = uuid.UUID(world.project("acme", "demo"))
    created: list[str] = []
    committed = threading.Semaphore(0)

    def create(index: int) -> None:
        def publish(change: Change) -> None:
            committed.release()
            runtime.publish(change)

        with unit_of_work(runtime.session_factory, publish) as session:
            data = ApiKeyCreate(project_id=project, name=f"bulk-{index}")
            key = create_key(session, Principal.system(), runtime.server_secret, tenant, data)
            created.append(key.key.key_id)

    first = threading.Thread(target=create, args=(0,))
    first.start()
    assert gate.entered.wait(10)  # its shard is being published
    others = [threading.Thread(target=create, args=(i,)) for i in range(1, 6)]
    for thread in others:
        thread.start()
    for _ in range(6):
        assert committed.acquire(timeout=10)
    gate.release.set()
    for thread in (first, *others):
        thread.join(10)

    assert gate.writes == ["shards", "shards"]  # the held one, then one carrying five others
    assert set(created) <= set(snapshot(runtime).keys)


def test_a_manifest_change_reaches_the_gateways_through_a_runtime_that_published_before(
    world: World, tmp_path: Path
) -> None:
    """Manifests did not count as a change: a runtime that had published skipped the publish
    (the snapshot kept globex at silver), and the control plane's check saw nothing either."""
    runtime = world.runtime
    for file in TENANTS_DIR.glob("*.yaml"):
        text = file.read_text()
        (tmp_path / file.name).write_text(text.replace("tier: silver", "tier: gold"))
    globex = world.tenant("globex")
    assert snapshot(runtime).tenants[globex].tier == "silver"
    report = apply_manifests(runtime.session_factory, tmp_path, publish=runtime.publish)
    assert report.changed
    assert snapshot(runtime).tenants[globex].tier == "gold"


def test_a_price_version_taking_effect_is_published_without_any_commit(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot carries the prices in force: a version starting at midnight changes them
    with nothing committed then, which the check's change count alone would not see."""
    runtime = world.runtime
    models = {"*": {"input": "1", "cached_input": "1", "output": "1"}}
    later = {"*": {"input": "7", "cached_input": "7", "output": "7"}}
    book = PriceBook(
        [
            version_from_document({"version": n, "effective_from": start, "models": prices})
            for n, start, prices in [
                (1, "2026-01-01T00:00:00Z", models),
                (2, "2030-01-01T00:00:00Z", later),
            ]
        ]
    )
    with unit_of_work(runtime.session_factory, runtime.publish) as session:
        assert apply_price_book(session, book) == [1, 2]
    prices = snapshot(runtime).quotas.prices
    assert not republish_if_stale(runtime)
    monkeypatch.setattr(change_publisher, "utcnow", lambda: datetime(2030, 1, 1, 0, 1, tzinfo=UTC))
    monkeypatch.setattr(config_state, "utcnow", lambda: datetime(2030, 1, 1, 0, 1, tzinfo=UTC))
    monkeypatch.setattr(quota_book, "datetime", _Frozen)
    assert republish_if_stale(runtime)
    assert snapshot(runtime).quotas.prices != prices


class _Frozen(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return datetime(2030, 1, 1, 0, 1, tzinfo=UTC)


class NotedLock:
    """The publishing lock, saying when a caller waits on it with a timeout."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock, self.waiting = lock, threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking:
            self.waiting.set()
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_a_check_that_skipped_two_rounds_waits_for_the_publish_under_way(
    runtime: Runtime,
) -> None:
    """Under a stream of writes the check found a publish under way at most rounds and skipped
    them all (9 of 13 at 10,000 keys in a probe): what only it publishes waited. (A runtime
    with no app, whose own check would share the lock.)"""
    lock = NotedLock(runtime.publishing)
    runtime.publishing = lock  # type: ignore[assignment]
    released = threading.Event()

    def writer() -> None:  # a publish that holds the lock until the check waits for it
        assert lock.waiting.wait(10)
        lock.release()
        released.set()

    lock.lock.acquire()
    assert check_published(runtime) == "skipped"
    assert check_published(runtime) == "skipped"
    holder = threading.Thread(target=writer)
    holder.start()
    assert check_published(runtime) != "skipped"
    holder.join()
    assert released.is_set() and runtime.checks_skipped == 0


def test_a_check_that_waits_in_vain_for_a_publish_says_the_configuration_is_not_in_sync(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish that never ends (a build on a database connection that does not answer) held
    every check, each skipped, and ``/healthz`` said in sync while a revocation another process
    committed never reached the gateways (found in review)."""
    monkeypatch.setattr(publishing, "CHECK_WAIT_S", 0.01)
    sync = SnapshotSync()
    sync.succeeded()
    with runtime.publishing:  # held, as by a publish stuck on a build
        outcomes = [check_published(runtime) for _ in range(4)]
    for outcome in outcomes:
        sync.checked_with(outcome)
    assert outcomes == ["skipped", "skipped", "stuck", "stuck"]
    report = sync.report()
    assert report["in_sync"] is False and report["error"] == publishing.STUCK
    assert check_published(runtime) != "skipped"  # free again: the next check runs
