"""HTTP endpoints of billing exports: FOCUS CSV, FOCUS Parquet, or the invoice summary.

A tenant admin exports their own tenant; the export of every tenant needs a platform admin.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Generator, Iterable

import anyio
import anyio.to_thread
from litestar import Controller, get
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from trunkline.auth.guards import platform_admin, tenant_admin
from trunkline.auth.params import Caller, DbSession, SessionFactory, TenantId
from trunkline.billing.exports import Export, export_for
from trunkline.billing.periods import parse_period

log = logging.getLogger(__name__)


def _download(export: Export) -> Stream:
    """Sent as it is made (a FOCUS export of every tenant is read as it is sent)."""
    return Stream(
        _sent(_failing_loudly(export.chunks)),
        media_type=export.media_type,
        headers={
            "content-disposition": f'attachment; filename="{export.filename}"',
            "x-trunkline-billing-final": "true" if export.final else "false",
        },
    )


async def _sent(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """``chunks`` made in a worker thread, and closed as soon as the response ends, however it
    ends: left to the garbage collector, an export a client gave up on kept its database
    transaction open (idle, its reads' snapshot held) for up to a minute. A client that leaves
    is logged (its response was counted a 200 when it started)."""
    sent, whole = 0, False
    try:
        while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
            yield chunk
            sent += len(chunk)
        whole = True
    finally:
        if not whole:
            log.info("billing export not sent whole: %d bytes sent", sent)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(chunks.close)


def _failing_loudly(chunks: Iterable[bytes]) -> Generator[bytes, None, None]:
    """A failure mid-way must cut the response, not end it: Litestar ends a stream whose
    iterator raises ``ValueError`` (a ``UnicodeEncodeError``, say) as if it were complete, and
    the client would keep a well-formed, truncated CSV. Closed, it closes ``chunks`` (their
    session); a failure to close (a connection lost in the rollback) is no failure of what
    was sent."""
    iterator = iter(chunks)
    try:
        while True:
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                log.exception("billing export failed while it was sent")
                raise RuntimeError("billing export failed while it was sent") from exc
            yield chunk
    finally:
        if isinstance(iterator, Generator):
            try:
                iterator.close()
            except Exception:
                log.warning("billing export could not be closed cleanly", exc_info=True)


class TenantExportController(Controller):
    path = "/api/v1/tenants/{tenant_id:uuid}/billing/exports"
    tags = ["billing"]
    guards = [tenant_admin]

    @get("/{period:str}", sync_to_thread=True)
    def export_tenant(
        self,
        db_session: DbSession,
        principal: Caller,
        tenant_id: TenantId,
        period: FromPath[str],
        format: FromQuery[str] = "focus-csv",
    ) -> Stream:
        """The tenant's charges in ``period`` (``YYYY-MM``): ``focus-csv``, ``focus-parquet``
        or ``invoice``. Final once the period is closed (header ``x-trunkline-billing-final``)."""
        export = export_for(db_session, principal, parse_period(period), format, tenant_id)
        return _download(export)


class PlatformExportController(Controller):
    path = "/api/v1/billing/exports"
    tags = ["billing"]
    guards = [platform_admin]

    @get("/{period:str}", sync_to_thread=True)
    def export_all(
        self,
        db_session: DbSession,
        principal: Caller,
        session_factory: SessionFactory,
        period: FromPath[str],
        format: FromQuery[str] = "focus-csv",
    ) -> Stream:
        """Every tenant's charges in ``period``, for finance."""
        export = export_for(
            db_session, principal, parse_period(period), format, None, reader=session_factory
        )
        return _download(export)
