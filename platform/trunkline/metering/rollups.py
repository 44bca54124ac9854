"""The rollup job: recompute the hourly rollups of every tenant-hour whose watermark moved.

Rollups are recomputed from the ledger (never incremented), so running the job twice, or
after a redelivery, changes nothing, and a late event changes only its own hour's rows.

The work is done in the database, per chunk of tenant-hours: the hours' rollups aggregated
into a temporary table, upserted into ``usage_rollups`` where a measure differs (``revision``
+ 1), the rows of those hours that are no longer in the aggregate deleted, and the watermarks
moved. No rollup row passes through Python: moving each row
through the driver to compare it took most of a run's time.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    MetaData,
    Table,
    and_,
    delete,
    exists,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from trunkline.kit.db import conflict_insert, transaction
from trunkline.kit.ids import utcnow
from trunkline.metering.rollup_aggregate import Ranges, in_ranges, ledger_rollups
from trunkline.metering.rollup_plan import KEY_COLUMNS, MEASURE_COLUMNS, hour_ranges
from trunkline.models import UsageRollup, UsageRollupWatermark

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RollupRun:
    tenant_hours: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    def __add__(self, other: RollupRun) -> RollupRun:
        return RollupRun(
            self.tenant_hours + other.tenant_hours,
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.deleted + other.deleted,
        )


Recompute = Callable[[Session, Ranges, datetime], tuple[int, int, int]]
"""Make the stored rollups of some ranges equal the ledger's; (inserted, updated, deleted)."""


def rollup_usage(
    factory: sessionmaker[Session],
    *,
    chunk: int = 500,
    clock: Callable[[], datetime] = utcnow,
    recompute: Recompute | None = None,
) -> RollupRun:
    """Roll up the pending tenant-hours once each, in (hour, tenant) order, ``chunk`` of them
    per transaction (``recompute``: the benchmark's baseline); those that change behind it
    are the next run's. Under steady ingest every tenant-hour active now changes again while
    a chunk is rolled up: a run that went on while its chunks came back full never ended,
    and one that stopped after as many as were pending took the first ones again each chunk,
    so tenants past the first chunk waited for their hour to go quiet."""
    total, after = RollupRun(), None
    while True:
        with transaction(factory) as session:
            run, after = rollup_chunk(session, chunk, clock(), recompute or recompute_in_sql, after)
        total += run
        if run.tenant_hours < chunk:
            break
    if total.tenant_hours:
        log.info("usage rolled up", extra=vars_of(total))
    return total


def vars_of(run: RollupRun) -> dict[str, int]:
    return {"tenant_hours": run.tenant_hours, "inserted": run.inserted, "updated": run.updated}


TenantHour = tuple[datetime, uuid.UUID]


def rollup_chunk(
    session: Session,
    limit: int,
    now: datetime,
    recompute: Recompute,
    after: TenantHour | None = None,
) -> tuple[RollupRun, TenantHour | None]:
    """Roll up up to ``limit`` pending tenant-hours past ``after`` (hour, tenant); what it
    did, and the last it took (``after`` if none)."""
    mark = UsageRollupWatermark
    statement = select(mark.tenant_id, mark.hour, mark.changed_seq).where(
        mark.changed_seq > mark.rolled_seq
    )
    if after is not None:
        hour, tenant = after
        statement = statement.where(
            or_(mark.hour > hour, and_(mark.hour == hour, mark.tenant_id > tenant))
        )
    marks = session.execute(
        statement.order_by(mark.hour, mark.tenant_id).limit(limit).with_for_update(skip_locked=True)
    ).all()
    if not marks:
        return RollupRun(), after
    ranges = hour_ranges((tenant, hour) for tenant, hour, _seq in marks)
    inserted, updated, deleted = recompute(session, ranges, now)
    session.execute(
        update(mark),
        [{"tenant_id": t, "hour": h, "rolled_seq": seq} for t, h, seq in marks],
    )
    last_tenant, last_hour, _seq = marks[-1]
    return RollupRun(len(marks), inserted, updated, deleted), (last_hour, last_tenant)


def recompute_in_sql(session: Session, ranges: Ranges, now: datetime) -> tuple[int, int, int]:
    """Make the stored rollups of ``ranges`` equal their aggregate of the ledger; (inserted,
    updated, deleted)."""
    fresh = _fresh_table()
    connection = session.connection()
    # Left over by a failed chunk on SQLite, where the driver runs DDL outside transactions.
    fresh.drop(connection, checkfirst=True)
    fresh.create(connection)
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        # The planner takes the product of the key columns' distinct counts for the number
        # of groups (750,000 for an hour of 1M events holding 276), so it sorted every event
        # of the hours, on disk past work_mem; hashing them (which spills if it must) took
        # half the time there, four fifths over an hour of 3.6M events (where the sort ran
        # on two workers). JIT compiling took ~70 ms a chunk and saved less.
        session.execute(text("SET LOCAL enable_sort = off"))
        session.execute(text("SET LOCAL jit = off"))
    names = [*KEY_COLUMNS, *MEASURE_COLUMNS]
    session.execute(fresh.insert().from_select(names, ledger_rollups(session, ranges)))
    if postgres:
        session.execute(text("SET LOCAL enable_sort = on"))
    revisions = session.scalars(_upsert(session, fresh, now)).all()
    inserted = sum(1 for revision in revisions if revision == 1)
    deleted = _delete_vanished(session, fresh, ranges)
    fresh.drop(connection)
    return inserted, len(revisions) - inserted, deleted


def _delete_vanished(session: Session, fresh: Table, ranges: Ranges) -> int:
    """Rows of ``ranges`` whose key is no longer in the ledger (its events were corrected)."""
    stored = UsageRollup.__table__.c
    same_key = and_(*(fresh.c[name] == stored[name] for name in KEY_COLUMNS))
    statement = delete(UsageRollup).where(
        in_ranges(UsageRollup.tenant_id, UsageRollup.hour, ranges), ~exists().where(same_key)
    )
    return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def _fresh_table() -> Table:
    columns = UsageRollup.__table__.c
    return Table(
        "usage_rollups_fresh",
        MetaData(),
        *(Column(name, columns[name].type, primary_key=True) for name in KEY_COLUMNS),
        *(Column(name, columns[name].type, nullable=False) for name in MEASURE_COLUMNS),
        prefixes=["TEMPORARY"],
    )


def _upsert(session: Session, fresh: Table, now: datetime) -> Any:
    """Every fresh row inserted with revision 1, or written over its stored row where a
    measure differs (revision + 1); the revision of each row written."""
    statement = conflict_insert(session, UsageRollup).from_select(
        [*KEY_COLUMNS, *MEASURE_COLUMNS, "revision", "updated_at"],
        # WHERE: SQLite reads an ON right after the FROM as a join's
        select(*fresh.c, literal(1), literal(now, UsageRollup.updated_at.type)).where(true()),
    )
    new, old = statement.excluded, UsageRollup.__table__.c
    return statement.on_conflict_do_update(
        index_elements=list(KEY_COLUMNS),
        set_={
            **{name: new[name] for name in MEASURE_COLUMNS},
            "revision": old.revision + 1,
            "updated_at": new.updated_at,
        },
        where=or_(*(old[name] != new[name] for name in MEASURE_COLUMNS)),
    ).returning(old.revision)
