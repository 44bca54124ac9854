"""``one_view`` on SQLite: a transaction that reads in one view, and one that also writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from trunkline.kit.db import make_engine, one_view


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    made = make_engine(f"sqlite:///{tmp_path / 'view.db'}")
    with made.begin() as connection:
        connection.execute(text("CREATE TABLE counts (n INTEGER)"))
        connection.execute(text("INSERT INTO counts VALUES (1)"))
    return made


def _write_beside(engine: Engine) -> None:
    """Another process's write, waiting at most a moment for the lock."""
    other = create_engine(engine.url, connect_args={"timeout": 0.05})
    try:
        with other.begin() as connection:
            connection.execute(text("INSERT INTO counts VALUES (2)"))
    finally:
        other.dispose()


def test_reads_in_one_view_do_not_see_a_commit_made_beside_them(engine: Engine) -> None:
    with Session(engine) as session:
        one_view(session)
        assert session.scalar(text("SELECT count(*) FROM counts")) == 1
        _write_beside(engine)
        assert session.scalar(text("SELECT count(*) FROM counts")) == 1
    with Session(engine) as session:
        assert session.scalar(text("SELECT count(*) FROM counts")) == 2


def test_a_view_that_writes_holds_the_write_lock_from_its_start(engine: Engine) -> None:
    """Deferred, its first write failed at once (database is locked) when another connection
    had committed since its first read: `billing export --close --out` lost the close."""
    with Session(engine) as session, session.begin():
        one_view(session, read_only=False)
        assert session.scalar(text("SELECT count(*) FROM counts")) == 1
        with pytest.raises(OperationalError, match="locked"):
            _write_beside(engine)  # waits for this transaction instead of slipping in
        session.execute(text("INSERT INTO counts VALUES (3)"))
    with Session(engine) as session:
        assert list(session.scalars(text("SELECT n FROM counts ORDER BY n"))) == [1, 3]
