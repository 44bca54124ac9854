"""The quota endpoints while the quota store (Redis) does not answer: the views say
``usage: null``, as they do while it is unreachable, and after a read failed the next ones do
not ask it again (each waited for the store's timeout in a worker thread of its own)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.rules import Vector
from trunkline.quota.store import StoreUnavailable
from unit.controlplane import cp_support

T = "/api/v1/tenants"


class AwayStore(InMemoryQuotaStore):
    """A quota store whose usage reads fail while ``away``, counting the reads asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.away, self.reads = False, 0

    async def usage(
        self, tenant_id: str, scopes: Sequence[tuple[str, str]], now_ms: int
    ) -> list[Vector]:
        self.reads += 1
        if self.away:
            raise StoreUnavailable("quota store unreachable: timed out")
        return await super().usage(tenant_id, scopes, now_ms)


@pytest.fixture
def away(tmp_path: Path) -> Iterator[tuple[cp_support.World, AwayStore]]:
    store = AwayStore()
    runtime = cp_support.make_runtime(f"sqlite:///{tmp_path / 'cp.db'}", tmp_path / "state")
    with TestClient[Any](create_controlplane_app(runtime, quota_store=store)) as client:
        yield cp_support.build_world(runtime, client), store
    runtime.close()


def test_after_a_usage_read_failed_the_views_say_null_without_asking_the_store(
    away: tuple[cp_support.World, AwayStore],
) -> None:
    world, store = away
    acme = world.tenant("acme")
    key_id = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
    assert world.api("acme-admin").get(f"{T}/{acme}/quota")["usage"] is not None
    store.away, asked = True, store.reads

    views = [
        world.api("acme-admin").get(f"{T}/{acme}/quota"),
        world.admin.put(f"{T}/{acme}/quota", {"tenant": {"tokens_per_day": 9000}}),
        world.api("acme-admin").put(f"{T}/{acme}/keys/{key_id}/quota", {"tokens_per_day": 90}),
        world.api("acme-admin").get(f"{T}/{acme}/keys/{key_id}/quota"),
    ]

    assert [view["usage"] for view in views] == [None] * 4
    # the writes happened, and read back the limits they set
    assert views[1]["limits"]["tenant"]["tokens_per_day"] == 9000
    assert views[2]["limits"]["key"]["tokens_per_day"] == 90
    assert store.reads == asked + 1, "a read after the failure asked the store again"
