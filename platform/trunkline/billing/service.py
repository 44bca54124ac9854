"""Billing operations shared by the CLI, the control-plane API and the worker.

Tenant admins export their own tenant only; platform admins (and the CLI, as the system)
export every tenant and close periods. Closing and exporting read rollups, so callers that
can (the CLI, the worker) roll usage up first.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trunkline.auth.principal import Principal
from trunkline.billing.capacity import latest_closed_end, unpriced_capacity
from trunkline.billing.charges import ChargeLine
from trunkline.billing.focus import csv_chunks, focus_rows, parquet_chunks
from trunkline.billing.invoice import invoice_chunks
from trunkline.billing.lines import require_priced
from trunkline.billing.periods import Period, month_of
from trunkline.billing.pricebook import (
    BUNDLED,
    DEFAULT_MODEL,
    PriceBook,
    PriceVersion,
    load_price_book_file,
    version_document,
    version_from_document,
)
from trunkline.billing.statements import close_period, statement, statements_by_tenants
from trunkline.errors import Conflict, InvalidRequest, NotFound
from trunkline.kit.db import one_view
from trunkline.kit.ids import utcnow
from trunkline.models import (
    BilledUsage,
    BillingPeriod,
    DedicatedCapacity,
    Model,
    PriceBookVersion,
    Tenant,
    UsageRollup,
)
from trunkline.quota.repository import QuotaRepository
from trunkline.tenancy.changes import flush_or_conflict, hold_config, mark_config_changed

FORMATS = {  # text types without a charset: the HTTP response adds "; charset=utf-8" itself
    "focus-csv": ("text/csv", "csv"),
    "focus-parquet": ("application/vnd.apache.parquet", "parquet"),
    "invoice": ("text/plain", "txt"),
}


@dataclass(slots=True)
class Export:
    chunks: Iterable[bytes]
    """The file in pieces, to write or send as they come (a FOCUS CSV or the invoices of every
    tenant's month are read and made as they are written); iterated once."""
    media_type: str
    filename: str
    final: bool
    lines: int = 0
    """Charge lines made so far: all of them once ``chunks`` is consumed."""

    def counting(self, lines: Iterable[ChargeLine]) -> Iterator[ChargeLine]:
        for line in lines:
            self.lines += 1
            yield line

    @property
    def body(self) -> bytes:
        """The whole file (small exports, tests): consumes ``chunks``."""
        return b"".join(self.chunks)


def load_price_book(session: Session) -> PriceBook:
    """The stored price book, or the bundled default while none was applied."""
    documents = session.scalars(select(PriceBookVersion.document)).all()
    if not documents:
        return load_price_book_file(BUNDLED)
    return PriceBook([version_from_document(d) for d in documents])


def held_currency(session: Session) -> str:
    """The price book's currency, held (``hold_config``) until this transaction ends: a budget
    set in it, and a change of it checked to leave no budget behind, must not interleave, or
    each passes its check against what the other had not committed (100 dollars read as
    100 euros)."""
    hold_config(session)
    return price_book_currency(session)


def price_book_currency(session: Session) -> str:
    """The currency of the price book (every version has the one of the first)."""
    stored = session.scalar(select(PriceBookVersion.currency).limit(1))
    return stored or load_price_book_file(BUNDLED).currency


def apply_price_book(
    session: Session, book: PriceBook, *, keep_budget_amounts: bool = False
) -> list[int]:
    """Store the versions not stored yet; returns their numbers.

    A stored version is never changed, and no version may start inside a closed period:
    that would change what was already billed. A book in another currency than the one it
    replaces (the bundled one, until a first is stored) is refused while cost budgets are set,
    unless ``keep_budget_amounts``: each would read as an amount of the new currency.
    """
    currency_before = held_currency(session)
    closed_until = latest_closed_end(session)
    added = []
    for version in book.versions:
        document = version_document(version)
        stored = session.get(PriceBookVersion, version.version)
        if stored is not None:
            if version_from_document(stored.document) != version:
                raise Conflict(
                    f"price book version {version.version} exists with other prices; "
                    "add a new version instead"
                )
            continue
        if closed_until is not None and version.effective_from < closed_until:
            raise Conflict(
                f"price book version {version.version} starts before {closed_until:%Y-%m-%d}, "
                "inside a closed billing period"
            )
        session.add(
            PriceBookVersion(
                version=version.version,
                effective_from=version.effective_from,
                currency=version.currency,
                document=document,
            )
        )
        added.append(version.version)
    flush_or_conflict(session, "a stored price book version starts at the same instant")
    whole = load_price_book(session)  # the stored versions together must still form a book
    if problems := unpriced_capacity(session, whole):
        raise InvalidRequest(
            "invalid price book: dedicated capacity would go unpriced: " + "; ".join(problems),
            param="gpu_hour",
        )
    if problems := _unpriced_models(session, whole, frozenset(added)):
        raise InvalidRequest(
            "invalid price book: token usage would go unpriced: "
            + "; ".join(problems)
            + f"; price them or add a '{DEFAULT_MODEL}' default",
            param="models",
        )
    if not keep_budget_amounts:
        check_budgets_keep_currency(session, currency_before, whole.currency)
    if added:  # the gateways' cost budgets price with the version in force
        mark_config_changed(session)
    return added


def check_budgets_keep_currency(session: Session, before: str, after: str) -> None:
    """Refuse a change of the price book's currency while cost budgets are set: a budget is a
    bare amount of that currency, and 100 US dollars must not silently become 100 euros."""
    if before == after:
        return
    budgets = QuotaRepository(session).cost_budgets()
    if not budgets:
        return
    shown = "; ".join(budgets[:5]) + (f"; and {len(budgets) - 5} more" if len(budgets) > 5 else "")
    raise Conflict(
        f"the price book would change currency from {before} to {after}, and cost budgets are "
        f"set in {before} ({shown}): they would read as {after}. Remove them, then set them "
        f"again in {after} once the book is, or, applying a price book, keep their amounts as "
        f"{after} on purpose (trunkline billing prices apply --keep-budget-amounts)",
        param="currency",
        reason="budget_currency",
    )


def prices_in_force_since(session: Session, now: datetime) -> datetime | None:
    """When the price book version in force at ``now`` took effect (None: none stored, the
    bundled book): the snapshot's prices change at such instants without any commit."""
    statement = select(func.max(PriceBookVersion.effective_from)).where(
        PriceBookVersion.effective_from <= now
    )
    return session.scalar(statement)


def withdraw_price_version(session: Session, number: int, now: datetime) -> None:
    """Delete stored version ``number`` before it takes effect: nothing was billed at it yet,
    and a later version could not otherwise be put before it (versions only ever follow the
    last). One in force, or past, is never changed: what it billed stays reproducible."""
    stored = session.get(PriceBookVersion, number)
    if stored is None:
        raise NotFound(f"no price book version {number}", param="version")
    before = held_currency(session)
    if stored.effective_from <= now:
        raise Conflict(
            f"price book version {number} is in force since {stored.effective_from:%Y-%m-%d %H:%M}"
            " UTC: a version in force is never changed; apply a new one instead",
            param="version",
        )
    session.delete(stored)
    session.flush()
    # Withdrawing the last stored version brings the bundled book back, perhaps its currency.
    check_budgets_keep_currency(session, before, price_book_currency(session))


def _unpriced_models(session: Session, book: PriceBook, added: frozenset[int]) -> list[str]:
    """Versions of ``book`` being ``added`` without a ``*`` default that leave a model
    unpriced: one with usage in the hours the version prices, or, for the latest version, one
    the catalog serves. Every export of those hours would fail on it. Stored versions are not
    judged again: one that already misses a model must not refuse the version that prices it."""
    served = set(session.scalars(select(Model.name)))
    problems: list[str] = []
    first = book.versions[0]
    earliest = session.scalar(select(func.min(UsageRollup.hour)))
    if first.version in added and earliest is not None and earliest < first.effective_from:
        problems.append(
            f"usage from {earliest:%Y-%m-%d %H:%M} UTC comes before the first version "
            f"({first.version}, from {first.effective_from:%Y-%m-%d %H:%M} UTC)"
        )
    for version, until in book.spans():
        if version.version not in added:
            continue
        used = select(UsageRollup.model).where(UsageRollup.hour >= version.effective_from)
        if until is not None:
            used = used.where(UsageRollup.hour < until)
        needed = set(session.scalars(used.distinct())) | (served if until is None else set())
        missing = _unpriced_by(version, needed)
        problems.extend(
            f"version {version.version} has no price for model {model!r}"
            for model in sorted(missing)
        )
    return problems


def _unpriced_by(version: PriceVersion, models: set[str]) -> set[str]:
    """Those of ``models`` ``version`` cannot price: none when it has a ``*`` default."""
    return set() if DEFAULT_MODEL in version.models else models - version.models.keys()


def unpriced_new_model(session: Session, name: str, now: datetime) -> str | None:
    """Why a model added to the catalog as ``name`` would go unpriced, None when every price
    book version in force from ``now`` on prices it (or has a ``*`` default). Its first request
    would otherwise stop every export and close of its month, and no version can be put
    before one already stored."""
    for version, until in load_price_book(session).spans():
        if until is not None and until <= now:
            continue
        if _unpriced_by(version, {name}):
            return (
                f"price book version {version.version} has no price for model {name!r} (and "
                f"no '{DEFAULT_MODEL}' default): apply a price book version that prices it "
                "first (trunkline billing prices apply)"
            )
    return None


def close(session: Session, period: Period, now: datetime) -> bool:
    """Close ``period``; stores the bundled price book first if none was applied, so the
    prices a closed period was billed at are on record."""
    if session.scalar(select(PriceBookVersion.version).limit(1)) is None:
        apply_price_book(session, load_price_book_file(BUNDLED))
    return close_period(session, period, load_price_book(session), now)


def due_periods(session: Session, now: datetime, grace: timedelta) -> list[Period]:
    """Ended periods (by ``grace`` at least) not closed yet, oldest first: from the first
    month with usage or capacity (none before the platform had any: a new installation does not
    close the empty month before it, and an empty month closed by hand years back does not
    make every month since due)."""
    latest = month_of(now - grace).previous()
    closed = set(session.scalars(select(BillingPeriod.period_start)))
    starts = [
        session.scalar(select(func.min(UsageRollup.hour))),
        session.scalar(select(func.min(DedicatedCapacity.starts_at))),
    ]
    first = min((start for start in starts if start is not None), default=None)
    if first is None:
        return []
    due, period = [], month_of(first)
    while period.start <= latest.start:
        if period.start not in closed:
            due.append(period)
        period = period.next()
    return due


def export_period(
    session: Session,
    period: Period,
    fmt: str,
    tenant_id: uuid.UUID | None = None,
    *,
    now: datetime | None = None,
    reader: Callable[[], AbstractContextManager[Session]] | None = None,
) -> Export:
    """The period's charges in ``fmt`` (see ``FORMATS``): every tenant, or one; an open
    period's as of ``now`` (default: the clock's).

    An export of every tenant reads its charge lines a group of tenants at a time
    (``statements_by_tenants``) as its chunks are consumed: from a session of ``reader`` if
    given (an API response is sent after its request's session closed), which sees the
    database as of its first read (``one_view``: whether the period is closed, its prices and
    every group, so no group is read after a rollup or a close that an earlier one did not
    see), else from ``session``, which must then stay open until the chunks are consumed (and
    see one view of its own, if its groups must agree)."""
    if fmt not in FORMATS:
        raise InvalidRequest(
            f"format must be one of {', '.join(FORMATS)}, not {fmt!r}", param="format"
        )
    now = now or utcnow()
    lines: Iterable[ChargeLine]
    if tenant_id is not None:
        book = load_price_book(session)
        final = session.get(BillingPeriod, period.start) is not None
        lines = statement(session, period, book, tenant_id, now=now).lines
    else:
        source = (lambda: _one_view_of(reader)) if reader else (lambda: nullcontext(session))
        read = _every_tenant(source, period, now)
        # Started here, so its checks fail before a response is sent, and its session closes
        # with it even if it is never read on (a client gone before the first byte).
        opened = next(read)
        assert isinstance(opened, _Opened)
        book, final, lines = opened.book, opened.final, cast(Iterator[ChargeLine], read)
    media_type, extension = FORMATS[fmt]
    scope = "all" if tenant_id is None else str(tenant_id)
    filename = f"trunkline-{fmt}-{period.label}-{scope}.{extension}"
    export = Export(iter(()), media_type, filename, final)
    counted = export.counting(lines)
    if fmt == "invoice":
        export.chunks = invoice_chunks(counted, period, book.currency, final=final)
    else:
        rows = focus_rows(counted, period, book.currency, final)
        export.chunks = csv_chunks(rows) if fmt == "focus-csv" else parquet_chunks(rows)
    return export


@dataclass(frozen=True)
class _Opened:
    """What an export of every tenant is labelled and priced with, read where its lines are."""

    book: PriceBook
    final: bool


def _every_tenant(
    reader: Callable[[], AbstractContextManager[Session]], period: Period, now: datetime
) -> Iterator[_Opened | ChargeLine]:
    """First whether the period is closed and its price book (checked to price it: a failure
    once the API's 200 is sent could only cut the file), then every tenant's lines, a group
    of tenants at a time; all read in one session of ``reader``."""
    with reader() as session:
        book = load_price_book(session)
        final = session.get(BillingPeriod, period.start) is not None
        require_priced(session, BilledUsage if final else UsageRollup, period, book)
        yield _Opened(book, final)
        for group in statements_by_tenants(session, period, book, now=now):
            yield from group.lines


@contextmanager
def _one_view_of(reader: Callable[[], AbstractContextManager[Session]]) -> Iterator[Session]:
    with reader() as session:
        one_view(session)
        yield session


def export_for(
    session: Session,
    principal: Principal,
    period: Period,
    fmt: str,
    tenant_id: uuid.UUID | None,
    reader: Callable[[], AbstractContextManager[Session]] | None = None,
) -> Export:
    """API entry: a tenant admin exports their tenant; every tenant needs a platform admin.
    ``reader``: see ``export_period``."""
    if tenant_id is None:
        principal.require_platform_admin()
    else:
        principal.require_tenant_admin(tenant_id)
        if session.get(Tenant, tenant_id) is None:
            raise NotFound("tenant not found", param="tenant_id")
    return export_period(session, period, fmt, tenant_id, reader=reader)
