"""A model check of the snapshot store's record (``built_from``, and ``ahead``: generations
patches stored past a gap): random interleavings of control planes committing changes and
publishing them (patches of their own key changes, whole builds, some ``alone``, vouches, and
the check's patch of the key gap, which carries only the changes the record does not name)
never leave the record claiming a change the stored content lacks. A claimed change that is
missing is one a check takes for published: a revoked key served until a thorough check.

The content is modelled part by part: each part (the core, a few key shards) lists the changes
in it, as a read of the database at that moment gives it; the decisions are the real ones
(``InMemorySnapshotStore``'s record, ``change_gaps.key_gap``)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Collection, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import pytest

from trunkline.apps import change_gaps
from trunkline.snapshot import InMemorySnapshotStore
from trunkline.snapshot.store import BuiltFrom, Patched, content_digest, part_digest

SHARDS = 6
CORE = "core"
Step = Iterator[None]
"""A process's work, one atomic step (a read of the database or a call to the store) a time."""


def _shard(n: int) -> str:
    return f"keys/{n:02d}"


@dataclass
class World:
    """The database (its changes in commit order: the part each changed) and the store."""

    store: InMemorySnapshotStore = field(default_factory=InMemorySnapshotStore)
    changes: list[str] = field(default_factory=list)
    """The part the change of generation ``i + 1`` changed."""
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    @property
    def generation(self) -> int:
        return len(self.changes)

    def commit(self, part: str) -> int:
        self.changes.append(part)
        return self.generation

    def read(self, parts: Collection[str]) -> dict[str, bytes]:
        """``parts`` as a build reading the database now gives them."""
        return {
            p: json.dumps([g for g, c in enumerate(self.changes, 1) if c == p]).encode()
            for p in parts
        }

    def every_part(self) -> dict[str, bytes]:
        return self.read([CORE, *(_shard(n) for n in range(SHARDS))])

    def changed_shards(self, _session: Any, generations: Collection[int]) -> set[int] | None:
        """``tenancy.changes.changed_shards`` over the modelled ``config_changes``."""
        parts = [self.changes[g - 1] for g in generations]
        if CORE in parts:
            return None
        return {int(p.removeprefix("keys/")) for p in parts}

    def claimed_but_missing(self) -> list[int]:
        """The changes the store's record says it holds and its content lacks."""
        recorded = self.store.built_from()
        if recorded is None:
            return []
        loaded = self.loop.run_until_complete(self.store.load())
        assert loaded is not None
        held = {name: set(json.loads(blob)) for name, blob in loaded.blobs.items()}
        claimed = {*range(1, recorded.built_from.generation + 1), *recorded.ahead}
        return sorted(
            g for g in claimed if g > self.generation or g not in held[self.changes[g - 1]]
        )


def whole(world: World, *, alone: bool, commit: bool) -> Step:
    """A whole build (after a change of the core, when ``commit``): its state read first,
    then its version handed out, then the database read."""
    if commit:
        world.commit(CORE)
        yield
    for _ in range(3):
        state = world.generation
        yield
        version = world.store.next_version()
        yield
        parts = world.every_part()
        yield
        built_from = BuiltFrom(state, alone=alone)
        if world.store.publish(version, parts, published_at=0.0, built_from=built_from):
            return


def patch(world: World, shards: set[int], carried: list[int]) -> Step:
    """A patch of ``shards`` carrying ``carried`` (committed before it starts), tried again
    under a newer version when refused, whole when there is no base."""
    for _ in range(8):
        version = world.store.next_version()
        yield
        parts = world.read([_shard(n) for n in shards])
        yield
        outcome = world.store.patch(version, dict(parts), published_at=0.0, carried=carried)
        if outcome is Patched.STORED:
            return
        if outcome is Patched.NO_BASE:
            break
    yield from whole(world, alone=False, commit=False)


def key_change(world: World, rng: random.Random) -> Step:
    """A key change, published by its shard (perhaps with the key gap, as ``_carry_left_too``
    adds it), or not at all (its publish failed: the check carries it)."""
    shard = rng.randrange(SHARDS)
    generation = world.commit(_shard(shard))
    yield
    roll = rng.random()
    if roll < 0.2:
        return
    shards, carried = {shard}, [generation]
    if roll < 0.5:
        gap = change_gaps.key_gap(world.store.built_from(), nullcontext, world.generation)  # type: ignore[arg-type]
        yield
        if gap is not None:
            carried, shards = sorted({*carried, *gap[0]}), shards | gap[1]
    yield from patch(world, shards, carried)


def check_gap(world: World) -> Step:
    """The check's patch of the key gap (``publishing._follow_key_gap``)."""
    top = world.generation
    yield
    gap = change_gaps.key_gap(world.store.built_from(), nullcontext, top)  # type: ignore[arg-type]
    yield
    if gap is not None and gap[1]:
        yield from patch(world, gap[1], gap[0])


def vouch(world: World, *, alone: bool) -> Step:
    """A check that found the store holding what it built, saying so (``publishing._vouch``)."""
    state = world.generation
    yield
    current = content_digest({n: part_digest(b) for n, b in world.every_part().items()})
    yield
    if world.store.published_digest() != current:
        return
    held = world.store.published_version()
    yield
    new = world.store.next_version()
    yield
    assert held is not None
    world.store.vouch(held, current, new, BuiltFrom(state, alone=alone))


def _started(world: World, rng: random.Random) -> Step:
    roll = rng.random()
    if roll < 0.55:
        return key_change(world, rng)
    if roll < 0.65:
        return whole(world, alone=False, commit=True)
    if roll < 0.7:
        return whole(world, alone=True, commit=False)
    if roll < 0.9:
        return check_gap(world)
    return vouch(world, alone=rng.random() < 0.3)


@pytest.mark.parametrize("seed", range(25))
def test_the_record_never_claims_a_change_the_stored_content_lacks(
    seed: int, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    rng, world = random.Random(seed), World()
    request.addfinalizer(world.loop.close)
    monkeypatch.setattr(change_gaps, "changed_shards", world.changed_shards)
    for _ in whole(world, alone=True, commit=False):
        pass
    running: list[Step] = []
    for step in range(600):
        if len(running) < 4 and rng.random() < 0.3:
            running.append(_started(world, rng))
        if not running:
            continue
        process = rng.choice(running)
        if next(process, StopIteration) is StopIteration:
            running.remove(process)
        assert world.claimed_but_missing() == [], (seed, step, world.store.built_from())
