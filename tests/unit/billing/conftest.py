"""Billing unit fixtures: a migrated SQLite database holding the example tenants, and a month
billed with every kind of line."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.capacity import add_capacity
from trunkline.billing.closing import close
from trunkline.billing.periods import parse_period
from trunkline.billing.pricebook_store import load_price_book
from trunkline.kit.db import transaction
from unit.metering.usage_support import Account, accounts, at, event, ingest, migrated


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    made = migrated(f"sqlite:///{tmp_path / 'usage.db'}")
    yield made
    bind = made.kw["bind"]
    bind.dispose()


@pytest.fixture
def tenants(factory: sessionmaker[Session]) -> dict[str, Account]:
    return accounts(factory)


@pytest.fixture
def month(factory: sessionmaker[Session], tenants: dict[str, Account]) -> sessionmaker[Session]:
    """November 2026 closed with every kind of line (token usage, dedicated GPUs still held,
    an SLA credit), then a late event: a correction in December."""
    acme, globex = tenants["acme"], tenants["globex"]
    ingest(
        factory,
        [
            event(acme, when=at(3), prompt=5000, cached=3000, completion=700, stream=True),
            event(acme, when=at(3), status=499, ttft_ms=900.0),  # cancelled, a miss
            event(acme, when=at(4), status=502, ttft_ms=None),  # failed, a miss
            event(globex, when=at(5), prompt=10, completion=3, model="bge-small-en"),
        ],
    )
    with transaction(factory) as session:
        add_capacity(
            session,
            uuid.UUID(globex.tenant_id),
            "l40s",
            2,
            at(30, 22),
            prices=load_price_book(session),
        )
        close(session, parse_period("2026-11"), at(2, month=12))
    ingest(factory, [event(acme, when=at(29), prompt=100, completion=1)])  # late
    return factory
