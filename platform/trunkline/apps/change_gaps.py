"""The changes the snapshot store may lack (another control plane's, as a rule, its publish
under way), and whether a patch of key shards may be stored over them: read from the store's
record (``SnapshotPublisher.built_from``) and the kinds of change on record
(``config_changes``)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.orm import Session, sessionmaker

from trunkline.snapshot import SnapshotPublisher
from trunkline.snapshot.store import Recorded
from trunkline.tenancy.changes import changed_shards, changes_keys_only

GAPS_LOOKED_UP = 256
"""A key change further than this past the store's record is published whole, not patched
after the kinds of the changes between were read (``rest_keys_only``)."""


def rest_keys_only(
    publisher: SnapshotPublisher,
    session_factory: sessionmaker[Session],
    generations: set[int],
    *,
    seen: int | None,
    carried: Collection[int],
) -> bool:
    """Whether every change committed before ``generations`` that the store's record
    (``built_from``) does not say it holds, nor this process (``seen``, ``carried``: its whole
    builds and patches), changed keys only (``config_changes``).

    Every version stored after the recorded one holds what it holds (a whole build reads
    after its version is handed out, which is after the record's state was read; a patch
    or a vouch keeps its base's other parts), so a patch of these changes' shards over
    whatever is stored by then leaves out no change before them but key changes, which the
    process that committed each publishes by its own shards (or, should it stop first,
    the control plane's check, which builds when the store's record is not the database's
    state)."""
    recorded = publisher.built_from()
    if recorded is None:
        return False
    floor = recorded.built_from.generation
    if seen is not None:
        floor = max(floor, seen)
    top = max(generations)
    if top - floor > GAPS_LOOKED_UP:
        return False
    rest = set(range(floor + 1, top)) - generations - set(carried) - recorded.ahead
    if not rest:
        return True
    with session_factory() as session:
        return changes_keys_only(session, rest)


def key_gap(
    recorded: Recorded | None, session_factory: sessionmaker[Session], top: int
) -> tuple[list[int], set[int]] | None:
    """The changes up to ``top`` that the store's record does not name (neither up to its
    generation nor stored past a gap: ``ahead``), and the key shards they changed, when they
    all changed keys only (``config_changes``), within ``GAPS_LOOKED_UP`` of the record;
    else None. A patch of those shards, read after its version is handed out (after they
    committed), carries them all. Counting the shards of the changes stored past the gap
    too, a check under a stream of patches through another control plane found more than
    ``WHOLE_ABOVE`` shards and built whole, refused by the next patch. ``recorded``: the
    store's record (``SnapshotPublisher.built_from``), as the caller read it."""
    if recorded is None or not 0 < top - recorded.built_from.generation <= GAPS_LOOKED_UP:
        return None
    above = range(recorded.built_from.generation + 1, top + 1)
    missing = [g for g in above if g not in recorded.ahead]
    with session_factory() as session:
        shards = changed_shards(session, missing)
    return None if shards is None else (missing, shards)
