"""Price book versions against what they bill: the instant each applies from, the GPUs and
models each must price, dedicated capacity recorded against them, and withdrawals."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.capacity import add_capacity, end_capacity
from trunkline.billing.closing import close
from trunkline.billing.exports import export_period
from trunkline.billing.pricebook import PriceBook, version_document, version_from_document
from trunkline.billing.pricebook_store import (
    apply_price_book,
    load_price_book,
    withdraw_price_version,
)
from trunkline.errors import Conflict, InvalidRequest, NotFound
from trunkline.kit.db import transaction
from trunkline.models import DedicatedCapacity
from trunkline.pools.catalog_models import create_model
from trunkline.pools.schemas import ModelCreate
from unit.billing.billing_support import NOV, billed, focus
from unit.metering.usage_support import Account, at, event, ingest


def test_price_versions_apply_from_their_instant_and_never_inside_a_closed_period(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    models = {"*": {"input": "1", "cached_input": "1", "output": "1"}}
    book = PriceBook(
        [
            version_from_document(
                {"version": 1, "effective_from": "2026-01-01T00:00:00Z", "models": models}
            ),
            version_from_document(
                {
                    "version": 2,
                    "effective_from": "2026-11-15T00:00:00Z",
                    "models": {"*": {"input": "2", "cached_input": "2", "output": "2"}},
                }
            ),
        ]
    )
    with transaction(factory) as session:
        assert apply_price_book(session, book) == [1, 2]
        assert apply_price_book(session, book) == []
    acme = tenants["initech"]  # bronze: no multiplier in this book
    ingest(
        factory,
        [
            event(acme, when=at(14, 23), prompt=1_000_000, completion=0),
            event(acme, when=at(15, 0), prompt=1_000_000, completion=0),
        ],
    )
    rows = focus(factory)
    assert sorted(Decimal(r["BilledCost"]) for r in rows) == [Decimal(1), Decimal(2)]
    with transaction(factory) as session:
        close(session, NOV, at(2, month=12))
    late = version_from_document(
        {"version": 3, "effective_from": "2026-11-20T00:00:00Z", "models": models}
    )
    with transaction(factory) as session, pytest.raises(Conflict, match="closed"):
        apply_price_book(session, PriceBook([*book.versions, late]))

    # A version that starts where a stored one does: a conflict, not a crash.
    def starting_2027(number: int) -> PriceBook:
        document = {"version": number, "effective_from": "2027-01-01T00:00:00Z", "models": models}
        return PriceBook([version_from_document(document)])

    with transaction(factory) as session:
        assert apply_price_book(session, starting_2027(4)) == [4]
    with transaction(factory) as session, pytest.raises(Conflict, match="same instant"):
        apply_price_book(session, starting_2027(7))


def test_dedicated_gpus_are_billed_every_hour_busy_or_idle(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    with transaction(factory) as session:
        add_capacity(
            session,
            uuid.UUID(tenants["globex"].tenant_id),
            "h100",
            8,
            at(30, 21, 30),
            prices=load_price_book(session),
            region="eu-west",
        )
    rows = [r for r in focus(factory) if r["x_AcceleratorFlavor"] == "h100"]
    # from 21:30 (that hour billed in full) to the end of November: 21:00, 22:00, 23:00
    assert [r["ChargePeriodStart"][11:16] for r in rows] == ["21:00", "22:00", "23:00"]
    assert {r["ConsumedQuantity"] for r in rows} == {"8"}
    assert billed(rows) == 3 * 8 * Decimal("4.00")
    with transaction(factory) as session, pytest.raises(InvalidRequest, match="no GPU-hour price"):
        add_capacity(  # no price: every export of the period would fail on it
            session,
            uuid.UUID(tenants["globex"].tenant_id),
            "nosuch",
            1,
            at(30, 22),
            prices=load_price_book(session),
        )
    with transaction(factory) as session:
        close(session, NOV, at(2, month=12))
        with pytest.raises(Conflict):
            add_capacity(
                session,
                uuid.UUID(tenants["globex"].tenant_id),
                "h100",
                1,
                at(29),
                prices=load_price_book(session),
            )


def test_an_open_period_bills_only_the_gpu_hours_begun_so_far(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    with transaction(factory) as session:
        add_capacity(
            session,
            uuid.UUID(tenants["globex"].tenant_id),
            "h100",
            2,
            at(10, 10),
            prices=load_price_book(session),
        )
    # On the 10th at 12:30, November's preliminary bill holds 10:00, 11:00 and 12:00: not
    # the 19 days still to come, which are not incurred (and may never be, if it ends).
    with transaction(factory) as session:
        body = export_period(session, NOV, "focus-csv", now=at(10, 12, 30)).body
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [r["ChargePeriodStart"][8:16] for r in rows] == ["10T10:00", "10T11:00", "10T12:00"]
    assert billed(rows) == 3 * 2 * Decimal("4.00")
    with transaction(factory) as session:  # once closed, the whole month, whatever the clock
        close(session, NOV, at(2, month=12))
        body = export_period(session, NOV, "focus-csv", now=at(10, 12, 30)).body
    assert len(list(csv.DictReader(io.StringIO(body.decode())))) == 20 * 24 + 14


def test_a_price_version_must_price_the_gpus_it_would_bill(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    with transaction(factory) as session:
        bundled = load_price_book(session)
        apply_price_book(session, bundled)
        add_capacity(
            session,
            uuid.UUID(tenants["globex"].tenant_id),
            "h100",
            2,
            at(10),
            prices=bundled,
        )
    [first] = bundled.versions

    def without_h100(number: int, starts: str) -> PriceBook:
        document = {**version_document(first), "version": number, "effective_from": starts}
        document["gpu_hour"] = {"l40s": "1.40"}
        return PriceBook([first, version_from_document(document)])

    # The allocation is open-ended: a version from the 20th without an h100 price would make
    # every export from then on fail, so it is refused, and the stored book stays as it was.
    with pytest.raises(InvalidRequest, match="'h100'"), transaction(factory) as session:
        apply_price_book(session, without_h100(2, "2026-11-20T00:00:00Z"))
    assert len(focus(factory)) == 20 * 24 + 14  # from the 10th, 10:00, to the end of November
    # Once the allocation ends where the version starts, the version may drop the price.
    with transaction(factory) as session:
        for held in session.scalars(select(DedicatedCapacity)):
            if held.flavor == "h100":
                held.ends_at = at(20, 0)
    with transaction(factory) as session:
        assert apply_price_book(session, without_h100(2, "2026-11-20T00:00:00Z")) == [2]


def test_a_price_version_must_price_the_models_it_would_bill(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    with transaction(factory) as session:
        bundled = load_price_book(session)
        apply_price_book(session, bundled)
    [first] = bundled.versions
    ingest(factory, [event(tenants["acme"], when=at(25), model="old-model")])

    def pricing(number: int, *models: str) -> PriceBook:
        document = {**version_document(first), "version": number}
        document["effective_from"] = "2026-11-20T00:00:00Z"
        document["models"] = {m: document["models"]["*"] for m in models}  # no "*" default
        return PriceBook([first, version_from_document(document)])

    # Usage of old-model on the 25th, and the catalog's two models from now on: each export
    # from the 20th would fail on a model without a price, so the version is refused.
    served = ("llama-3.1-8b-instruct", "bge-small-en")
    refused = pytest.raises(InvalidRequest, match="'old-model'")
    with refused, transaction(factory) as session:
        apply_price_book(session, pricing(2, *served))
    assert "llama" not in str(refused.excinfo.value)
    missing_served = pytest.raises(InvalidRequest, match="'bge-small-en'")
    with missing_served, transaction(factory) as session:
        apply_price_book(session, pricing(2, "old-model", "llama-3.1-8b-instruct"))
    with transaction(factory) as session:
        assert apply_price_book(session, pricing(2, "old-model", *served)) == [2]
    assert billed(focus(factory), x_TokenClass="input") > 0


def test_a_model_the_price_book_cannot_price_is_not_added_to_the_catalog_until_priced(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """Its first request would stop every export and close of its month, for good: no version
    can be put before the stored one that misses it."""
    served = ("llama-3.1-8b-instruct", "bge-small-en")
    with transaction(factory) as session:
        bundled = load_price_book(session)
        apply_price_book(session, bundled)
        apply_price_book(session, _pricing(bundled, 2, "2026-11-20T00:00:00Z", *served))
    refused = pytest.raises(InvalidRequest, match="version 2 has no price for model 'qwen'")
    with refused, transaction(factory) as session:
        create_model(session, ModelCreate(name="qwen"))
    with transaction(factory) as session:
        later = _pricing(bundled, 3, "2026-11-21T00:00:00Z", *served, "qwen")
        assert apply_price_book(
            session, PriceBook([*load_price_book(session).versions, *later.versions[1:]])
        ) == [3]
        assert create_model(session, ModelCreate(name="qwen")).name == "qwen"


def test_a_stored_version_missing_a_model_does_not_refuse_the_version_that_prices_it(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    served = ("llama-3.1-8b-instruct", "bge-small-en")
    with transaction(factory) as session:
        bundled = load_price_book(session)
        apply_price_book(session, bundled)
        apply_price_book(session, _pricing(bundled, 2, "2026-11-20T00:00:00Z", *served))
    ingest(factory, [event(tenants["acme"], when=at(25), model="stray")])  # v2 cannot price it
    with transaction(factory) as session:
        fixed = _pricing(bundled, 3, "2026-11-26T00:00:00Z", *served, "stray")
        stored = load_price_book(session).versions
        assert apply_price_book(session, PriceBook([*stored, *fixed.versions[1:]])) == [3]


@pytest.mark.parametrize("rolled_up", [True, False], ids=["rolled-up", "not-rolled-up-yet"])
def test_a_first_version_starting_after_usage_is_refused(
    factory: sessionmaker[Session], tenants: dict[str, Account], rolled_up: bool
) -> None:
    """Every export and close of the earlier usage would fail, until a version 0 came. Usage
    ingested and not rolled up yet (the rollup runs every 30 s) is earlier usage too."""
    ingest(factory, [event(tenants["acme"], when=at(3))], rollup=rolled_up)
    with transaction(factory) as session:
        [bundled] = load_price_book(session).versions
    late = {**version_document(bundled), "effective_from": "2027-01-01T00:00:00Z"}
    refused = pytest.raises(InvalidRequest, match="comes before the first version")
    with refused, transaction(factory) as session:
        apply_price_book(session, PriceBook([version_from_document(late)]))
    with transaction(factory) as session:
        assert apply_price_book(session, PriceBook([bundled])) == [bundled.version]


def test_dedicated_capacity_before_the_first_price_version_is_refused(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """No price bills its hours: every export of December 2025 failed, "usage before the first
    price book version", and so did the worker's close of it, and with it every later month's."""
    with transaction(factory) as session:
        first = load_price_book(session).versions[0].effective_from  # 2026-01-01, bundled
    refused = pytest.raises(InvalidRequest, match="before 2026-01-01 00:00 UTC")
    with refused, transaction(factory) as session:
        add_capacity(
            session,
            uuid.UUID(tenants["globex"].tenant_id),
            "h100",
            1,
            first - timedelta(hours=2),
            prices=load_price_book(session),
        )
    assert focus(factory, "2025-12") == []
    with transaction(factory) as session:  # from the first version's hour on, it is priced
        add_capacity(
            session,
            uuid.UUID(tenants["globex"].tenant_id),
            "h100",
            1,
            first,
            first + timedelta(hours=2),
            prices=load_price_book(session),
        )
    assert billed(focus(factory, "2026-01")) == 2 * Decimal("4.00")


def test_capacity_recorded_before_the_first_version_before_that_was_refused_closes_no_less(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """A close stores the bundled price book when none was applied; capacity recorded before
    its first version (which its own month's exports cannot price) must not make that refuse
    every later month's close."""
    ingest(factory, [event(tenants["acme"], when=at(3))])
    with transaction(factory) as session:
        first = load_price_book(session).versions[0].effective_from
        session.add(
            DedicatedCapacity(
                tenant_id=uuid.UUID(tenants["globex"].tenant_id),
                flavor="h100",
                gpus=1,
                starts_at=first - timedelta(hours=2),
                ends_at=first,
            )
        )
    with transaction(factory) as session:
        assert close(session, NOV, at(2, month=12))
    assert billed(focus(factory), ChargeCategory="Usage") > 0


def test_a_first_version_starting_after_dedicated_capacity_is_refused(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """Applied, every export and close of the capacity's months before it failed."""
    with transaction(factory) as session:
        [bundled] = load_price_book(session).versions
        add_capacity(
            session,
            uuid.UUID(tenants["globex"].tenant_id),
            "h100",
            1,
            at(10, 0),
            at(10, 2),
            prices=load_price_book(session),
        )
    late = {**version_document(bundled), "effective_from": "2027-01-01T00:00:00Z"}
    refused = pytest.raises(InvalidRequest, match="capacity is held from 2026-11-10 00:00 UTC")
    with refused, transaction(factory) as session:
        apply_price_book(session, PriceBook([version_from_document(late)]))
    assert billed(focus(factory)) == 2 * Decimal("4.00")
    with transaction(factory) as session:
        assert apply_price_book(session, PriceBook([bundled])) == [bundled.version]


def test_a_version_not_in_force_yet_can_be_withdrawn_and_one_in_force_cannot(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """A version stored for 2030 kept any price change before it out: versions only follow the
    last one stored."""
    now = at(1, month=12)
    with transaction(factory) as session:
        [bundled] = load_price_book(session).versions
        apply_price_book(session, PriceBook([bundled]))
        far = {**version_document(bundled), "version": 2, "effective_from": "2030-01-01T00:00:00Z"}
        apply_price_book(session, PriceBook([bundled, version_from_document(far)]))
    sooner = {**version_document(bundled), "version": 3, "effective_from": "2027-02-01T00:00:00Z"}
    with transaction(factory) as session:
        stored = load_price_book(session).versions
    with pytest.raises(InvalidRequest, match="must start after version 2"):
        PriceBook([*stored, version_from_document(sooner)])
    with transaction(factory) as session:
        withdraw_price_version(session, 2, now)
        assert apply_price_book(session, PriceBook([bundled, version_from_document(sooner)])) == [3]
    with pytest.raises(Conflict, match="in force since"), transaction(factory) as session:
        withdraw_price_version(session, bundled.version, now)
    with pytest.raises(NotFound), transaction(factory) as session:
        withdraw_price_version(session, 2, now)


def test_ended_capacity_needs_no_price_from_versions_after_its_end(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """A version from 2027 dropping the l40s refused recording November's l40s allocation,
    which it prices no hour of."""
    with transaction(factory) as session:
        [bundled] = load_price_book(session).versions
    later = {**version_document(bundled), "version": 2, "effective_from": "2027-01-01T00:00:00Z"}
    later["gpu_hour"] = {f: p for f, p in later["gpu_hour"].items() if f != "l40s"}
    with transaction(factory) as session:
        apply_price_book(session, PriceBook([bundled, version_from_document(later)]))
        add_capacity(
            session,
            uuid.UUID(tenants["globex"].tenant_id),
            "l40s",
            2,
            at(10, 0),
            at(10, 3),
            prices=load_price_book(session),
        )
    assert billed(focus(factory)) == 3 * 2 * Decimal("1.40")
    with pytest.raises(InvalidRequest, match="version\\(s\\) 2"), transaction(factory) as session:
        add_capacity(  # open-ended, it is billed into 2027
            session,
            uuid.UUID(tenants["globex"].tenant_id),
            "l40s",
            1,
            at(10, 0),
            prices=load_price_book(session),
        )


def test_an_allocation_cannot_be_extended_into_a_version_without_its_price(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """November's l40s allocation, recorded ended since version 2 (from 2027) drops the l40s,
    was given a later end in 2027 by ``capacity-end``: January's hours had no price, and every
    export and close of January failed ('no GPU-hour price')."""
    with transaction(factory) as session:
        [bundled] = load_price_book(session).versions
    later = {**version_document(bundled), "version": 2, "effective_from": "2027-01-01T00:00:00Z"}
    later["gpu_hour"] = {f: p for f, p in later["gpu_hour"].items() if f != "l40s"}
    with transaction(factory) as session:
        apply_price_book(session, PriceBook([bundled, version_from_document(later)]))
        prices = load_price_book(session)
        tenant = uuid.UUID(tenants["globex"].tenant_id)
        held = add_capacity(session, tenant, "l40s", 2, at(10, 0), at(10, 3), prices=prices).id
    with pytest.raises(InvalidRequest, match="version\\(s\\) 2"), transaction(factory) as session:
        end_capacity(session, held, at(1, 2, month=2, year=2027), prices=load_price_book(session))
    assert focus(factory, "2027-01", now=at(1, month=2, year=2027)) == []
    with transaction(factory) as session:  # a later end the versions it reaches price is fine
        end_capacity(session, held, at(31, 23, month=12), prices=load_price_book(session))
    assert billed(focus(factory)) == 2 * 21 * 24 * Decimal("1.40")  # the 10th on


def test_a_version_pricing_capacity_no_other_does_cannot_be_withdrawn(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """Capacity of a flavor only a version not in force yet prices is recorded from its start;
    withdrawn, the version before it priced those hours and had no price for the flavor: every
    export and close from then on failed."""
    with transaction(factory) as session:
        [bundled] = load_price_book(session).versions
    later = {**version_document(bundled), "version": 2, "effective_from": "2027-01-01T00:00:00Z"}
    later["gpu_hour"] = {**later["gpu_hour"], "mi300x": "3.00"}
    with transaction(factory) as session:
        apply_price_book(session, PriceBook([bundled, version_from_document(later)]))
        add_capacity(
            session,
            uuid.UUID(tenants["globex"].tenant_id),
            "mi300x",
            1,
            at(1, 0, month=2, year=2027),
            at(1, 2, month=2, year=2027),
            prices=load_price_book(session),
        )
    refused = pytest.raises(Conflict, match="no GPU-hour price for 'mi300x'")
    with refused, transaction(factory) as session:
        withdraw_price_version(session, 2, at(1, month=12))
    february = focus(factory, "2027-02", now=at(1, 3, month=3, year=2027))
    assert billed(february) == 2 * Decimal("3.00")


def test_a_refused_withdrawal_names_the_flavor_and_its_allocations_once(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """Refused, a withdrawal repeated 'version 1 has no GPU-hour price for ...' for every
    allocation of the flavor, without saying which version alone prices it: hundreds of
    allocations made an error of hundreds of clauses."""
    with transaction(factory) as session:
        [bundled] = load_price_book(session).versions
    later = {**version_document(bundled), "version": 2, "effective_from": "2027-01-01T00:00:00Z"}
    later["gpu_hour"] = {**later["gpu_hour"], "mi300x": "3.00"}
    tenant = uuid.UUID(tenants["globex"].tenant_id)
    with transaction(factory) as session:
        apply_price_book(session, PriceBook([bundled, version_from_document(later)]))
        prices = load_price_book(session)
        held = [
            add_capacity(session, tenant, "mi300x", 1, at(1, month=2, year=2027), prices=prices)
            for _ in range(7)
        ]
    with pytest.raises(Conflict) as refused, transaction(factory) as session:
        withdraw_price_version(session, 2, at(1, month=12))
    message = refused.value.message
    assert message.count("no GPU-hour price for 'mi300x'") == 1
    assert "7 allocations" in message and "and 2 more" in message
    assert sum(str(row.id) in message for row in held) == 5
    assert "version 2" in message


def _pricing(bundled: PriceBook, number: int, starts: str, *models: str) -> PriceBook:
    """The bundled version, then version ``number`` from ``starts`` pricing only ``models``."""
    [first] = bundled.versions
    document = {**version_document(first), "version": number, "effective_from": starts}
    document["models"] = {m: document["models"]["*"] for m in models}  # no "*" default
    return PriceBook([first, version_from_document(document)])
