"""Exports of a month: one tenant's alone, every tenant's read a group of tenants at a time
(the same rows as one statement, groups sized by what each tenant's statement reads, the same
bytes as the file made whole), and an export that cannot be priced refused before it is sent."""

from __future__ import annotations

import csv
import io
import uuid

import pytest
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing import focus_files, invoice, statements
from trunkline.billing.capacity import add_capacity
from trunkline.billing.closing import close
from trunkline.billing.exports import export_period
from trunkline.billing.focus import focus_rows
from trunkline.billing.focus_files import write_csv
from trunkline.billing.periods import parse_period
from trunkline.billing.pricebook_store import load_price_book
from trunkline.errors import ConfigurationError
from trunkline.kit.db import transaction
from unit.billing.billing_support import DEC, NOV, focus, whole_invoices
from unit.metering.usage_support import Account, at, event, ingest, ingest_unchecked


def test_a_tenant_export_holds_only_that_tenant(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    ingest(factory, [event(tenants[slug], when=at(3)) for slug in ("acme", "globex")])
    acme = uuid.UUID(tenants["acme"].tenant_id)
    assert {r["BillingAccountId"] for r in focus(factory, tenant_id=acme)} == {str(acme)}
    assert len({r["BillingAccountId"] for r in focus(factory)}) == 2


@pytest.mark.parametrize("period", ["2026-11", "2026-12"])
def test_an_export_of_every_tenant_read_a_tenant_at_a_time_is_the_whole_statement(
    factory: sessionmaker[Session],
    tenants: dict[str, Account],
    monkeypatch: pytest.MonkeyPatch,
    period: str,
) -> None:
    """Every tenant's lines of a month were read at once: 3 GB for 2.4 million lines. Read a
    group of tenants at a time, the export must hold the same rows in the same order: usage,
    dedicated GPUs, SLA credits, and a closed period's correction in the open one."""
    ingest(factory, [event(tenants[s], when=at(3)) for s in ("acme", "globex", "initech")])
    with transaction(factory) as session:
        add_capacity(session, uuid.UUID(tenants["initech"].tenant_id), "h100", 2, at(30, 22),
                     prices=load_price_book(session), region="eu-west")  # fmt: skip
        assert close(session, NOV, at(2, month=12))
    late = [event(tenants[s], when=at(29), completion=5_000, ttft_ms=9_000.0) for s in tenants]
    ingest(factory, [*late, event(tenants["globex"], when=at(2, month=12))])
    now = at(6, month=12)
    with transaction(factory) as session:  # every tenant's lines at once, as it was
        book = load_price_book(session)
        one = statements.statement(session, parse_period(period), book, None, now=now)
        rows = focus_rows(one.lines, parse_period(period), book.currency, one.closed)
        whole = list(csv.DictReader(io.StringIO(write_csv(rows).decode())))
    assert len({r["BillingAccountId"] for r in whole}) == 3
    assert any(r["ChargeClass"] == "Correction" for r in whole) == (period == "2026-12")
    assert any(r["x_AcceleratorFlavor"] == "h100" for r in whole)

    monkeypatch.setattr(statements, "ROWS_PER_STATEMENT", 1)
    read = []
    original = statements.statement

    def counted(*args: object, **kwargs: object) -> statements.Statement:
        made = original(*args, **kwargs)  # type: ignore[arg-type]
        read.append(len(made.lines))
        return made

    monkeypatch.setattr(statements, "statement", counted)
    assert focus(factory, period, now=now) == whole
    assert len(read) == 3 and max(read) < len(whole), "one tenant at a time"


def test_an_export_counts_the_corrections_a_tenant_brings_when_it_groups_tenants(
    factory: sessionmaker[Session], tenants: dict[str, Account], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Groups were sized by the period's own rows: early in December, with few December rows
    and a late event in closed November, every tenant fell into one group that read all of
    November twice (as it is and as billed): the whole month's lines at once again."""
    hours = [at(day, hour) for day in range(2, 7) for hour in range(8)]
    ingest(factory, [event(tenants[s], when=h) for s in tenants for h in hours])
    with transaction(factory) as session:
        assert close(session, NOV, at(2, month=12))
    ingest(factory, [event(tenants[s], when=h, completion=7) for s in tenants for h in hours])
    monkeypatch.setattr(statements, "ROWS_PER_STATEMENT", len(hours) + 1)
    with transaction(factory) as session:
        groups = list(
            statements.statements_by_tenants(
                session, DEC, load_price_book(session), now=at(3, month=12)
            )
        )
    assert all(line.correction for group in groups for line in group.lines)
    assert [len({line.tenant_id for line in group.lines}) for group in groups] == [1, 1, 1]


def test_an_export_of_every_tenant_that_cannot_be_priced_fails_before_it_is_sent(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """Read as it is sent, it failed after the API's 200 had gone: a cut CSV, not an error."""
    ingest_unchecked(factory, [event(tenants["acme"], when=at(3, month=12, year=2025))])
    with transaction(factory) as session:
        first = load_price_book(session).versions[0].effective_from
    assert first > at(3, month=12, year=2025), "the bundled book starts after this usage"
    for fmt in ("focus-csv", "focus-parquet", "invoice"):
        with transaction(factory) as session, pytest.raises(ConfigurationError, match="before"):
            export_period(session, parse_period("2025-12"), fmt)  # not its chunks: the call


@pytest.mark.parametrize("fmt", ["focus-csv", "focus-parquet", "invoice"])
def test_every_tenants_export_sent_in_pieces_is_the_file_made_whole_byte_for_byte(
    factory: sessionmaker[Session],
    tenants: dict[str, Account],
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    """Each format of every tenant's month is read a group of tenants at a time and sent in
    pieces (CSV lines, Parquet row groups, invoices) as it is made: the file must be, byte for
    byte, the one made whole from the month's lines read at once, with the closed month's
    corrections and a tenant without charges among them."""
    ingest(factory, [event(tenants[s], when=at(3, h)) for s in ("acme", "initech") for h in (1, 2)])
    with transaction(factory) as session:
        assert close(session, NOV, at(2, month=12))
    late = [event(tenants[s], when=at(29), completion=5_000, ttft_ms=9_000.0) for s in tenants]
    ingest(factory, [*late, event(tenants["acme"], when=at(2, month=12))])
    now = at(6, month=12)
    with transaction(factory) as session:  # every tenant's lines at once, made whole
        book = load_price_book(session)
        month = statements.statement(session, DEC, book, None, now=now)
        rows = list(focus_rows(month.lines, DEC, book.currency, month.closed))
        whole = {
            "focus-csv": write_csv(rows),
            "focus-parquet": b"".join(focus_files.parquet_chunks(rows, batch=3)),
            "invoice": whole_invoices(session, DEC, now).encode(),
        }[fmt]
    assert {line.tenant_slug for line in month.lines} == {"acme", "globex", "initech"}
    assert len(rows) % 3 and (len(rows) + 1) % 3, "pieces of 3 leave some lines over"

    monkeypatch.setattr(statements, "ROWS_PER_STATEMENT", 1)  # a group per tenant
    monkeypatch.setattr(focus_files, "CSV_PIECE_LINES", 3)  # with its header
    monkeypatch.setattr(focus_files, "ROW_GROUP_ROWS", 3)  # as made whole: it shapes the file
    monkeypatch.setattr(invoice, "PIECE_CHARS", 2_000)  # two invoices, then one left over
    with transaction(factory) as session:
        export = export_period(session, DEC, fmt, now=now)
        pieces = list(export.chunks)
    assert b"".join(pieces) == whole
    assert len(pieces) > 1 and all(pieces), "sent in pieces, none empty"
    assert export.lines == len(month.lines)
