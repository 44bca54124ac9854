"""Each committed change to the gateways' configuration records whether it changed keys only
(``config_changes``, SQLite and PostgreSQL), in its own transaction: a control plane patches
its key changes over another's not yet stored only when that one's says so. A change that
says nothing, or is too old to be kept, is never taken for a key change."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, select, update

from trunkline.apps.runtime import Runtime
from trunkline.auth.principal import Principal
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.keys.service import create_key, key_tenant, revoke_key
from trunkline.kit.shards import key_shard
from trunkline.models import CONFIG_ROW, ConfigChange, ConfigGeneration
from trunkline.tenancy.changes import (
    CHANGES_KEPT,
    changed_shards,
    changes_keys_only,
    config_generation,
    unit_of_work,
)
from trunkline.tenancy.schemas import TenantUpdate
from trunkline.tenancy.service import update_tenant
from unit.controlplane.cp_support import World

SYSTEM = Principal.system()


def _generation(runtime: Runtime) -> int:
    with runtime.session_factory() as session:
        generation = config_generation(session)
    assert generation is not None
    return generation


def _keys_only(runtime: Runtime, *generations: int) -> bool:
    with runtime.session_factory() as session:
        return changes_keys_only(session, generations)


def _create(world: World) -> str:
    runtime = world.runtime
    tenant = uuid.UUID(world.tenant("acme"))
    data = ApiKeyCreate(project_id=uuid.UUID(world.project("acme", "demo")), name="k")
    with unit_of_work(runtime.session_factory, lambda _change: None) as session:
        made = create_key(session, SYSTEM, runtime.server_secret, tenant, data)
    return str(made.key.key_id)


def _retier(world: World, tier: str, *, with_key: str | None = None) -> None:
    runtime, acme = world.runtime, uuid.UUID(world.tenant("acme"))
    with unit_of_work(runtime.session_factory, lambda _change: None) as session:
        if with_key is not None:
            revoke_key(session, SYSTEM, key_tenant(session, with_key), with_key)
        update_tenant(session, acme, TenantUpdate(tier=tier))


def test_each_change_says_whether_it_changed_keys_only(world: World) -> None:
    runtime = world.runtime
    key_id = _create(world)
    created = _generation(runtime)
    _retier(world, "silver")
    retiered = _generation(runtime)
    _retier(world, "gold", with_key=key_id)  # a key and a tenant in one transaction
    both = _generation(runtime)
    assert (created, retiered, both) == (created, created + 1, created + 2)
    assert _keys_only(runtime, created)
    assert not _keys_only(runtime, retiered)
    assert not _keys_only(runtime, both)
    assert not _keys_only(runtime, created, retiered)
    assert not _keys_only(runtime, both + 1)  # not committed: nothing known of it
    assert _keys_only(runtime)


def test_only_the_latest_changes_are_kept_and_a_forgotten_one_is_not_keys_only(
    world: World,
) -> None:
    runtime = world.runtime
    _create(world)
    early = _generation(runtime)
    assert _keys_only(runtime, early)
    far = 2 * CHANGES_KEPT - 2  # the next two changes reach a multiple of the pruning step
    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(ConfigGeneration).where(ConfigGeneration.id == CONFIG_ROW).values(generation=far)
        )
    first, second = _create(world), _create(world)
    assert first != second and _generation(runtime) == far + 2
    assert not _keys_only(runtime, early)  # forgotten: taken for any change
    assert _keys_only(runtime, far + 1, far + 2)
    with runtime.session_factory() as session:
        kept: Any = session.scalars(select(ConfigChange.generation)).all()
    assert min(kept) > far + 2 - CHANGES_KEPT


def test_a_change_committed_by_a_process_that_does_not_record_kinds_is_not_keys_only(
    world: World,
) -> None:
    """A control plane of the version before, still running during the upgrade, bumps the
    count without a row: that generation is unknown, so a patch over it is not taken."""
    runtime = world.runtime
    _create(world)
    with runtime.session_factory() as session, session.begin():
        generation = session.scalar(
            update(ConfigGeneration)
            .where(ConfigGeneration.id == CONFIG_ROW)
            .values(generation=ConfigGeneration.generation + 1)
            .returning(ConfigGeneration.generation)
        )
    assert generation is not None
    _create(world)
    assert not _keys_only(runtime, generation)
    assert _keys_only(runtime, generation + 1)
    with runtime.session_factory() as session, session.begin():  # what a writer says counts
        session.execute(insert(ConfigChange).values(generation=generation, keys_only=True))
    assert _keys_only(runtime, generation, generation + 1)


def test_a_count_set_back_by_hand_does_not_refuse_the_changes_after_it(world: World) -> None:
    """Rows left above the count (set back by hand, or a restore without this table) are
    another history's: a change at their generation replaces them and commits."""
    runtime = world.runtime
    _create(world)
    _retier(world, "silver")
    retiered = _generation(runtime)
    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(ConfigGeneration)
            .where(ConfigGeneration.id == CONFIG_ROW)
            .values(generation=retiered - 2)
        )
    _create(world)
    _create(world)
    assert _generation(runtime) == retiered
    assert _keys_only(runtime, retiered - 1, retiered)  # the tenant change's row is gone


def test_a_key_change_records_the_shards_it_changed(world: World) -> None:
    """What a check patches in when another process's key change never reaches the store."""
    runtime = world.runtime
    first = _create(world)
    created = _generation(runtime)
    second = _create(world)
    _retier(world, "silver")
    with runtime.session_factory() as session:
        assert changed_shards(session, [created]) == {key_shard(first)}
        assert changed_shards(session, [created, created + 1]) == {
            key_shard(first),
            key_shard(second),
        }
        assert changed_shards(session, [created, created + 2]) is None  # the tenant's
        assert changed_shards(session, []) == set()
