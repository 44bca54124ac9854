"""Closing and exporting a month on a SQLite library built with a lower cap on bind parameters
than 32,766 (999, the default before 3.32), as ``kit.db`` allows for everywhere else."""

from __future__ import annotations

import uuid
from pathlib import Path

from trunkline.billing.closing import close
from trunkline.billing.pricebook_store import load_price_book
from trunkline.billing.statements import statements_by_tenants
from trunkline.kit.db import transaction
from trunkline.models import UsageRollup
from unit.billing.billing_support import DEC, NOV
from unit.metering.usage_support import LLAMA, accounts, at, event, ingest, migrated, old_sqlite

TENANTS = 1_000
"""Tenants billed in November: more than such a library's cap."""


def test_a_corrected_month_of_a_thousand_tenants_closes_on_an_older_sqlite(
    tmp_path: Path,
) -> None:
    """A close re-rates a corrected month, and an export reads a month, a group of tenants at
    a time, each group's read naming its tenants: a group of more tenants than the cap (up to
    20,000 of those with little usage) failed ("too many SQL variables"), and so every close
    after the late event, and every export of the month."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    factory = migrated(url)
    acme = accounts(factory)["acme"]
    with transaction(factory) as session:
        session.add_all(
            UsageRollup(
                tenant_id=uuid.uuid4(),
                hour=at(3),
                project_id=uuid.uuid4(),
                api_key_id="",
                model=LLAMA,
                pool="",
                tier="gold",
                region="",
                accelerator="",
                outcome="completed",
                requests=1,
                prompt_tokens=1000,
                cached_tokens=0,
                completion_tokens=100,
                slo_eligible=1,
                slo_met=1,
                updated_at=at(3),
            )
            for _ in range(TENANTS)
        )
    with transaction(factory) as session:
        assert close(session, NOV, at(2, month=12))
    ingest(factory, [event(acme, when=at(29))])  # late: November is corrected
    with old_sqlite(url) as capped:
        with transaction(capped) as session:
            assert close(session, DEC, at(2, month=1, year=2027))
        with transaction(capped) as session:
            book = load_price_book(session)
            now = at(2, month=1, year=2027)
            november, december = (
                [
                    line
                    for part in statements_by_tenants(session, p, book, now=now)
                    for line in part.lines
                ]
                for p in (NOV, DEC)
            )
    assert len({line.tenant_id for line in november}) == TENANTS
    assert {line.tenant_id for line in december if line.correction} == {uuid.UUID(acme.tenant_id)}
