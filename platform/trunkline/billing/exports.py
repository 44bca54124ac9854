"""Billing exports of a period: FOCUS CSV, FOCUS Parquet or the invoices, of one tenant or of
every tenant, made as they are written or sent.

Tenant admins export their own tenant only; platform admins (and the CLI, as the system)
export every tenant. Exporting reads rollups, so callers that can (the CLI, the worker) roll
usage up first.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy.orm import Session

from trunkline.auth.principal import Principal
from trunkline.billing.charges import ChargeLine
from trunkline.billing.focus import focus_rows
from trunkline.billing.focus_files import csv_chunks, parquet_chunks
from trunkline.billing.invoice import invoice_chunks
from trunkline.billing.lines import require_priced
from trunkline.billing.periods import Period
from trunkline.billing.pricebook import PriceBook
from trunkline.billing.pricebook_store import load_price_book
from trunkline.billing.statements import statement, statements_by_tenants
from trunkline.errors import InvalidRequest, NotFound
from trunkline.kit.db import one_view
from trunkline.kit.ids import utcnow
from trunkline.models import BilledUsage, BillingPeriod, Tenant, UsageRollup

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
