"""A month closing on SQLite while dedicated capacity is added inside it: the capacity is
refused once the close commits, not stored to change the GPU hours the closed month billed.
pysqlite reads outside a transaction: the capacity's check read the database before the close
committed, and its write then waited for the close's write lock and went through."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.capacity import add_capacity
from trunkline.billing.closing import close, closing_view
from trunkline.billing.pricebook_store import load_price_book
from trunkline.errors import Conflict
from trunkline.kit.db import transaction
from unit.billing.billing_support import NOV, billed, focus
from unit.metering.usage_support import Account, ingest
from unit.metering.usage_support import event as usage_event

DEADLINE_S = 60.0


def test_capacity_added_inside_a_month_while_it_closes_is_refused(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    acme = tenants["acme"]
    day = NOV.start + timedelta(days=2, hours=10)
    ingest(factory, [usage_event(acme, "on-time", when=day, prompt=1_000_000, completion=0)])
    adding: list[Future[uuid.UUID]] = []
    writes = threading.Event()  # the capacity's first write: it waits for the close's lock

    def first_write(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if threading.current_thread().name.startswith("capacity") and not statement.startswith(
            "SELECT"
        ):
            writes.set()

    def capacity_added(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        # Right after the close copied the month's rollups, an operator adds capacity held
        # from its second day; the close goes on once that writes (and waits) or has ended.
        if statement.lstrip().startswith("INSERT INTO billed_usage") and not adding:
            adding.append(pool.submit(_capacity, factory, acme))
            for _ in range(int(DEADLINE_S / 0.05)):
                if writes.wait(0.05) or adding[0].done():
                    return
            raise AssertionError("the capacity neither wrote nor ended")

    event.listen(Engine, "before_cursor_execute", first_write)
    event.listen(Engine, "after_cursor_execute", capacity_added)
    try:
        with (
            ThreadPoolExecutor(1, thread_name_prefix="capacity") as pool,
            transaction(factory) as session,  # it commits first, then the capacity goes on
        ):
            closing_view(session)
            assert close(session, NOV, NOV.end)
    finally:
        event.remove(Engine, "before_cursor_execute", first_write)
        event.remove(Engine, "after_cursor_execute", capacity_added)
    refused = adding[0].exception(DEADLINE_S)
    assert isinstance(refused, Conflict), f"stored: capacity {adding[0].result()}"
    assert "that period is closed" in refused.message
    # acme is gold: input at 0.30 per million, no GPU hours, as the month was closed.
    assert billed(focus(factory, NOV.label), BillingAccountName="Acme Corporation") == Decimal(
        "0.3"
    )


def _capacity(factory: sessionmaker[Session], account: Account) -> uuid.UUID:
    with transaction(factory) as session:
        prices = load_price_book(session)
        tenant = uuid.UUID(account.tenant_id)
        starts_at = NOV.start + timedelta(days=1)
        return add_capacity(session, tenant, "h100", 2, starts_at, prices=prices).id
