"""Two PostgreSQL transactions made to meet: one written and not committed while another runs
beside it, committed once that one waits on a lock (for it) or has ended. A test then looks at
what both did, with no sleep deciding the order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from trunkline.kit.db import transaction

__all__ = ["DEADLINE_S", "beside_a_held_transaction", "until_waiting_or_done"]

DEADLINE_S = 60.0

Held = TypeVar("Held")
Beside = TypeVar("Beside")


def beside_a_held_transaction(
    factory: sessionmaker[Session],
    write: Callable[[Session], Held],
    beside: Callable[[], Beside],
    within: Callable[[sessionmaker[Session]], AbstractContextManager[Session]] = transaction,
) -> tuple[Future[Beside], Future[Held]]:
    """Run ``beside`` while ``write``'s transaction (``within``, a plain one by default) is
    written and not committed; it commits once ``beside`` waits on a lock or has ended.
    Returns both outcomes, ``beside``'s first."""
    written, commit = threading.Event(), threading.Event()

    def held() -> Held:
        with within(factory) as session:
            try:
                return write(session)
            finally:
                written.set()
                commit.wait(DEADLINE_S)

    with ThreadPoolExecutor(2) as pool:
        wrote = pool.submit(held)
        assert written.wait(DEADLINE_S)
        ran = pool.submit(beside)
        until_waiting_or_done(factory, ran)
        commit.set()
    return ran, wrote


def until_waiting_or_done(factory: sessionmaker[Session], running: Future[Any]) -> None:
    """Return once ``running`` has ended or a transaction of the database waits on a lock."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    )
    with factory() as session:
        for _ in range(int(DEADLINE_S / 0.05)):
            if running.done() or session.scalar(waiting):
                return
            session.rollback()
            threading.Event().wait(0.05)
    raise AssertionError("neither waited on a lock nor ended")
