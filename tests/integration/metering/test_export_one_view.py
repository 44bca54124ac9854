"""An export of every tenant (FOCUS CSV or invoices), read a group of tenants at a time, sees
the database as it was at its first read, whatever commits while it is sent (on SQLite and
PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing import statements
from trunkline.billing.exports import export_period
from unit.billing.billing_support import DEC
from unit.metering.usage_support import accounts, at, event, ingest, migrated


@pytest.fixture
def factory(database_url: str) -> sessionmaker[Session]:
    return migrated(database_url)


def _export(factory: sessionmaker[Session], fmt: str) -> str:
    with factory() as session:
        export = export_period(session, DEC, fmt, now=at(20, month=12), reader=factory)
        return b"".join(export.chunks).decode()


@pytest.mark.parametrize("fmt", ["focus-csv", "invoice"])
def test_usage_rolled_up_while_an_export_is_sent_is_in_none_of_its_groups(
    factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """Each group was read as the database stood when it was read: usage rolled up between
    groups reached the tenants read after it and not those before, a file no moment held."""
    tenants = accounts(factory)
    ingest(factory, [event(tenants[s], when=at(3, month=12)) for s in tenants])
    before = _export(factory, fmt)
    monkeypatch.setattr(statements, "ROWS_PER_STATEMENT", 1)  # a group per tenant
    made = statements.statement
    groups = []

    def then_more_usage(*args: object, **kwargs: object) -> statements.Statement:
        group = made(*args, **kwargs)  # type: ignore[arg-type]
        groups.append(group)
        if len(groups) == 1:  # the first group is read: every tenant uses more
            ingest(factory, [event(tenants[s], when=at(4, month=12)) for s in tenants])
        return group

    monkeypatch.setattr(statements, "statement", then_more_usage)
    assert _export(factory, fmt) == before
    assert len(groups) == 3, "read a tenant at a time"
    monkeypatch.setattr(statements, "statement", made)
    after = _export(factory, fmt)
    assert after != before, "the usage was rolled up and is in the next export"
