"""A change confined to keys is published by rebuilding only their shards: what the store then
holds is, part for part, what a whole build of the database gives at that moment (SQLite and
PostgreSQL). Before, every key created or revoked rebuilt the whole snapshot (0.5-0.8 s at
40,000 keys)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

from trunkline.apps import change_publisher, config_state, publishing
from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.publishing import republish_if_stale
from trunkline.apps.runtime import Runtime, build_runtime
from trunkline.auth.principal import Principal
from trunkline.keys.schemas import ApiKeyBatch, ApiKeyCreate
from trunkline.keys.service import (
    create_key,
    create_keys,
    key_tenant,
    revoke_key,
    rotate_key,
)
from trunkline.kit.db import transaction
from trunkline.kit.shards import key_shard
from trunkline.models import ApiKey
from trunkline.quota.schemas import QuotaLimits, ScopeLimits
from trunkline.quota.service import set_key_quota, set_tier_quota
from trunkline.snapshot import InMemorySnapshotStore
from trunkline.snapshot.builder import build_snapshot
from trunkline.snapshot.parts import shard_name, split
from trunkline.snapshot.store import Patched
from trunkline.tenancy.changes import Change, unit_of_work
from trunkline.tenancy.schemas import TenantUpdate
from trunkline.tenancy.service import update_tenant
from unit.controlplane.cp_support import World, build_world, snapshot

SYSTEM = Principal.system()


class Recorded:
    """The store, noting each write: ``whole`` (a whole build) or ``shards`` (a patch); the
    first write after ``before_first_write`` is set calls it first (another process's change
    landing while this one is published)."""

    def __init__(self, store: InMemorySnapshotStore) -> None:
        self.store = store
        self.writes: list[str] = []
        self.before_first_write: Callable[[Mapping[str, bytes | None]], None] | None = None

    def publish(self, version: int, parts: Mapping[str, bytes], **kw: Any) -> bool:
        self._wrote("whole", parts)
        return self.store.publish(version, parts, **kw)

    def patch(self, version: int, changed: Mapping[str, bytes | None], **kw: Any) -> Patched:
        self._wrote("shards", changed)
        return self.store.patch(version, changed, **kw)

    def _wrote(self, kind: str, parts: Mapping[str, bytes | None]) -> None:
        self.writes.append(kind)
        meanwhile, self.before_first_write = self.before_first_write, None
        if meanwhile is not None:
            meanwhile(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@dataclass
class Keys:
    """A control plane publishing to a recorded store, on a clock the test moves."""

    world: World
    store: Recorded
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    active: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> Runtime:
        return self.world.runtime

    def change(self, body: Callable[[Any], Any], *, published: bool = True) -> Any:
        """``body`` committed; not ``published``: its publish did not reach the store."""
        publish = self.runtime.publish if published else (lambda _change: None)
        with unit_of_work(self.runtime.session_factory, publish) as session:
            return body(session)

    def create(
        self, slug: str = "acme", project: str = "demo", *, published: bool = True, **fields: Any
    ) -> str:
        fields.setdefault("name", "key")
        tenant, data = self._body(slug, project, **fields)
        made = self.change(
            lambda s: create_key(s, SYSTEM, self.runtime.server_secret, tenant, data),
            published=published,
        )
        self.active.append(made.key.key_id)
        return str(made.key.key_id)

    def batch(self, count: int) -> None:
        tenant, data = self._body("acme", "demo", name="batch")
        batch = ApiKeyBatch([data] * count)
        made = self.change(
            lambda s: create_keys(s, SYSTEM, self.runtime.server_secret, tenant, batch)
        )
        self.active.extend(k.key.key_id for k in made)

    def revoke(self, key_id: str) -> None:
        self.change(lambda s: revoke_key(s, SYSTEM, self._tenant_of(key_id), key_id))
        self.active.remove(key_id)
        self.revoked.append(key_id)

    def rotate(self, key_id: str) -> str:
        made = self.change(
            lambda s: rotate_key(
                s, SYSTEM, self.runtime.server_secret, self._tenant_of(key_id), key_id
            )
        )
        self.active.remove(key_id)
        self.revoked.append(key_id)
        self.active.append(made.key.key_id)
        return str(made.key.key_id)

    def limit(self, key_id: str, per_minute: int) -> None:
        doc = ScopeLimits(requests_per_minute=per_minute)
        self.change(lambda s: set_key_quota(s, SYSTEM, self._tenant_of(key_id), key_id, doc))

    def stored(self) -> dict[str, bytes]:
        loaded = asyncio.run(self.store.store.load())
        assert loaded is not None
        return loaded.blobs

    def whole(self) -> dict[str, bytes]:
        runtime = self.runtime
        with runtime.session_factory() as session:
            built = build_snapshot(session, 0, cache_secret=runtime.server_secret, now=self.now)
        return split(built)

    def assert_whole(self, writes: list[str]) -> None:
        """The store holds the whole build's parts, written as ``writes`` said."""
        assert self.store.writes == writes
        self.store.writes.clear()
        stored, whole = self.stored(), self.whole()
        assert sorted(stored) == sorted(whole)
        assert [n for n in whole if stored[n] != whole[n]] == []

    def _body(self, slug: str, project: str, **fields: Any) -> tuple[uuid.UUID, ApiKeyCreate]:
        data = ApiKeyCreate(project_id=uuid.UUID(self.world.project(slug, project)), **fields)
        return uuid.UUID(self.world.tenant(slug)), data

    def _tenant_of(self, key_id: str) -> uuid.UUID:
        with self.runtime.session_factory() as session:
            return key_tenant(session, key_id)


@pytest.fixture
def world(runtime: Runtime) -> Iterator[World]:
    """The app without its periodic check: run between a change's commit and its publish, the
    check builds whole where the change would patch its shards, and the writes these tests
    expect differ (the tests run the check themselves, ``republish_if_stale``)."""
    with TestClient[Any](create_controlplane_app(runtime, snapshot_check_s=3600)) as client:
        yield build_world(runtime, client)


@pytest.fixture
def keys(world: World, monkeypatch: pytest.MonkeyPatch) -> Keys:
    runtime = world.runtime
    assert runtime.memory_store is not None
    keys = Keys(world, Recorded(runtime.memory_store))
    runtime.publisher = keys.store
    runtime.whole_every_s = 0  # a change after another process's builds whole: every time
    monkeypatch.setattr(change_publisher, "utcnow", lambda: keys.now)
    monkeypatch.setattr(config_state, "utcnow", lambda: keys.now)
    monkeypatch.setattr(publishing, "utcnow", lambda: keys.now)
    return keys


def test_each_key_change_moves_only_its_shards_and_leaves_what_a_whole_build_gives(
    keys: Keys,
) -> None:
    first = keys.create(name="plain")
    keys.assert_whole(["shards"])
    soon = keys.create(name="soon", expires_at=keys.now + timedelta(hours=1))
    keys.create(name="pinned", tier="silver", allowed_models=["bge-small"])
    keys.batch(3)
    keys.assert_whole(["shards"] * 3)
    keys.revoke(first)
    keys.assert_whole(["shards"])
    rotated = keys.active[-1]
    successor = keys.rotate(rotated)
    keys.assert_whole(["shards"])
    keys.limit(rotated, 7)  # the revoked key's own limits are its successor's
    keys.assert_whole(["shards"])
    assert keys.store.store.published_version() is not None

    keys.change(
        lambda s: set_tier_quota(s, "gold", QuotaLimits(key=ScopeLimits(tokens_per_minute=9)))
    )
    keys.assert_whole(["whole"])
    keys.now += timedelta(hours=2)  # ``soon`` expired: the check drops it from its shard
    assert republish_if_stale(keys.runtime)
    keys.assert_whole(["shards"])
    assert soon not in snapshot(keys.runtime).keys
    acme = uuid.UUID(keys.world.tenant("acme"))
    keys.change(lambda s: update_tenant(s, acme, TenantUpdate(tier="silver")))
    keys.assert_whole(["whole"])
    keys.create(name="after the tier moved")
    keys.assert_whole(["shards"])
    assert not republish_if_stale(keys.runtime, thorough=True)  # the whole build agrees
    assert successor in keys.active


def test_any_sequence_of_key_changes_leaves_what_a_whole_build_gives(keys: Keys) -> None:
    """Random changes (seeded): after each, the store holds the whole build's parts."""
    rng = random.Random(14)
    projects = [("acme", "demo"), ("globex", "support-bot")]
    for slug, project in projects:
        keys.create(slug, project)
    keys.store.writes.clear()
    for _ in range(40):
        step = rng.choice(["create", "expiring", "batch", "revoke", "rotate", "limit", "time"])
        if step == "create":
            keys.create(*rng.choice(projects), name=f"k{rng.randint(0, 999)}")
        elif step == "expiring":
            keys.create(expires_at=keys.now + timedelta(minutes=rng.randint(1, 90)))
        elif step == "batch":
            keys.batch(rng.randint(1, 4))
        elif step == "revoke" and keys.active:
            keys.revoke(rng.choice(keys.active))
        elif step == "rotate" and keys.active:
            keys.rotate(rng.choice(keys.active))
        elif step == "limit" and (keys.active or keys.revoked):
            keys.limit(rng.choice(keys.active + keys.revoked), rng.randint(1, 100))
        elif step == "time":
            keys.now += timedelta(minutes=rng.randint(1, 60))
            republish_if_stale(keys.runtime)
        assert "whole" not in keys.store.writes, step
        keys.assert_whole(keys.store.writes[:])


@pytest.fixture
def other(keys: Keys) -> Iterator[Keys]:
    """A second control plane on the same database, publishing to the same store."""
    built = build_runtime(keys.runtime.settings)
    runtime = dataclasses.replace(built, publisher=keys.store, whole_every_s=0)
    world = dataclasses.replace(keys.world, runtime=runtime)
    yield Keys(world, keys.store, keys.now, keys.active, keys.revoked)
    runtime.close()


def test_a_patch_refused_for_another_process_s_newer_version_is_published_again(
    keys: Keys, other: Keys
) -> None:
    """The other control plane stored a newer version first (whole: it does not know this
    key's change to be published): stopping at the refusal would leave this key unknown to
    every gateway until the next check, had the other not carried it."""
    kept = [keys.create(name=f"k{i}") for i in range(4)]
    keys.store.writes.clear()

    def meanwhile(changed: Mapping[str, bytes | None]) -> None:
        elsewhere = next(k for k in kept if shard_name(k) not in changed)
        other.revoke(elsewhere)
        kept.remove(elsewhere)

    keys.store.before_first_write = meanwhile
    created = keys.create(name="raced")
    keys.assert_whole(["shards", "shards", "shards"])  # ours (refused), theirs, ours again
    assert set(kept) | {created} <= set(snapshot(keys.runtime).keys)


def test_a_whole_build_refused_for_another_process_s_newer_one_holding_it_is_not_built_again(
    keys: Keys, other: Keys
) -> None:
    """The other control plane stored a newer version first: stopping at the refusal would
    leave the tenant's new tier unknown to every gateway had the other patched over the core
    stored before. It builds whole (this change, committed before its own, is not known to be
    published), from a state that has this change, and says so (``built_from``): building
    again, to be stored over it, would only cost."""
    victim = keys.create(name="revoked meanwhile")
    keys.store.writes.clear()
    keys.store.before_first_write = lambda _changed: other.revoke(victim)
    acme = uuid.UUID(keys.world.tenant("acme"))
    keys.change(lambda s: update_tenant(s, acme, TenantUpdate(tier="silver")))
    keys.assert_whole(["whole", "whole"])  # this one's, refused; the other's, stored
    served = snapshot(keys.runtime)
    assert served.tenants[str(acme)].tier == "silver" and victim not in served.keys


def test_a_whole_build_is_not_starved_by_another_process_patching_its_keys(
    keys: Keys, other: Keys
) -> None:
    """The other control plane created a key during each of this one's whole builds: each
    patch, newer, refused the build and kept the core from before it; after three tries this
    one gave up, and its checks failed the same way, the tenant's new tier never served. The
    other's change does not follow this one's in the store, so it builds whole, from a state
    that has the tier: that ends this one's tries at the first refusal."""
    keys.create(name="seed")
    keys.store.writes.clear()
    made: list[str] = []

    def another_key(changed: Mapping[str, bytes | None]) -> None:
        if "core" in changed and len(made) < 12:  # one of this control plane's whole builds
            made.append(other.create(name=f"busy{len(made)}"))  # (writes without this hook)
        keys.store.before_first_write = another_key  # and again at the next write

    keys.store.before_first_write = another_key
    acme = uuid.UUID(keys.world.tenant("acme"))
    keys.change(lambda s: update_tenant(s, acme, TenantUpdate(tier="silver")))
    keys.store.before_first_write = None
    assert snapshot(keys.runtime).tenants[str(acme)].tier == "silver"
    assert len(made) == 1, "the other's newer build, holding the tier, ended this one's tries"


def test_after_another_process_s_change_a_key_is_patched_while_a_whole_build_is_recent(
    keys: Keys, other: Keys
) -> None:
    """Another control plane's patches were never known to be in the store: each key change
    after one built whole, and two control planes taking key changes built whole every time
    (key calls 0.08 s -> 0.5 s at the median in a probe with 5,000 keys; several seconds in
    one with 19,000, their whole builds refusing each other). They are known by the store's
    record (``built_from``), or by a whole build this process stored moments ago."""
    keys.runtime.whole_every_s = 3600.0
    with keys.runtime.publishing:
        keys.runtime.publish_now()  # a whole build just stored
    other.create(name="theirs")
    keys.store.writes.clear()
    keys.create(name="ours")
    keys.assert_whole(["shards"])
    keys.runtime.whole_every_s = 0.0  # the whole build is old: the store's record tells
    other.create(name="theirs again")
    keys.store.writes.clear()
    keys.create(name="ours again")
    keys.assert_whole(["shards"])
    acme = uuid.UUID(keys.world.tenant("acme"))
    other.change(lambda s: update_tenant(s, acme, TenantUpdate(tier="silver")), published=False)
    keys.store.writes.clear()
    keys.create(name="ours, after it")
    keys.assert_whole(["whole"])  # which carries the other's tier, whose publish never landed


def test_a_key_is_patched_over_another_process_s_key_change_not_stored_yet(
    keys: Keys, other: Keys
) -> None:
    """With key writes through two control planes, one of the other's changes was nearly
    always committed and not yet stored when this one published: this one built whole at
    every write, and the other's next patch refused the build (revocations took up to 1.7 s
    at 19,000 keys in a probe). A key change the other publishes itself holds nothing up."""
    victim = keys.create(name="revoked")
    with keys.runtime.publishing:
        keys.runtime.publish_now()  # a whole build, old at once (whole_every_s is 0)
    deferred: list[Change] = []
    tenant, data = other._body("acme", "demo", name="theirs, in flight")
    with unit_of_work(other.runtime.session_factory, deferred.append) as session:
        theirs = create_key(session, SYSTEM, other.runtime.server_secret, tenant, data)
    keys.store.writes.clear()
    ours = keys.create(name="ours")
    keys.revoke(victim)
    other.runtime.publish(deferred[0])  # and now theirs lands, patched too
    keys.assert_whole(["shards", "shards", "shards"])
    served = snapshot(keys.runtime)
    assert {ours, theirs.key.key_id} <= set(served.keys) and victim not in served.keys


def test_a_key_change_left_unpublished_by_another_process_is_published_by_the_check(
    keys: Keys, other: Keys
) -> None:
    """Patched over, the other's key change waits for its own publish; should that never come
    (the other stopped between its commit and its publish), the check patches its shard in."""
    with keys.runtime.publishing:
        keys.runtime.publish_now()
    while True:  # ours in the lost one's shard (1 in 64) would publish it with that shard
        lost = other.create(name="theirs, publish lost", published=False)
        keys.store.writes.clear()
        if shard_name(keys.create(name="ours")) != shard_name(lost):
            break
    assert set(keys.store.writes) == {"shards"} and lost not in snapshot(keys.runtime).keys
    keys.store.writes.clear()
    assert not republish_if_stale(keys.runtime)  # the other's in flight, for one check
    assert republish_if_stale(keys.runtime)  # still missing: its shard patched in
    keys.assert_whole(["shards"])
    assert lost in snapshot(keys.runtime).keys


def test_a_patch_over_a_store_gone_back_to_an_older_snapshot_publishes_whole(
    keys: Keys,
) -> None:
    """Redis restored from a backup (or failed over to a lagging replica): a patch took every
    other part from it under a newer version, and gateways served a key revoked since; the
    check, seeing that newer version, found nothing wrong."""
    revoked = keys.create(name="revoked later")
    backup = keys.store.store._current
    keys.revoke(revoked)
    keys.store.store._current = backup  # the store goes back
    keys.store.writes.clear()
    elsewhere = next(
        k for k in iter(lambda: keys.create(name="after"), None)
        if shard_name(k) != shard_name(revoked)
    )  # fmt: skip
    # The first write after it went back; a key made after it, in the revoked key's shard
    # (1 in 64), is patched over it (writes[-1] failed then).
    assert keys.store.writes[0] == "whole"
    served = snapshot(keys.runtime)
    assert revoked not in served.keys and elsewhere in served.keys


def test_a_key_inserted_without_its_shard_stays_in_its_shard(keys: Keys) -> None:
    """A control plane of the version before, still running during the upgrade (or SQL by
    hand), inserts keys without ``shard``: the column's default, 0, is read with every shard,
    or the next change to the key's own shard would publish it without the key."""
    made = keys.create(name="template")
    key_id = next(k for k in (f"legacy{i:06d}" for i in range(99)) if key_shard(k) != 0)
    columns = ApiKey.__table__.c
    statement = sa.text(
        "INSERT INTO api_keys (id, key_id, secret_hash, tenant_id, project_id, name, created_at)"
        " SELECT :id, :key_id, 'h', tenant_id, project_id, 'legacy', created_at FROM api_keys"
        " WHERE key_id = :made"
    ).bindparams(sa.bindparam("id", type_=columns.id.type))
    with transaction(keys.runtime.session_factory) as session:
        session.execute(statement, {"id": uuid.uuid4(), "key_id": key_id, "made": made})
    keys.runtime.publish()  # what the older control plane published: the whole configuration
    keys.store.writes.clear()
    with keys.runtime.publishing:
        keys.runtime.publish_shards({key_shard(key_id)})
    keys.assert_whole(["shards"])
    assert key_id in snapshot(keys.runtime).keys


def test_key_changes_through_two_control_planes_interleaved_are_patched(
    keys: Keys, other: Keys
) -> None:
    """This one's key change published after the other's next one (ordinary with key writes
    through both): the store holds both, but no single patch carried both. Its record
    stopped at the gap, each later change through either looked as if it did not follow, and
    they built whole, refusing one another's builds (revocations took seconds at 19,000 keys
    in a probe); the record now keeps what was stored past the gap."""
    keys.create(name="seed")
    with other.runtime.publishing:
        other.runtime.publish_now()
    other.runtime.whole_every_s = 3600.0  # the other patches, though it does not follow
    deferred: list[Change] = []
    tenant, data = keys._body("acme", "demo", name="late")
    with unit_of_work(keys.runtime.session_factory, deferred.append) as session:
        create_key(session, SYSTEM, keys.runtime.server_secret, tenant, data)
    other.create(name="theirs, first")
    keys.runtime.publish(deferred[0])  # now both are stored
    other.runtime.whole_every_s = keys.runtime.whole_every_s = 0.0  # the store's record alone
    keys.store.writes.clear()
    other.create(name="theirs, next")
    keys.create(name="ours, next")
    keys.assert_whole(["shards", "shards"])


def test_a_revocation_refused_every_time_is_carried_by_this_process_s_next_key_change(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its publish refused every time (other control planes storing newer versions first), the
    revocation is this process's to publish again: its next key change, in another shard, was
    patched over it (the change said keys only), and nothing but a check, which skips its
    rounds under a stream of writes, published it (found in review)."""
    victim = keys.create(name="revoked, publish refused")
    with keys.runtime.publishing:
        keys.runtime.publish_now()
    real_patch, real_publish = keys.store.patch, keys.store.publish
    monkeypatch.setattr(keys.store, "patch", lambda *a, **kw: Patched.REFUSED)
    monkeypatch.setattr(keys.store, "publish", lambda *a, **kw: False)
    keys.revoke(victim)  # refused every time
    monkeypatch.setattr(keys.store, "patch", real_patch)
    monkeypatch.setattr(keys.store, "publish", real_publish)
    assert victim in snapshot(keys.runtime).keys
    next(
        k for k in iter(lambda: keys.create(name="next"), None)
        if shard_name(k) != shard_name(victim)
    )  # fmt: skip
    assert victim not in snapshot(keys.runtime).keys
