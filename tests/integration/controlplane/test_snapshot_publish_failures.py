"""Two control planes (``planes_support``): a change of this process's whose publish failed, or
was refused every time because the other kept storing newer versions, is never taken as
carried until a build that read it is stored, and never makes this process build whole at
every write after it (a loop of refused whole builds held revocations 2-9 s in a probe)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
import redis
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from integration.controlplane.planes_support import (
    PREFIX,
    SYSTEM,
    Planes,
    refusing,
    samples,
)
from trunkline.apps import change_publisher
from trunkline.apps.publishing import check_published
from trunkline.apps.runtime import Runtime, build_runtime
from trunkline.keys.schemas import ApiKeyBatch, ApiKeyCreate
from trunkline.keys.service import create_key, create_keys, key_tenant, revoke_key
from trunkline.kit.shards import key_shard
from trunkline.models import ApiKey
from trunkline.snapshot import RedisSnapshotPublisher
from trunkline.snapshot.store import Patched
from trunkline.tenancy.changes import unit_of_work
from trunkline.tenancy.schemas import TenantUpdate
from trunkline.tenancy.service import update_tenant


class _Failing:
    """``held``, its writes raising ``error``; ``once``: only the first, the store answering
    again for whatever comes next."""

    def __init__(self, runtime: Runtime, error: Exception, *, once: bool = False) -> None:
        self.runtime, self.held, self.error, self.once = runtime, runtime.publisher, error, once

    def __getattr__(self, name: str) -> Any:
        if name in ("patch", "publish"):
            if self.once:
                self.runtime.publisher = self.held
            raise self.error
        return getattr(self.held, name)


def _a_key_after_a_whole_build(planes: Planes) -> str:
    """A key created through ``a`` once ``a`` stored a whole build recently, so its next key
    changes are patched."""
    planes.a.whole_every_s = 3600.0
    key_id = planes.create()
    with planes.a.publishing:
        planes.a.publish_now()
    return key_id


def test_a_check_waiting_on_a_failing_publish_builds_its_change_at_once(planes: Planes) -> None:
    """The failed publish said so (``left``) only after it freed the lock: a check waiting on
    the lock took this process's own revocation for another's in flight, a round more (found
    in review)."""
    key_id = planes.create()
    a, real = planes.a, planes.a.publishing
    seen: list[str] = []

    class CheckOnRelease:
        """The publishing lock; its release after the failure runs a's check at once."""

        armed = False

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            return real.acquire(blocking, timeout)

        def release(self) -> None:
            real.release()
            if CheckOnRelease.armed:
                CheckOnRelease.armed = False
                runner = threading.Thread(target=lambda: seen.append(check_published(a)))
                runner.start()
                runner.join()

        def __enter__(self) -> bool:
            return self.acquire()

        def __exit__(self, *exc: object) -> None:
            self.release()

    a.publishing = CheckOnRelease()  # type: ignore[assignment]
    a.publisher = _Failing(a, redis.ConnectionError("away"), once=True)  # type: ignore[assignment]
    CheckOnRelease.armed = True
    planes.revoke(key_id)
    assert seen == ["published"] and key_id not in planes.served().keys


def test_a_database_error_in_a_publish_leaves_its_change_to_this_process_s_check(
    planes: Planes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole build starts by taking every change left so far as carried; the database
    failing under it (not Redis) left them all unsaid (found in review)."""
    first, second = planes.create(), planes.create()
    a = planes.a
    a.publisher = _Failing(a, redis.ConnectionError("away"), once=True)  # type: ignore[assignment]
    planes.revoke(first)
    a.outage.answered()  # a call answered since: publishes try again
    assert a.left
    monkeypatch.setattr(a.publisher, "patch", lambda *_a, **_k: Patched.REFUSED)

    def database_gone(*_a: Any, **_k: Any) -> Any:
        raise OperationalError("SELECT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(change_publisher, "publish_snapshot", database_gone)
    with pytest.raises(OperationalError):
        planes.revoke(second)
    monkeypatch.undo()
    served = planes.served().keys
    assert first in served and second in served
    assert check_published(a) == "published"
    assert not {first, second} & set(planes.served().keys)


def test_a_key_change_after_this_process_s_refused_one_carries_it_by_its_shard(
    planes: Planes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within ``whole_every_s`` of a whole build, a key change was patched over this process's
    own revocation refused every time (found in review); then every key change after one built
    whole, refused by the other control plane's patches in turn, for up to 25 s in a probe.
    The next patch rebuilds the missing change's shard too, and carries it."""
    wholes: list[int] = []
    whole_build = change_publisher.publish_snapshot

    def counted(*args: Any, **kwargs: Any) -> Any:
        wholes.append(1)
        return whole_build(*args, **kwargs)

    monkeypatch.setattr(change_publisher, "publish_snapshot", counted)
    a, victim = planes.a, _a_key_after_a_whole_build(planes)
    with refusing(a):
        planes.revoke(victim)  # refused every time
    assert a.left and victim in planes.served().keys
    wholes.clear()
    next(
        k for k in iter(planes.create, None) if key_shard(k) != key_shard(victim)
    )  # fmt: skip
    assert victim not in planes.served().keys and not a.left
    assert wholes == []


def test_a_check_refused_every_time_leaves_this_process_s_key_changes_patched(
    planes: Planes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check's whole build, refused by the other control plane's patches, said this
    process's own changes might be missing (none were): each later key change of it built
    whole, refused in turn (revocations of 2-9 s for up to 25 s in a probe)."""
    b = planes.b
    planes.create()  # a's, published
    with unit_of_work(planes.a.session_factory, lambda _change: None) as session:
        create_key(
            session, SYSTEM, planes.a.server_secret, planes.tenant,
            ApiKeyCreate(project_id=planes.project, name="a's, in flight"),
        )  # fmt: skip
    monkeypatch.setattr(b.publisher, "publish", lambda *_a, **_k: False)  # refused
    assert planes.check(thorough=True) == "refused"
    monkeypatch.undo()
    assert not b.left
    key_id = planes.create()
    before = samples(b, "trunkline_snapshot_publishes_total", kind="whole")
    with unit_of_work(b.session_factory, b.publish) as session:
        revoke_key(session, SYSTEM, key_tenant(session, key_id), key_id)
    assert samples(b, "trunkline_snapshot_publishes_total", kind="whole") == before  # patched
    assert key_id not in planes.served().keys


def test_a_check_refused_while_the_store_holds_every_change_leaves_nothing_left(
    planes: Planes,
) -> None:
    """Refused every time, but the store holds what the database says (another stored it):
    nothing of this process's is missing, and its key changes go on being patched (found in
    review: a refused check set ``left`` all the same)."""
    planes.retier("silver", published=False)
    b = planes.b
    publisher = b.publisher
    assert isinstance(publisher, RedisSnapshotPublisher)
    whole = publisher.publish

    def refused(*args: Any, **kwargs: Any) -> bool:
        with planes.a.publishing:  # a stores the same configuration first, saying nothing
            planes.a.publish_now()
        planes.client.delete(f"{PREFIX}:snapshot:v2:built_from")
        return whole(*args, **kwargs)

    publisher.publish = refused  # type: ignore[method-assign]
    assert planes.check() == "current"  # refused every time, but the store holds it all
    publisher.publish = whole  # type: ignore[method-assign]
    assert planes.served().tenants[str(planes.tenant)].tier == "silver"
    assert not b.left


def test_a_refused_check_does_not_forget_this_process_s_missing_revocation(
    planes: Planes,
) -> None:
    """a's revocation refused every time sets ``left``; a's check, whose gap holds b's tenant
    change, builds whole and is refused too: it cleared ``left`` (the build would have carried
    it) and did not set it back, so a's next key change was patched over its own missing
    revocation (found in review)."""
    a, victim = planes.a, _a_key_after_a_whole_build(planes)
    with refusing(a):
        planes.revoke(victim)  # refused every time
        assert a.left
        with unit_of_work(planes.b.session_factory, lambda _change: None) as session:
            update_tenant(session, planes.tenant, TenantUpdate(tier="silver"))  # b's, in flight
        assert check_published(a) == "refused"
    next(k for k in iter(planes.create, None) if key_shard(k) != key_shard(victim))
    assert victim not in planes.served().keys


def test_a_start_publish_refused_is_not_taken_as_carried_by_a_key_gap_patch(
    planes: Planes,
) -> None:
    """A restarted control plane's publish (for what the count does not see, here a revocation
    by hand) refused every time: its next key change took the gap of counted key changes,
    patched, and the change by hand was never built in while every check but the thorough
    said ``current`` (found in review). Only a whole build carries it (``left_whole``)."""
    victim = planes.create()
    with planes.a.session_factory() as session, session.begin():
        session.execute(update(ApiKey).where(ApiKey.key_id == victim).values(revoked_at=planes.now))
    c = dataclasses.replace(
        build_runtime(planes.a.settings), publisher=RedisSnapshotPublisher(planes.client, PREFIX)
    )
    try:
        publisher = c.publisher
        assert isinstance(publisher, RedisSnapshotPublisher)
        real_publish = publisher.publish
        publisher.publish = lambda *_a, **_k: False  # type: ignore[method-assign]
        c.publish()  # at its start, refused every time
        publisher.publish = real_publish  # type: ignore[method-assign]
        assert c.left_whole
        data = ApiKeyCreate(project_id=planes.project, name="c's")
        for _ in range(20):
            with unit_of_work(c.session_factory, c.publish) as session:
                made = create_key(session, SYSTEM, c.server_secret, planes.tenant, data)
            if key_shard(str(made.key.key_id)) != key_shard(victim):
                break
        assert planes.check() == "current"
        assert victim not in planes.served().keys
    finally:
        c.close()


def test_a_key_gap_too_wide_to_patch_publishes_whole_as_counted(
    planes: Planes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``left``, the gap's generations join the patch's; when the shards are then too
    many the whole publish was asked as not counted although every change was exact: a record
    of its state alone, and no ``held`` after a refusal (found in review)."""
    a = planes.a
    victim = planes.create()
    with refusing(a):
        planes.revoke(victim)  # refused every time
    assert a.left
    asked: list[bool] = []
    real_now = a.publish_now

    def spy(*, counted: bool = False) -> Any:
        asked.append(counted)
        return real_now(counted=counted)

    monkeypatch.setattr(a, "publish_now", spy)
    batch = ApiKeyBatch(
        keys=[ApiKeyCreate(project_id=planes.project, name=f"k{i}") for i in range(60)]
    )
    planes.change(lambda s: create_keys(s, SYSTEM, a.server_secret, planes.tenant, batch))
    assert asked == [True]
