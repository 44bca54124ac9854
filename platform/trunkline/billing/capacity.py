"""Dedicated GPU capacity: allocations held for a tenant, billed per GPU-hour, idle included."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from trunkline.billing.charges import GPU_HOURS, USAGE, ChargeLine, Names
from trunkline.billing.periods import Period
from trunkline.billing.pricebook import PriceBook, PriceVersion
from trunkline.billing.rating import rate
from trunkline.billing.scope import TenantScope, in_scope
from trunkline.errors import ConfigurationError, Conflict, InvalidRequest, NotFound
from trunkline.metering.rollup_plan import HOUR
from trunkline.models import BillingPeriod, DedicatedCapacity
from trunkline.tenancy.changes import hold_config


def _gpu_hours(
    session: Session, period: Period, tenants: TenantScope, until: datetime | None
) -> dict[tuple[Any, ...], int]:
    """GPUs held per (tenant, project, hour, flavor, region) within ``period``, in the hours
    begun before ``until`` (if given)."""
    capacity = DedicatedCapacity
    statement = select(capacity).where(
        capacity.starts_at < period.end,
        (capacity.ends_at.is_(None)) | (capacity.ends_at > period.start),
    )
    statement = statement.where(in_scope(capacity.tenant_id, tenants))
    gpu_hours: dict[tuple[Any, ...], int] = defaultdict(int)
    for held in session.scalars(statement):
        hour = max(held.starts_at, period.start).replace(minute=0, second=0, microsecond=0)
        end = min(held.ends_at or period.end, period.end, until or period.end)
        while hour < end:
            gpu_hours[(held.tenant_id, held.project_id, hour, held.flavor, held.region)] += (
                held.gpus
            )
            hour += HOUR
    return gpu_hours


def capacity_lines(
    session: Session,
    period: Period,
    book: PriceBook,
    names: Names,
    tenants: TenantScope = None,
    until: datetime | None = None,
) -> list[ChargeLine]:
    """Dedicated GPUs, by the hour: every hour an allocation overlaps is billed in full; in
    an open period only the hours begun before ``until`` (now): the rest are not incurred."""
    gpu_hours = _gpu_hours(session, period, tenants, until)
    out = []
    for (tenant, project, hour, flavor, region), hours in gpu_hours.items():
        version = book.at(hour)
        slug, name = names.tenant(tenant)
        rated = rate(Decimal(hours), version.gpu_hour_price(flavor), version.discount(slug))
        out.append(
            ChargeLine(
                tenant,
                slug,
                name,
                USAGE,
                hour,
                hour + HOUR,
                sku_id=f"gpu-hours:{flavor}",
                description=f"dedicated {flavor} GPUs, billed per hour whether busy or idle",
                frequency="Recurring",
                project_id=project,
                project_name=names.projects.get(project) if project else None,
                region=region or None,
                flavor=flavor,
                consumed_quantity=Decimal(hours),
                consumed_unit=GPU_HOURS,
                pricing_quantity=Decimal(hours),
                pricing_unit=GPU_HOURS,
                list_unit_price=rated.list_unit_price,
                contracted_unit_price=rated.contracted_unit_price,
                list_cost=rated.list_cost,
                contracted_cost=rated.contracted_cost,
                price_version=version.version,
            )
        )
    return out


def unpriced_capacity(session: Session, book: PriceBook, *, first_added: bool) -> list[str]:
    """Versions of ``book`` that would price an hour of a recorded allocation without a
    GPU-hour price for its flavor (every export of those periods would fail on them); and,
    where its first version is being added (``first_added``), allocations held before it,
    which no version prices."""
    problems = []
    first = book.versions[0]
    held_from = session.scalar(select(func.min(DedicatedCapacity.starts_at)))
    if first_added and held_from is not None and held_from < first.effective_from:
        problems.append(
            f"capacity is held from {held_from:%Y-%m-%d %H:%M} UTC, before the first version "
            f"({first.version}, from {first.effective_from:%Y-%m-%d %H:%M} UTC)"
        )
    unpriced: dict[tuple[int, str], list[uuid.UUID]] = defaultdict(list)
    for held in session.scalars(select(DedicatedCapacity).order_by(DedicatedCapacity.starts_at)):
        first_hour = held.starts_at.replace(minute=0, second=0, microsecond=0)
        for version, until in book.spans():
            overlaps = (until is None or first_hour < until) and (
                held.ends_at is None or held.ends_at > version.effective_from
            )
            if overlaps and held.flavor not in version.gpu_hour:
                unpriced[(version.version, held.flavor)].append(held.id)
    for (number, flavor), ids in unpriced.items():
        problems.append(f"version {number} has no GPU-hour price for {flavor!r}, {_held_by(ids)}")
    return problems


SHOWN = 5
"""Allocations an error names of a flavor left unpriced (hundreds made it hundreds of clauses)."""


def _held_by(ids: list[uuid.UUID]) -> str:
    if len(ids) == 1:
        return f"held by capacity {ids[0]}"
    shown = ", ".join(map(str, ids[:SHOWN]))
    more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    return f"held by {len(ids)} allocations ({shown}{more})"


def latest_closed_end(session: Session) -> datetime | None:
    """The end of the latest closed billing period."""
    return session.scalar(select(func.max(BillingPeriod.period_end)))


def hold_price_book(session: Session) -> None:
    """Hold the price book's versions until this transaction ends: a billing period closed,
    and a write checked against the closed periods (a price book version stored, capacity
    added or ended), then cannot interleave. Each such write checks that it changes nothing
    inside a closed period, and a close commits the period it billed with the versions and
    capacity it read; unheld, a version or capacity inside the month a close was billing
    passed its check and changed what that month had been billed.

    PostgreSQL: a table lock that SELECTs pass and that writers and other holders wait for;
    taken before a ``one_view`` transaction's first query, it does not fix that view, which is
    then taken after a version applied meanwhile committed. SQLite: the database's write lock
    (``hold_config``), which a close's transaction holds from its start; the reads after it
    are in its transaction (pysqlite reads before a write outside any: a check read so, before
    a close committed, passed, and its write waited for the close and went through)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE price_book_versions IN SHARE ROW EXCLUSIVE MODE"))
    else:
        hold_config(session)


def hold_price_book_now(session: Session) -> None:
    """``hold_price_book`` for a transaction that holds the configuration's lock (applying or
    withdrawing a price book version): refused at once while a close holds the book, since
    waiting out the close (which writes the month's exports in its transaction) held every
    control-plane change queued behind the configuration's lock as long."""
    if session.get_bind().dialect.name != "postgresql":
        hold_price_book(session)  # SQLite: the write lock, which that transaction holds already
        return
    try:
        session.execute(text("LOCK TABLE price_book_versions IN SHARE ROW EXCLUSIVE MODE NOWAIT"))
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        raise Conflict(
            "a billing period is being closed (or dedicated capacity changed) right now, and the "
            "price book is held until that commits; try again in a moment",
            reason="price_book_busy",
        ) from None


_LOCK_NOT_AVAILABLE = "55P03"


def _in_force(prices: PriceBook, moment: datetime) -> PriceVersion | None:
    try:
        return prices.at(moment)
    except ConfigurationError:  # before the first version
        return None


def _require_priced(
    prices: PriceBook, flavor: str, starts_at: datetime, ends_at: datetime | None, *, param: str
) -> None:
    """Refuse an allocation of ``flavor`` held from ``starts_at`` until ``ends_at`` that a
    version of ``prices`` without a GPU-hour price for it would bill an hour of: every export
    and close of those hours would fail. A version from the allocation's end on prices none."""
    unpriced = [
        v.version
        for v in prices.versions
        if flavor not in v.gpu_hour
        and (v.effective_from > starts_at or v is _in_force(prices, starts_at))
        and (ends_at is None or v.effective_from < ends_at)
    ]
    if unpriced:
        raise InvalidRequest(
            f"flavor {flavor!r} has no GPU-hour price in price book version(s) "
            f"{', '.join(map(str, unpriced))}: add one first (trunkline billing prices apply)",
            param=param,
        )


MAX_GPUS = 1_000_000
"""GPUs one allocation may hold (the column is a 32-bit integer: more failed in the database)."""


def add_capacity(
    session: Session,
    tenant_id: uuid.UUID,
    flavor: str,
    gpus: int,
    starts_at: datetime,
    ends_at: datetime | None = None,
    *,
    prices: PriceBook,
    region: str = "",
    project_id: uuid.UUID | None = None,
) -> DedicatedCapacity:
    """Record GPUs held for a tenant from ``starts_at`` (until ``ends_at``, or open-ended).

    Capacity may not reach into a closed billing period: what was billed there is final, and
    corrections are for late usage, not for rewritten allocations; nor start before the first
    version of ``prices``: no price bills those hours, so every export of their month failed,
    and the worker's close of it (and of every month after) with them. Every version of ``prices``
    that will price it must have a GPU-hour price for ``flavor``: else every export of those
    periods would fail. ``prices`` are read after ``hold_price_book``, as this holds it.
    """
    hold_price_book(session)
    closed_until = latest_closed_end(session)
    if not 1 <= gpus <= MAX_GPUS:
        raise InvalidRequest(f"gpus must be 1 to {MAX_GPUS}", param="gpus")
    first = prices.versions[0].effective_from
    if starts_at < first:
        raise InvalidRequest(
            f"capacity cannot start before {first:%Y-%m-%d %H:%M} UTC, when the first price "
            "book version takes effect: no price bills its hours before then",
            param="starts_at",
        )
    _require_priced(prices, flavor, starts_at, ends_at, param="flavor")
    if ends_at is not None and ends_at <= starts_at:
        raise InvalidRequest("the allocation must end after it starts", param="ends_at")
    if closed_until is not None and starts_at < closed_until:
        raise Conflict(
            f"capacity cannot start before {closed_until:%Y-%m-%d}: that period is closed"
        )
    row = DedicatedCapacity(
        tenant_id=tenant_id,
        project_id=project_id,
        flavor=flavor,
        region=region,
        gpus=gpus,
        starts_at=starts_at,
        ends_at=ends_at,
    )
    session.add(row)
    session.flush()
    return row


def end_capacity(
    session: Session, capacity_id: uuid.UUID, ends_at: datetime, *, prices: PriceBook
) -> DedicatedCapacity:
    """End an allocation at ``ends_at`` (its GPUs released): billed for the hours begun before
    it, no more. Without it, an allocation recorded open-ended was billed every hour for ever.

    Neither its end now nor the new one may fall in a closed billing period: the hours billed
    there are final (an allocation that ended in one is done). A later end than it had must be
    priced as ``add_capacity`` says: an allocation recorded ended before a version without its
    flavor, then ended after that version's start, failed every export of those hours.
    ``prices`` are read after ``hold_price_book``, as this holds it."""
    hold_price_book(session)
    row = session.get(DedicatedCapacity, capacity_id, with_for_update=True)
    if row is None:
        raise NotFound("capacity not found", param="capacity_id")
    if ends_at <= row.starts_at:
        raise InvalidRequest("the allocation must end after it starts", param="ends_at")
    if row.ends_at is not None and ends_at > row.ends_at:  # an earlier end bills no new hour
        _require_priced(prices, row.flavor, row.starts_at, ends_at, param="ends_at")
    closed_until = latest_closed_end(session)
    if closed_until is not None:
        for end in (row.ends_at, ends_at):
            if end is not None and end < closed_until:
                raise Conflict(
                    f"capacity cannot end before {closed_until:%Y-%m-%d}: that period is closed"
                )
    row.ends_at = ends_at
    session.flush()
    return row
