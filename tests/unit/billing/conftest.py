"""Billing unit fixtures: a migrated SQLite database holding the example tenants."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from unit.metering.usage_support import Account, accounts, migrated


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    made = migrated(f"sqlite:///{tmp_path / 'usage.db'}")
    yield made
    bind = made.kw["bind"]
    bind.dispose()


@pytest.fixture
def tenants(factory: sessionmaker[Session]) -> dict[str, Account]:
    return accounts(factory)
