"""Two control planes (``planes_support``) taking random key and tenant changes through either,
some of whose publishes never reach the store or are refused, and checks of either between:
whenever the store's record says its version holds the database's state, or a check says the
store is current, the store holds what the database says (else a revoked key is served while
every check says current, until a thorough one). The record's ``ahead`` (changes patches stored
past one not stored) is non-empty at many steps, and ``change_gaps.key_gap`` rebuilding one
shard fewer than it carries fails every seed."""

from __future__ import annotations

import random
from typing import Any

import pytest

from integration.controlplane.planes_support import SYSTEM, Planes, refusing
from trunkline.apps.config_state import config_state
from trunkline.apps.publishing import check_published
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.keys.service import create_key, key_tenant, revoke_key
from trunkline.snapshot.builder import current_digest
from trunkline.tenancy.changes import unit_of_work


def _holds_the_database(planes: Planes) -> bool:
    current = current_digest(
        planes.a.session_factory, cache_secret=planes.a.server_secret, now=planes.now
    )
    return planes.a.publisher.published_digest() == current


def _record_says_current(planes: Planes) -> bool:
    recorded = planes.a.publisher.built_from()
    with planes.a.session_factory() as session:
        state = config_state(session)
    return recorded is not None and recorded.built_from == state.as_built_from()


@pytest.mark.parametrize("seed", range(3))
def test_the_record_never_says_current_while_the_store_lacks_a_change(
    planes: Planes, seed: int
) -> None:
    rng = random.Random(seed)
    keys: list[str] = [planes.create()]
    tiers = iter(["silver", "gold"] * 100)
    for step in range(45):
        roll = rng.random()
        through = planes.a if rng.random() < 0.6 else planes.b
        published = rng.random() < 0.75

        def publish(change: Any, runtime: Any = through, published: bool = published) -> None:
            if published:
                runtime.publish(change)

        outcome = None
        if roll < 0.35:
            data = ApiKeyCreate(project_id=planes.project, name="walk")
            with unit_of_work(through.session_factory, publish) as session:
                made = create_key(session, SYSTEM, through.server_secret, planes.tenant, data)
            keys.append(str(made.key.key_id))
        elif roll < 0.55 and len(keys) > 1:
            key_id = keys.pop(rng.randrange(len(keys)))
            with unit_of_work(through.session_factory, publish) as session:
                revoke_key(session, SYSTEM, key_tenant(session, key_id), key_id)
        elif roll < 0.6:
            planes.retier(next(tiers), published=published)
        elif roll < 0.68:
            with refusing(planes.a):
                keys.append(planes.create())
        else:
            checker = planes.b if rng.random() < 0.6 else planes.a
            outcome = check_published(checker, thorough=rng.random() < 0.1)
        if _record_says_current(planes) or outcome == "current":
            assert _holds_the_database(planes), (
                seed,
                step,
                outcome,
                planes.a.publisher.built_from(),
            )
