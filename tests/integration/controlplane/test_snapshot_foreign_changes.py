"""Two control planes on one database and one Redis (HA behind a load balancer): a change made
through one cost every other a whole snapshot build at its next check (0.5-0.8 s at 40,000
keys), to find the store held it already. The store now says what its version was built from,
and a check whose database is in that state knows without building; whatever the store does
not hold (a publish that failed, a change another process has not published yet, a store
restored from a backup or written by an older control plane) is still built and published."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from sqlalchemy import delete, select, update

from integration.controlplane.planes_support import PREFIX, SYSTEM, Planes, samples
from trunkline.apps import publishing
from trunkline.apps.change_publisher import WHOLE_ABOVE
from trunkline.apps.publishing import check_published
from trunkline.apps.runtime import Runtime, build_runtime
from trunkline.billing.pricebook import PriceBook, version_from_document
from trunkline.billing.pricebook_store import apply_price_book
from trunkline.gateway.state import SnapshotHolder
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.keys.service import create_key, key_tenant, revoke_key
from trunkline.kit.shards import key_shard
from trunkline.models import CONFIG_ROW, ApiKey, ConfigGeneration
from trunkline.quota import book as quota_book
from trunkline.snapshot import RedisSnapshotPublisher, RedisSnapshotSource
from trunkline.tenancy.changes import Change, unit_of_work


def test_a_change_through_one_control_plane_costs_another_no_build(planes: Planes) -> None:
    assert planes.check() == "unchanged"
    key_id = planes.create()  # published by its shard
    assert planes.check() == "current"
    planes.retier("silver")  # published whole
    assert planes.check() == "current"
    assert planes.check() == "unchanged"
    assert planes.builds == []
    assert planes.b.publisher.published_version() == planes.a.published_version  # a's
    served = planes.served()
    assert key_id in served.keys and served.tenants[str(planes.tenant)].tier == "silver"


def test_a_change_whose_publish_did_not_reach_the_store_is_built_and_published(
    planes: Planes,
) -> None:
    """``a`` stopped between the revocation's commit and its publish: another control plane's
    key change not in the store yet is left to it for one check (it is publishing it, as a rule,
    and a whole build would be refused by its patch), and the next patches its shard in (the
    shards each change changed are on record, ``config_changes``)."""
    key_id = planes.create()
    planes.revoke(key_id, published=False)
    assert planes.check() == "in_flight"
    assert planes.builds == [] and key_id in planes.served().keys
    assert planes.check() == "published"  # by the key's shard, read now: no whole build
    assert planes.builds == [] and key_id not in planes.served().keys


def test_a_key_change_missing_behind_many_patched_ones_is_patched_in_not_built_whole(
    planes: Planes,
) -> None:
    """A revocation whose publish never came (the CLI's, Redis away for it), then key changes
    through ``a`` patched past it in more shards than a patch takes: what the store lacks is
    the revocation alone, one shard. A check counted the shards of the changes stored past it
    too, built whole, and under a stream of patches was refused by the next one."""
    key_id = planes.create()
    planes.revoke(key_id, published=False)
    shards: set[int] = set()
    while len(shards) <= WHOLE_ABOVE:
        shards.add(key_shard(planes.create()))
    assert planes.check() == "in_flight"
    assert planes.check() == "published"  # the revoked key's shard
    assert planes.builds == [] and key_id not in planes.served().keys
    assert planes.check() == "current"


def test_a_version_stored_between_the_check_s_two_reads_costs_no_build(
    planes: Planes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check reads the database's state, then the store's record: ``a`` storing a newer
    version in between put the record past the state read, which the check took for a gap it
    could not patch, and built whole (measured under load: such a build held the publishing
    lock 18 s, and a revocation waited behind it)."""
    planes.create()  # not seen by b yet
    real, raced = publishing.read_config_state, []

    def racing(factory: Any) -> Any:
        state = real(factory)
        if not raced:
            raced.append(planes.create())  # through a, patched: the record passes the state
        return state

    monkeypatch.setattr(publishing, "read_config_state", racing)
    assert planes.check() == "current"
    assert planes.builds == [] and raced[0] in planes.served().keys


def test_a_dead_change_behind_one_that_landed_is_patched_in_at_the_next_check(
    planes: Planes,
) -> None:
    """The check found two key changes missing: ``a``'s, whose publish was under way, and a
    revocation whose publish never came (the CLI's, Redis away for it). The first landed; the
    revocation, still missing at the next check, is patched in there, not a check later (the
    check remembered only the first change missing, saw another first, and waited again)."""
    key_id = planes.create()
    deferred: list[Change] = []
    data = ApiKeyCreate(project_id=planes.project, name="in flight")
    with unit_of_work(planes.a.session_factory, deferred.append) as session:
        create_key(session, SYSTEM, planes.a.server_secret, planes.tenant, data)
    planes.revoke(key_id, published=False)
    assert planes.check() == "in_flight"
    planes.a.publish(deferred[0])  # lands; the revocation does not
    assert planes.check() == "published"
    assert planes.builds == [] and key_id not in planes.served().keys


def test_a_tenant_change_not_in_the_store_yet_is_built_at_once(planes: Planes) -> None:
    """Only key changes are left for a check to the process publishing them: another change's
    whole build is refused by each newer patch and may never land without one of the check's."""
    key_id = planes.create()
    planes.retier("silver", published=False)
    planes.revoke(key_id, published=False)
    assert planes.check() == "published"
    served = planes.served()
    assert served.tenants[str(planes.tenant)].tier == "silver" and key_id not in served.keys


def test_key_changes_in_flight_that_land_before_the_next_check_cost_no_build(
    planes: Planes,
) -> None:
    deferred: list[Change] = []
    data = ApiKeyCreate(project_id=planes.project, name="in flight")
    with unit_of_work(planes.a.session_factory, deferred.append) as session:
        create_key(session, SYSTEM, planes.a.server_secret, planes.tenant, data)
    assert planes.check() == "in_flight"
    planes.a.publish(deferred[0])
    with unit_of_work(planes.a.session_factory, deferred.append) as session:
        create_key(session, SYSTEM, planes.a.server_secret, planes.tenant, data)
    assert planes.check() == "in_flight"  # another one now: a is publishing
    planes.a.publish(deferred[1])
    assert planes.check() == "current"
    assert planes.builds == []


def test_this_process_s_own_key_change_whose_publish_failed_is_built_by_its_next_check(
    planes: Planes,
) -> None:
    """Its check does not wait for a publish that already failed."""
    key_id = planes.create()
    held = planes.a.publisher

    class Failing:
        def __getattr__(self, name: str) -> Any:
            if name in ("patch", "publish"):
                raise redis.ConnectionError("away")
            return getattr(held, name)

    planes.a.publisher = Failing()  # type: ignore[assignment]
    planes.revoke(key_id)  # its publish fails: a warning, the revocation saved
    planes.a.publisher = held
    assert planes.a.left
    assert check_published(planes.a) == "published"
    assert key_id not in planes.served().keys and not planes.a.left


def test_a_key_patched_over_a_change_not_in_the_store_yet_leaves_the_check_building(
    planes: Planes,
) -> None:
    """``a`` patches a key over a store without another process's change committed before it
    (a tenant's new tier whose publish failed, or is under way): the store holds the key's
    change, not every change up to it, and must not say so."""
    planes.a.whole_every_s = 3600.0  # a whole build is recent: a key change is patched
    with planes.a.publishing:
        planes.a.publish_now()
    planes.retier("silver", published=False)
    key_id = planes.create()
    served = planes.served()
    assert key_id in served.keys and served.tenants[str(planes.tenant)].tier != "silver"
    assert planes.check() == "published"
    assert planes.builds == [1]
    assert planes.served().tenants[str(planes.tenant)].tier == "silver"


def test_a_store_that_does_not_say_what_it_was_built_from_is_checked_by_a_build(
    planes: Planes,
) -> None:
    """What a store written by a control plane of the version before holds: the check builds,
    finds the store holding it, and says so (``vouched``), so the next check needs no build."""
    planes.create()
    planes.client.delete(f"{PREFIX}:snapshot:v2:built_from")
    assert planes.check() == "vouched"
    assert planes.builds == [1]
    assert planes.check() == "unchanged"
    assert planes.builds == [1]


def test_a_store_restored_from_a_backup_is_published_to_again(planes: Planes) -> None:
    key_id = planes.create()
    backup = {name: planes.client.dump(name) for name in planes.client.keys(f"{PREFIX}:*")}
    planes.revoke(key_id)
    planes.client.delete(*planes.client.keys(f"{PREFIX}:*"))
    for name, dumped in backup.items():
        planes.client.restore(name, 0, dumped)
    assert key_id in planes.served().keys  # what a gateway started now would serve
    # b's check takes the revocation for a's key change in flight once (a's own check, which
    # published a newer version than the store holds, builds at once)
    assert planes.check() == "in_flight"
    assert planes.check() == "published"
    assert key_id not in planes.served().keys


def test_a_revocation_lost_by_the_store_under_another_s_newer_version_is_published_at_once(
    planes: Planes,
) -> None:
    """Redis failed over to a replica that had not received ``a``'s revocation yet (or was
    restored from a backup), and ``b`` patched a key change over it, under a newer version than
    ``a`` stored: every gateway loaded it and accepted the revoked key again. ``a``'s check took
    its own revocation, which it had seen stored, for another process's change in flight, and
    left it to a second check (4 s, where the guarantee is 2 s)."""
    key_id = planes.create()
    backup = {name: planes.client.dump(name) for name in planes.client.keys(f"{PREFIX}:*")}
    planes.revoke(key_id)
    planes.client.delete(*planes.client.keys(f"{PREFIX}:*"))
    for name, dumped in backup.items():
        planes.client.restore(name, 0, dumped)
    data = ApiKeyCreate(project_id=planes.project, name="through b")
    with unit_of_work(planes.b.session_factory, planes.b.publish) as session:
        create_key(session, SYSTEM, planes.b.server_secret, planes.tenant, data)
    assert key_id in planes.served().keys
    assert check_published(planes.a) == "published"
    assert key_id not in planes.served().keys


def test_the_thorough_check_still_finds_a_change_written_without_the_services(
    planes: Planes,
) -> None:
    kept, edited = planes.create(), planes.create()
    with planes.a.session_factory() as session, session.begin():  # SQL by hand: not counted
        revoked = update(ApiKey).where(ApiKey.key_id == edited).values(revoked_at=planes.now)
        session.execute(revoked)
    assert planes.check() == "current"  # the store holds every change counted
    assert planes.builds == []
    assert planes.check(thorough=True) == "published"
    keys = planes.served().keys
    assert kept in keys and edited not in keys


def test_a_key_expired_after_another_process_s_change_is_dropped(planes: Planes) -> None:
    key_id = planes.create(expires_at=planes.now + timedelta(hours=1))
    planes.now += timedelta(hours=2)
    assert planes.check() == "current"
    assert planes.check() == "expired_keys"
    assert key_id not in planes.served().keys
    assert planes.builds == []


def test_a_price_version_taking_effect_is_built_for_whoever_published_last(
    planes: Planes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's version was built with the prices in force then: once a later version is,
    the state the store names is not the database's any more, though nothing was committed."""
    prices = [{"*": {k: p for k in ("input", "cached_input", "output")}} for p in ("1", "7")]
    starts = ["2026-01-01T00:00:00Z", "2030-01-01T00:00:00Z"]
    book = PriceBook(
        [
            version_from_document({"version": n + 1, "effective_from": start, "models": models})
            for n, (start, models) in enumerate(zip(starts, prices, strict=True))
        ]
    )
    planes.change(lambda s: apply_price_book(s, book))
    assert planes.check() == "current"
    before = planes.served().quotas.prices
    planes.now = datetime(2030, 1, 1, 0, 1, tzinfo=UTC)
    monkeypatch.setattr(quota_book, "datetime", _Frozen)
    assert planes.check() == "published"
    assert planes.builds == [1] and planes.served().quotas.prices != before


class _Frozen(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return datetime(2030, 1, 1, 0, 1, tzinfo=UTC)


def test_patches_landing_out_of_order_do_not_cost_every_later_foreign_change_a_build(
    planes: Planes,
) -> None:
    """Two control planes' key changes committed together, the later one's patch stored first
    (ordinary under concurrent key traffic): the store's record stops before the first
    (correctly). Every later change through ``a`` alone is published by its shard: the store
    holds each, and once a check's build found it holding them all it says so, so ``b`` builds
    no more after each of them."""
    deferred: list[Change] = []
    data = ApiKeyCreate(project_id=planes.project, name="key")
    with unit_of_work(planes.a.session_factory, deferred.append) as session:  # a's, publish late
        create_key(session, SYSTEM, planes.a.server_secret, planes.tenant, data)
    planes.b.whole_every_s = 3600.0  # b's change is patched although it does not follow a's
    with unit_of_work(planes.b.session_factory, planes.b.publish) as session:
        create_key(session, SYSTEM, planes.b.server_secret, planes.tenant, data)
    planes.a.publish(deferred[0])  # a's patch now: both changes are in the store
    assert planes.check() == "current"  # one build to learn it: fair
    assert check_published(planes.a) == "current"  # a learns it from the store's record
    planes.builds.clear()
    for _ in range(3):
        planes.create()  # through a, patched: the store holds every change counted
        assert planes.check() == "current"
    assert planes.builds == []


def test_a_thorough_check_refused_by_another_s_patch_builds_again(planes: Planes) -> None:
    """The thorough check is for what the change count does not see (SQL by hand, a database
    restored from a backup). Its whole build refused by ``a``'s patch (a key change through
    the other control plane, ordinary under key traffic), the store's record (the count, which
    the hand edit did not move) must not end its tries: the key revoked by hand would stay
    served until a later thorough check that nobody refuses."""
    made = [planes.create() for _ in range(6)]
    edited = made[0]
    raced = next(k for k in made[1:] if key_shard(k) != key_shard(edited))
    with planes.a.session_factory() as session, session.begin():  # SQL by hand: not counted
        revoked = update(ApiKey).where(ApiKey.key_id == edited).values(revoked_at=planes.now)
        session.execute(revoked)
    assert planes.check() == "current"  # the store holds every change counted
    publisher = planes.b.publisher
    assert isinstance(publisher, RedisSnapshotPublisher)
    whole = publisher.publish
    raced_once: list[str] = []

    def refused_once(*args: Any, **kwargs: Any) -> bool:
        if not raced_once:  # a's key change lands during b's first whole build
            raced_once.append(raced)
            planes.revoke(raced)  # patched by a, under a newer version
        return whole(*args, **kwargs)

    publisher.publish = refused_once  # type: ignore[method-assign]
    planes.check(thorough=True)
    keys = planes.served().keys
    assert raced not in keys
    assert edited not in keys, "the thorough check left the key revoked by hand served"


def test_a_check_counted_published_stored_what_it_built(planes: Planes) -> None:
    """``published`` is "built: the store did not hold it, published whole"
    (docs/controlplane.md); "current" is "the store held it: another process published it".
    A check whose build was refused by another process's newer version holding its state
    stored nothing (its only build counted ``refused``): that is ``current``."""
    planes.retier("silver", published=False)  # not in the store: b's check builds
    publisher = planes.b.publisher
    assert isinstance(publisher, RedisSnapshotPublisher)
    whole = publisher.publish
    raced: list[bool] = []

    def refused_once(*args: Any, **kwargs: Any) -> bool:
        if not raced:  # a publishes whole (its start, a retry) during b's build
            raced.append(True)
            with planes.a.publishing:
                assert planes.a.publish_now()
        return whole(*args, **kwargs)

    publisher.publish = refused_once  # type: ignore[method-assign]
    before = samples(planes.b, "trunkline_snapshot_publishes_total", outcome="stored")
    outcome = planes.check()
    assert planes.served().tenants[str(planes.tenant)].tier == "silver"
    stored = samples(planes.b, "trunkline_snapshot_publishes_total", outcome="stored") - before
    assert outcome == "current" or stored >= 1, (outcome, stored)


def test_a_database_restored_from_a_backup_brings_the_store_s_record_back(
    planes: Planes,
) -> None:
    """The database restored to a backup taken at count c0, the store's record at c0+3 (three
    changes made after the backup, lost with it). The control planes start again and publish
    from the restored database: kept at c0+3, the record claimed the next three changes, other
    ones, as they were made; a revocation whose publish failed, then two keys patched through
    ``a``, and ``b``'s check said "current" while the store served the revoked key (until the
    thorough check, a minute later)."""
    kept = planes.create()
    with planes.a.session_factory() as session:
        c0 = session.scalar(select(ConfigGeneration.generation))
    assert c0 is not None
    lost = [planes.create() for _ in range(3)]
    recorded = planes.a.publisher.built_from()
    assert recorded is not None and recorded.built_from.generation == c0 + 3
    with planes.a.session_factory() as session, session.begin():  # the restore
        session.execute(delete(ApiKey).where(ApiKey.key_id.in_(lost)))
        session.execute(
            update(ConfigGeneration).where(ConfigGeneration.id == CONFIG_ROW).values(generation=c0)
        )
    a, b = _restarted(planes), _restarted(planes)
    try:
        recorded = a.publisher.built_from()
        assert recorded is not None and recorded.built_from.generation == c0
        a.whole_every_s = 3600.0  # a whole build is recent: key changes are patched
        with unit_of_work(a.session_factory, lambda _change: None) as session:
            revoke_key(session, SYSTEM, key_tenant(session, kept), kept)
        for _ in range(2):
            data = ApiKeyCreate(project_id=planes.project, name="after the restore")
            with unit_of_work(a.session_factory, a.publish) as session:
                create_key(session, SYSTEM, a.server_secret, planes.tenant, data)
        assert check_published(b) == "in_flight"  # taken for a's key change in flight, once
        assert check_published(b) == "published"
        assert kept not in planes.served().keys
    finally:
        a.close()
        b.close()


def _restarted(planes: Planes) -> Runtime:
    """A control plane started afresh on the same database and Redis, publishing at its start
    as every one does."""
    fresh = build_runtime(planes.a.settings)
    fresh = dataclasses.replace(fresh, publisher=RedisSnapshotPublisher(planes.client, PREFIX))
    fresh.publish()
    return fresh


async def test_gateways_holding_a_version_no_control_plane_remembers_get_newer_ones(
    planes: Planes,
) -> None:
    """A CLI run on a laptop whose clock was a day ahead published a key: every gateway served
    its version, a day ahead. Then Redis lost its data and every control plane restarted: they
    published under their own clocks, below it, and the gateways kept the old configuration
    and ignored every change after it (a key revoked since accepted, a key created refused) for
    the day, or until restarted. A gateway says which version it serves when the store holds an
    older one, and the control planes' next check publishes above it."""
    ahead_ms = int(planes.now.timestamp() * 1000) + 86_400_000
    laptop = dataclasses.replace(
        planes.a, publisher=RedisSnapshotPublisher(planes.client, PREFIX, clock_ms=lambda: ahead_ms)
    )
    revoked = planes.create()
    laptop.publish()
    client = aioredis.Redis.from_url(planes.url)
    gateway = SnapshotHolder(RedisSnapshotSource(client, PREFIX))
    assert await gateway.refresh() and gateway.current.version >= ahead_ms
    planes.client.delete(*planes.client.keys(f"{PREFIX}:*"))  # Redis lost its data
    restarted = _restarted(planes)
    try:
        with unit_of_work(restarted.session_factory, restarted.publish) as session:
            revoke_key(session, SYSTEM, key_tenant(session, revoked), revoked)
        assert restarted.publisher.published_version() is not None  # the revocation, stored
        await gateway.refresh()  # finds the store behind the version it serves
        check_published(restarted)
        await gateway.refresh()
        assert revoked not in gateway.current.keys
    finally:
        restarted.close()
        await client.aclose()


async def test_a_key_change_is_not_patched_over_a_store_behind_what_gateways_serve(
    planes: Planes,
) -> None:
    """Redis restored from a backup taken before ``a`` revoked a key, which the gateways serve
    revoked: ``b``, not knowing the store went back, patched its key change over the parts
    from before, under a newer version, and every gateway loaded it and accepted the revoked
    key again until ``a``'s next check. A gateway that polled since said what it serves, and
    ``b`` publishes whole."""
    key_id = planes.create()
    backup = {name: planes.client.dump(name) for name in planes.client.keys(f"{PREFIX}:*")}
    planes.revoke(key_id)
    client = aioredis.Redis.from_url(planes.url)
    gateway = SnapshotHolder(RedisSnapshotSource(client, PREFIX))
    try:
        assert await gateway.refresh() and key_id not in gateway.current.keys
        planes.client.delete(*planes.client.keys(f"{PREFIX}:*"))
        for name, dumped in backup.items():
            planes.client.restore(name, 0, dumped)
        assert not await gateway.refresh()  # finds the store behind
        data = ApiKeyCreate(project_id=planes.project, name="through b")
        with unit_of_work(planes.b.session_factory, planes.b.publish) as session:
            create_key(session, SYSTEM, planes.b.server_secret, planes.tenant, data)
        await gateway.refresh()
        assert key_id not in gateway.current.keys
    finally:
        await client.aclose()
