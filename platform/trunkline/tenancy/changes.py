"""Unit-of-work helpers shared by the control-plane services.

Services never publish the gateway snapshot themselves: they mark the session,
and the composition root (the request's session provider, the CLI) publishes
once the transaction has committed. A snapshot built before the commit could
miss the change; one built after a rollback would announce what never happened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from trunkline.errors import Conflict
from trunkline.kit.db import transaction
from trunkline.models import CONFIG_ROW, ConfigGeneration

_CHANGED = "trunkline.config_changed"


def mark_config_changed(session: Session) -> None:
    """Record that this unit of work changes what gateways must know."""
    session.info[_CHANGED] = True


def config_changed(session: Session) -> bool:
    return bool(session.info.get(_CHANGED, False))


def count_config_changes(factory: sessionmaker[Session]) -> None:
    """Make every commit of ``factory``'s sessions that changed gateway config bump the
    ``config_generation`` counter, in that transaction: any process's change moves it."""

    @event.listens_for(factory, "before_commit")
    def bump(session: Session) -> None:
        if config_changed(session):
            bumped = ConfigGeneration.generation + 1
            session.execute(
                update(ConfigGeneration)
                .where(ConfigGeneration.id == CONFIG_ROW)
                .values(generation=bumped)
            )


def config_generation(session: Session) -> int | None:
    """How many changes to gateway config have committed (None: the counter's row is missing,
    so nothing can be told from it: publish and check as if it moved)."""
    statement = select(ConfigGeneration.generation).where(ConfigGeneration.id == CONFIG_ROW)
    return session.scalar(statement)


@contextmanager
def unit_of_work(factory: sessionmaker[Session], publish: Callable[[], None]) -> Iterator[Session]:
    """One transaction; ``publish`` runs after it commits, if it changed gateway config.

    For callers outside a request (CLI, embedded launcher), e.g.
    ``with unit_of_work(runtime.session_factory, runtime.publish) as session: ...``.
    """
    with transaction(factory) as session:
        yield session
    if config_changed(session):
        publish()


def assign(target: object, values: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Set the attributes that differ; return ``{field: (old, new)}`` for those only."""
    changed: dict[str, tuple[Any, Any]] = {}
    for name, new in values.items():
        old = getattr(target, name)
        if old != new:
            setattr(target, name, new)
            changed[name] = (old, new)
    return changed


def flush_or_conflict(session: Session, message: str) -> None:
    """Flush now so a unique-constraint race surfaces as ``Conflict``, not a server error."""
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(message) from exc
