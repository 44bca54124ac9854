"""Publishing after changes: changes committed in parallel share a snapshot build."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from cp_support import World, snapshot

from trunkline.auth.principal import Principal
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.keys.service import create_key
from trunkline.kit.db import transaction
from trunkline.snapshot import InMemorySnapshotStore


class HeldFirstPublish:
    """The store, whose first publish waits until ``release`` is set: a slow build."""

    def __init__(self, store: InMemorySnapshotStore) -> None:
        self.store = store
        self.entered, self.release = threading.Event(), threading.Event()
        self.publishes = 0

    def publish(self, version: int, blob: bytes, digest: bytes = b"") -> None:
        self.publishes += 1
        if self.publishes == 1:
            self.entered.set()
            assert self.release.wait(10)
        self.store.publish(version, blob, digest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_keys_created_in_parallel_share_snapshot_builds(world: World) -> None:
    """Each created key rebuilt and published the whole snapshot, one at a time: 0.3 keys/s
    at 40,000 keys however many callers ran in parallel."""
    runtime = world.runtime
    assert runtime.memory_store is not None
    gate = HeldFirstPublish(runtime.memory_store)
    runtime.publisher = gate
    tenant = uuid.UUID(world.tenant("acme"))
    project = uuid.UUID(world.project("acme", "demo"))
    created: list[str] = []
    committed = threading.Semaphore(0)

    def create(index: int) -> None:
        with transaction(runtime.session_factory) as session:
            data = ApiKeyCreate(project_id=project, name=f"bulk-{index}")
            key = create_key(session, Principal.system(), runtime.server_secret, tenant, data)
            created.append(key.key.key_id)
        committed.release()
        runtime.publish()

    first = threading.Thread(target=create, args=(0,))
    first.start()
    assert gate.entered.wait(10)  # its build is being published
    others = [threading.Thread(target=create, args=(i,)) for i in range(1, 6)]
    for thread in others:
        thread.start()
    for _ in range(6):
        assert committed.acquire(timeout=10)
    gate.release.set()
    for thread in (first, *others):
        thread.join(10)

    assert gate.publishes == 2  # the held one, then one that carried the five others
    assert set(created) <= set(snapshot(runtime).keys)
