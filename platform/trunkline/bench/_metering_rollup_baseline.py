"""The baseline of the rollup figures of ``trunkline bench metering``: the rollup job as it was
before it ran in SQL. Each chunk's aggregate and its stored rows were read into Python,
compared there, and the rows that differ written back one statement per row kind.
Passed to ``rollup_usage(recompute=...)`` so both run the same chunks and watermarks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.orm import Session

from trunkline.metering.rollup_aggregate import Ranges, in_ranges, ledger_rollups
from trunkline.metering.rollup_plan import KEY_COLUMNS, MEASURE_COLUMNS
from trunkline.models import UsageRollup

Key = tuple[Any, ...]
Measures = tuple[int, ...]


def recompute_in_python(session: Session, ranges: Ranges, now: datetime) -> tuple[int, int, int]:
    keys = len(KEY_COLUMNS)
    fresh: dict[Key, Measures] = {
        tuple(row[:keys]): tuple(int(v or 0) for v in row[keys:])
        for row in session.execute(ledger_rollups(session, ranges))
    }
    columns = [getattr(UsageRollup, name) for name in (*KEY_COLUMNS, *MEASURE_COLUMNS)]
    stored = session.execute(
        select(*columns, UsageRollup.revision).where(
            in_ranges(UsageRollup.tenant_id, UsageRollup.hour, ranges)
        )
    )
    existing = {tuple(row[:keys]): (tuple(row[keys:-1]), row[-1]) for row in stored}
    inserts = [key for key in fresh if key not in existing]
    updates = [key for key in fresh if key in existing and existing[key][0] != fresh[key]]
    deletes = [key for key in existing if key not in fresh]

    def row(key: Key, revision: int) -> dict[str, Any]:
        values = zip((*KEY_COLUMNS, *MEASURE_COLUMNS), (*key, *fresh[key]), strict=True)
        return {**dict(values), "revision": revision, "updated_at": now}

    if inserts:
        session.execute(insert(UsageRollup), [row(key, 1) for key in inserts])
    if updates:
        session.execute(update(UsageRollup), [row(key, existing[key][1] + 1) for key in updates])
    for key in deletes:
        matches = (getattr(UsageRollup, c) == v for c, v in zip(KEY_COLUMNS, key, strict=True))
        session.execute(delete(UsageRollup).where(and_(*matches)))
    return len(inserts), len(updates), len(deletes)
