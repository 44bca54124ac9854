"""A constraint's refusal on SQLite, as ``kit.db.unique_violation`` and
``tenancy.changes.flush_or_conflict`` tell it: a primary key's clash is a unique violation
there as on PostgreSQL (23505 for both), a foreign key's is not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import ForeignKey, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from trunkline.errors import Conflict
from trunkline.kit.db import make_engine, unique_violation
from trunkline.tenancy.changes import flush_or_conflict


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'rows.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE parents (id INTEGER PRIMARY KEY)"))
        connection.execute(text("CREATE TABLE named (name TEXT UNIQUE)"))
        connection.execute(
            text(
                "CREATE TABLE children (rowid INTEGER PRIMARY KEY,"
                " parent INTEGER NOT NULL REFERENCES parents (id))"
            )
        )
        connection.execute(text("INSERT INTO parents VALUES (1)"))
        connection.execute(text("INSERT INTO named VALUES ('a')"))
    with Session(engine) as opened:
        yield opened
    engine.dispose()


@pytest.mark.parametrize(
    ("statement", "unique"),
    [
        ("INSERT INTO parents VALUES (1)", True),  # SQLITE_CONSTRAINT_PRIMARYKEY (was False)
        ("INSERT INTO named VALUES ('a')", True),  # SQLITE_CONSTRAINT_UNIQUE
        ("INSERT INTO children (parent) VALUES (2)", False),  # SQLITE_CONSTRAINT_FOREIGNKEY
    ],
)
def test_a_unique_violation_is_a_unique_or_primary_key_clash(
    session: Session, statement: str, unique: bool
) -> None:
    with pytest.raises(IntegrityError) as refused:
        session.execute(text(statement))
    assert unique_violation(refused.value) is unique


class Base(DeclarativeBase):
    pass


class Parent(Base):
    __tablename__ = "parents"
    id: Mapped[int] = mapped_column(primary_key=True)


class Child(Base):
    __tablename__ = "children"
    rowid: Mapped[int] = mapped_column(primary_key=True)
    parent: Mapped[int] = mapped_column(ForeignKey("parents.id"))


@pytest.mark.parametrize("unique_only", [False, True])
def test_a_clash_with_a_row_added_meanwhile_is_a_conflict(
    session: Session, unique_only: bool
) -> None:
    session.add(Parent(id=1))
    with pytest.raises(Conflict, match="parent 1 exists"):
        flush_or_conflict(session, "parent 1 exists", unique_only=unique_only)


def test_a_foreign_key_refusal_is_a_conflict_unless_unique_only(session: Session) -> None:
    """``pools.flavors`` relies on the first (a flavor still used by a pool); the manifests on
    the second (applying again would be refused again: no race)."""
    session.add(Child(parent=2))
    with pytest.raises(Conflict, match="FOREIGN KEY"):
        flush_or_conflict(session, lambda exc: str(exc.orig))
    session.rollback()
    session.add(Child(parent=2))
    with pytest.raises(IntegrityError):
        flush_or_conflict(session, "not raised", unique_only=True)
