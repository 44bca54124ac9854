"""Unit-of-work helpers shared by the control-plane services.

Services never publish the gateway snapshot themselves: they mark the session,
and the composition root (the request's session provider, the CLI) publishes
once the transaction has committed. A snapshot built before the commit could
miss the change; one built after a rollback would announce what never happened.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from trunkline.errors import Conflict
from trunkline.kit.db import transaction, unique_violation
from trunkline.kit.shards import key_shard
from trunkline.models import CONFIG_ROW, ConfigChange, ConfigGeneration

_CHANGED = "trunkline.config_changed"
_KEYS = "trunkline.changed_keys"
"""The keys this unit of work changed, while all it changed is keys; None once it changed
anything else."""
_GENERATION = "trunkline.config_generation"


@dataclass(frozen=True)
class Change:
    """A committed change to what gateways must know."""

    generation: int | None
    """``config_generation`` its commit set (None: not known)."""
    keys: frozenset[str] | None
    """The only keys it changed (by public id), or None: not confined to keys."""
    exact: bool = True
    """``generation`` is the one its commit set, not one read after it (which may be another
    process's change)."""


WHOLE = Change(None, None)
"""Some change, not known which: the whole configuration is built again."""


def mark_config_changed(session: Session) -> None:
    """Record that this unit of work changes what gateways must know."""
    session.info[_CHANGED] = True
    session.info[_KEYS] = None


def mark_keys_changed(session: Session, key_ids: Iterable[str]) -> None:
    """Record that this unit of work changes these keys (their row, or the limits resolved
    for them): if it changes nothing else, gateways learn it by the shards that hold them."""
    keys = session.info.get(_KEYS, set()) if config_changed(session) else set()
    if keys is not None:
        keys.update(key_ids)
    session.info[_CHANGED], session.info[_KEYS] = True, keys


def change_of(session: Session) -> Change:
    """What the committed unit of work ``session`` changed (``config_changed``)."""
    keys = session.info.get(_KEYS)
    return Change(session.info.get(_GENERATION), None if keys is None else frozenset(keys))


def config_changed(session: Session) -> bool:
    return bool(session.info.get(_CHANGED, False))


def count_config_changes(factory: sessionmaker[Session]) -> None:
    """Make every commit of ``factory``'s sessions that changed gateway config bump the
    ``config_generation`` counter, in that transaction: any process's change moves it."""

    @event.listens_for(factory, "before_commit")
    def bump(session: Session) -> None:
        if config_changed(session):
            bumped = ConfigGeneration.generation + 1
            generation = session.info[_GENERATION] = session.scalar(
                update(ConfigGeneration)
                .where(ConfigGeneration.id == CONFIG_ROW)
                .values(generation=bumped)
                .returning(ConfigGeneration.generation)
            )
            if generation is not None:
                _record_change(session, generation, session.info.get(_KEYS))


CHANGES_KEPT = 4096
"""How many of the latest changes' kinds ``config_changes`` keeps (``changes_keys_only``)."""

_PRUNE_EVERY = 256


def _record_change(session: Session, generation: int, keys: Collection[str] | None) -> None:
    """Write what the change that set ``generation`` was (the only ``keys`` it changed, or None),
    in its transaction (which holds the counter's lock: rows are written in generation order),
    and now and then forget the old. Rows at or above it are another history's (the count set
    back by hand, or restored without this table): they go, and a change is never refused for
    them."""
    shards = None if keys is None else " ".join(map(str, sorted({key_shard(k) for k in keys})))
    session.execute(delete(ConfigChange).where(ConfigChange.generation >= generation))
    session.execute(
        insert(ConfigChange).values(
            generation=generation, keys_only=keys is not None, shards=shards
        )
    )
    if generation % _PRUNE_EVERY == 0:
        session.execute(
            delete(ConfigChange).where(ConfigChange.generation <= generation - CHANGES_KEPT)
        )


def changes_keys_only(session: Session, generations: Collection[int]) -> bool:
    """Whether each of these committed changes is known to have changed keys only (False for
    one older than the ``CHANGES_KEPT`` kept, or committed by a process that did not say)."""
    if not generations:
        return True
    statement = select(func.count()).where(
        ConfigChange.generation.between(min(generations), max(generations)),
        ConfigChange.generation.in_(generations),
        ConfigChange.keys_only.is_(True),
    )
    return session.scalar(statement) == len(set(generations))


def hold_config(session: Session) -> None:
    """Hold the configuration's lock until this transaction ends: a check and the write it
    allows then cannot interleave with another transaction's that holds it too (each would
    check against what the other had not committed yet). An update that changes nothing:
    the counter's row lock on PostgreSQL, the database's write lock on SQLite; either waits
    for a holder to end."""
    session.execute(
        update(ConfigGeneration)
        .where(ConfigGeneration.id == CONFIG_ROW)
        .values(generation=ConfigGeneration.generation)
    )


def config_generation(session: Session) -> int | None:
    """How many changes to gateway config have committed (None: the counter's row is missing,
    so nothing can be told from it: publish and check as if it moved)."""
    statement = select(ConfigGeneration.generation).where(ConfigGeneration.id == CONFIG_ROW)
    return session.scalar(statement)


@contextmanager
def changing(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction that may change the configuration: it holds the configuration's lock
    (``hold_config``) before anything else.

    Every such transaction takes that lock first, so none of them can deadlock another: a
    change bumps the counter at its commit anyway, and one that wrote a row (a key, a member,
    a tier) before waiting there for a transaction that holds the lock and then needs that row
    (``tenants apply``, which holds it from its start) waited in a cycle. They queue on it for
    their whole transaction instead of their commit: the control plane's writes are short.
    """
    with transaction(factory) as session:
        hold_config(session)
        yield session


@contextmanager
def unit_of_work(
    factory: sessionmaker[Session], publish: Callable[[Change], None]
) -> Iterator[Session]:
    """One transaction that may change the configuration (``changing``); ``publish`` runs
    after it commits, if it changed gateway config, with what it changed.

    For callers outside a request (CLI, embedded launcher), e.g.
    ``with unit_of_work(runtime.session_factory, runtime.publish) as session: ...``.
    """
    with changing(factory) as session:
        yield session
    if config_changed(session):
        publish(change_of(session))


def assign(target: object, values: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Set the attributes that differ; return ``{field: (old, new)}`` for those only."""
    changed: dict[str, tuple[Any, Any]] = {}
    for name, new in values.items():
        old = getattr(target, name)
        if old != new:
            setattr(target, name, new)
            changed[name] = (old, new)
    return changed


def flush_or_conflict(
    session: Session,
    message: str | Callable[[IntegrityError], str],
    *,
    unique_only: bool = False,
    param: str | None = None,
) -> None:
    """Flush now so a constraint's refusal surfaces as ``Conflict`` (``message``, or what it
    says of the refusal; ``param``: the field it names), not a server error: a unique
    constraint's (another writer added the row first), and a foreign key's (a row still named
    elsewhere: ``pools.flavors`` and ``pools.catalog_models`` rely on it). ``unique_only``: any
    other refusal is raised as it is, no race that trying again would pass."""
    try:
        session.flush()
    except IntegrityError as exc:
        if unique_only and not unique_violation(exc):
            raise
        said = message if isinstance(message, str) else message(exc)
        raise Conflict(said, param=param) from exc


def changed_shards(session: Session, generations: Collection[int]) -> set[int] | None:
    """The key shards these committed changes changed, or None when one of them is not known
    to have changed keys only (``changes_keys_only``)."""
    if not generations:
        return set()
    rows = session.execute(
        select(ConfigChange.generation, ConfigChange.shards).where(
            ConfigChange.generation.between(min(generations), max(generations)),
            ConfigChange.generation.in_(generations),
            ConfigChange.keys_only.is_(True),
        )
    ).all()
    if len(rows) != len(set(generations)) or any(shards is None for _, shards in rows):
        return None
    return {int(shard) for _, shards in rows for shard in str(shards).split()}
