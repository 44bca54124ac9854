"""A month closing on PostgreSQL while others write beside it, however the month is closed:
late usage of it rolled up is billed once, in the month's snapshot or as a correction of the
next month, never lost between the two (a close reads the rollups in several statements); a
price book version applied, or dedicated capacity added or ended, inside it is refused, not
stored to change what the month billed once closed."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

import msgspec
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from support.held_transaction import beside_a_held_transaction, until_waiting_or_done
from trunkline.billing.capacity import add_capacity, end_capacity
from trunkline.billing.periods import Period, month_of
from trunkline.billing.pricebook import BUNDLED, PriceBook, TokenPrices, load_price_book_file
from trunkline.billing.pricebook_store import apply_price_book, load_price_book
from trunkline.errors import Conflict
from trunkline.kit.db import transaction
from trunkline.kit.ids import utcnow
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.worker.jobs import JobContext, JobSettings, close_periods
from unit.billing.billing_support import billed, focus
from unit.controlplane.cp_support import run_cli
from unit.metering.usage_support import LLAMA, Account, accounts, ingest, migrated
from unit.metering.usage_support import event as usage_event

HOUR = timedelta(hours=1)
Changed = TypeVar("Changed")
ENDED = month_of(utcnow()).previous()
"""The CLI closes a month that has ended by the clock."""


@pytest.fixture
def factory(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sessionmaker[Session]]:
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", postgres_url)
    made = migrated(postgres_url)
    yield made
    made.kw["bind"].dispose()


def by_the_worker(factory: sessionmaker[Session], period: Period, _capsys: object) -> None:
    settings = JobSettings(close_grace_hours=0)
    ctx = JobContext(factory, InMemoryUsageStream, settings, clock=lambda: period.end)
    assert close_periods(ctx) == [period.label]


def by_billing_close(_f: object, period: Period, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "billing", "close", "--period", period.label)[0] == 0


def by_export_close(_f: object, period: Period, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["export", "--period", period.label, "--format", "focus-csv", "--close"]
    assert run_cli(capsys, "billing", *args)[0] == 0


@pytest.mark.parametrize("closing", [by_the_worker, by_billing_close, by_export_close])
def test_usage_rolled_up_while_its_month_closes_is_billed_once(
    factory: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
    closing: Callable[..., None],
) -> None:
    acme = accounts(factory)["acme"]
    day = ENDED.start + timedelta(days=2, hours=10)
    ingest(factory, [usage_event(acme, "on-time", when=day, prompt=1_000_000, completion=0)])
    late = usage_event(
        acme, "late", when=ENDED.end - timedelta(hours=1), prompt=2_000_000, completion=0
    )
    landed = []

    def late_usage_lands(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        # Right after the close copied the month's rollups, a worker ingests and rolls up a
        # late event of the month (and commits) before the close goes on.
        if statement.lstrip().startswith("INSERT INTO billed_usage") and not landed:
            landed.append(ingest(factory, [late]))

    # On every engine: the CLI closes through an engine of its own.
    event.listen(Engine, "after_cursor_execute", late_usage_lands)
    try:
        closing(factory, ENDED, capsys)
    finally:
        event.remove(Engine, "after_cursor_execute", late_usage_lands)
    assert landed == [1]

    month = billed(focus(factory, ENDED.label), BillingAccountName="Acme Corporation")
    following = focus(factory, ENDED.next().label, now=ENDED.end + timedelta(days=3))
    corrections = billed(following, ChargeClass="Correction")
    # acme is gold: input at 0.30 per million. 1M in the month's snapshot; the 2M that landed
    # while it closed, as a correction billed in the next month.
    assert (month, corrections) == (Decimal("0.3"), Decimal("0.6"))


@pytest.mark.parametrize("closing", [by_the_worker, by_billing_close, by_export_close])
def test_a_price_version_applied_while_its_month_closes_is_refused(
    factory: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
    closing: Callable[..., None],
) -> None:
    with transaction(factory) as session:  # on record: the close stores nothing of it
        apply_price_book(session, load_price_book_file(BUNDLED))
    acme = accounts(factory)["acme"]
    day = ENDED.start + timedelta(days=2, hours=10)
    ingest(factory, [usage_event(acme, "on-time", when=day, prompt=1_000_000, completion=0)])
    # Right after the close copied the month's rollups, an operator applies a version
    # starting inside it.
    applied, ended_during_the_close = _beside_the_close(
        factory, closing, capsys, lambda: _apply(factory, _dearer_from_the_second_day())
    )
    refused = applied.exception()
    assert isinstance(refused, Conflict), f"stored: version {applied.result()}"
    # Refused at once: waiting out the close, it held the configuration's lock, and every
    # control-plane change behind it, as long (found in review).
    assert ended_during_the_close
    assert refused.reason == "price_book_busy" and "being closed" in refused.message
    # acme is gold: input at 0.30 per million, as the month was closed (3.00 at the version).
    month = billed(focus(factory, ENDED.label), BillingAccountName="Acme Corporation")
    assert month == Decimal("0.3")


@pytest.mark.parametrize("closing", [by_the_worker, by_billing_close, by_export_close])
@pytest.mark.parametrize("change", ["added", "ended"])
def test_capacity_changed_inside_a_month_while_it_closes_is_refused(
    factory: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
    closing: Callable[..., None],
    change: str,
) -> None:
    """Capacity is billed from its rows at every export of the month: one added, or ended,
    inside it during the close and stored changed the closed month's GPU hours after its
    files were written (its check read no closed period yet)."""
    with transaction(factory) as session:  # on record: the close stores nothing of it
        apply_price_book(session, load_price_book_file(BUNDLED))
    acme = accounts(factory)["acme"]
    day = ENDED.start + timedelta(days=2, hours=10)
    ingest(factory, [usage_event(acme, "on-time", when=day, prompt=1_000_000, completion=0)])
    held = None if change == "added" else _capacity(factory, acme, ENDED.start + timedelta(days=1))
    # Right after the close copied the month's rollups, an operator adds capacity held from
    # the month's second day, or ends the one held since then on it.
    moment = ENDED.start + timedelta(days=2)
    changed, _ended = _beside_the_close(
        factory,
        closing,
        capsys,
        lambda: (
            _capacity(factory, acme, moment)
            if held is None
            else _end_capacity(factory, held, moment)
        ),
    )
    refused = changed.exception()
    assert isinstance(refused, Conflict), f"stored: capacity {changed.result()}"
    assert "that period is closed" in refused.message
    # acme is gold: input at 0.30 per million; an h100 at 4.00 an hour, two held from the
    # second day to the month's end, as the month was closed.
    hours = 0 if held is None else (ENDED.end - ENDED.start - timedelta(days=1)) // HOUR
    month = billed(focus(factory, ENDED.label), BillingAccountName="Acme Corporation")
    assert month == Decimal("0.3") + 2 * hours * Decimal("4.00")


@pytest.mark.parametrize("closing", [by_the_worker, by_billing_close, by_export_close])
def test_a_month_closing_while_a_price_book_is_applied_is_billed_at_it(
    factory: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
    closing: Callable[..., None],
) -> None:
    """The first close stores the bundled price book, none being stored. Applied meanwhile,
    the operator's book is stored first and the close waits for it; the close then bills the
    month at it. It failed: its view of the database fixed before it waited, the close was
    refused at its first write ("could not serialize access due to concurrent update")."""
    acme = accounts(factory)["acme"]
    day = ENDED.start + timedelta(days=2, hours=10)
    ingest(factory, [usage_event(acme, "on-time", when=day, prompt=1_000_000, completion=0)])
    closed, applied = beside_a_held_transaction(
        factory,
        lambda session: apply_price_book(session, _dearer_from_the_second_day()),
        lambda: closing(factory, ENDED, capsys),
    )
    assert applied.result() == [1, 2]
    closed.result()
    # acme is gold: input at 3.00 per million from the month's second day.
    month = billed(focus(factory, ENDED.label), BillingAccountName="Acme Corporation")
    assert month == Decimal("3")


def _beside_the_close(
    factory: sessionmaker[Session],
    closing: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
    change: Callable[[], Changed],
) -> tuple[Future[Changed], bool]:
    """Close the month ``closing``'s way, running ``change`` right after the close copied the
    month's rollups; the close goes on once ``change`` waits on a lock or has ended. Its
    outcome, and whether it had ended by then."""
    started: list[Future[Changed]] = []
    ended: list[bool] = []

    def meanwhile(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().startswith("INSERT INTO billed_usage") and not started:
            started.append(pool.submit(change))
            until_waiting_or_done(factory, started[0])
            ended.append(started[0].done())

    event.listen(Engine, "after_cursor_execute", meanwhile)
    try:
        with ThreadPoolExecutor(1) as pool:
            closing(factory, ENDED, capsys)
    finally:
        event.remove(Engine, "after_cursor_execute", meanwhile)
    return started[0], ended[0]


def _dearer_from_the_second_day() -> PriceBook:
    """The bundled book, and a version from the second day of the month that is closed that
    prices the llama model at ten times."""
    (first,) = load_price_book_file(BUNDLED).versions
    llama = TokenPrices(Decimal("2.00"), Decimal("0.50"), Decimal("6.00"))
    dearer = msgspec.structs.replace(
        first,
        version=2,
        effective_from=ENDED.start + timedelta(days=1),
        models={**first.models, LLAMA: llama},
    )
    return PriceBook([first, dearer])


def _apply(factory: sessionmaker[Session], book: PriceBook) -> list[int]:
    with transaction(factory) as session:
        return apply_price_book(session, book)


def _capacity(factory: sessionmaker[Session], account: Account, starts_at: datetime) -> uuid.UUID:
    """Two h100s held by ``account``'s tenant from ``starts_at``."""
    with transaction(factory) as session:
        prices = load_price_book(session)
        tenant = uuid.UUID(account.tenant_id)
        return add_capacity(session, tenant, "h100", 2, starts_at, prices=prices).id


def _end_capacity(
    factory: sessionmaker[Session], capacity: uuid.UUID, ends_at: datetime
) -> uuid.UUID:
    with transaction(factory) as session:
        return end_capacity(session, capacity, ends_at, prices=load_price_book(session)).id
