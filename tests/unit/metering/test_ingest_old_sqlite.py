"""Usage ingest on a SQLite library built with a lower cap on bind parameters than 32,766
(999, the default before 3.32), as ``kit.db`` allows for everywhere else."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from trunkline.kit.db import transaction
from trunkline.metering.ingest import write_usage
from trunkline.models import UsageEvent, UsageRollupWatermark
from unit.metering.usage_support import accounts, at, event, migrated, old_sqlite


def test_a_batch_of_usage_is_ingested_on_an_older_sqlite(tmp_path: Path) -> None:
    """Its INSERTs held 1,000 events of 22 values each: any batch over 45 events failed
    ("too many SQL variables"), and was retried for ever while the usage waited unbilled."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    acme = accounts(migrated(url))["acme"]
    with old_sqlite(url) as factory:
        late = [event(acme, when=at(1, 0) + timedelta(hours=n)) for n in range(600)]
        with transaction(factory) as session:  # 600 hours: 600 watermarks of 4 values each
            assert write_usage(session, late) == 600
        with factory() as session:
            assert session.scalar(select(func.count()).select_from(UsageEvent)) == 600
            marks = select(func.count()).select_from(UsageRollupWatermark)
            assert session.scalar(marks) == 600
