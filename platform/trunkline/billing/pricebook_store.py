"""The price book as stored: reading it and its currency, storing new versions and withdrawing
one not in force yet, each checked to leave nothing unpriced that would be billed (usage, a
served model, dedicated capacity) and no cost budget read in another currency.

``pricebook`` is the book itself (versions, checks, the bundled file), without a database.
"""

from __future__ import annotations

import functools
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trunkline.billing.capacity import (
    hold_price_book_now,
    latest_closed_end,
    unpriced_capacity,
)
from trunkline.billing.pricebook import (
    BUNDLED,
    DEFAULT_MODEL,
    PriceBook,
    PriceVersion,
    load_price_book_file,
    version_document,
    version_from_document,
)
from trunkline.errors import Conflict, InvalidRequest, NotFound
from trunkline.models import Model, PriceBookVersion, UsageRollup, UsageRollupWatermark
from trunkline.quota.repository import QuotaRepository
from trunkline.tenancy.changes import flush_or_conflict, hold_config, mark_config_changed


def load_price_book(session: Session) -> PriceBook:
    """The stored price book, or the bundled default while none was applied."""
    documents = session.scalars(select(PriceBookVersion.document)).all()
    if not documents:
        return load_price_book_file(BUNDLED)
    return PriceBook([version_from_document(d) for d in documents])


def prices_start(session: Session) -> datetime:
    """When the first price book version takes effect (the stored book's, or the bundled
    one's while none was applied): usage before it cannot be priced."""
    stored = session.scalar(select(func.min(PriceBookVersion.effective_from)))
    return stored if stored is not None else _bundled_start()


@functools.cache
def _bundled_start() -> datetime:
    return load_price_book_file(BUNDLED).versions[0].effective_from


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
    hold_price_book_now(session)
    added = _store_versions(session, book)
    if not keep_budget_amounts:
        check_budgets_keep_currency(session, currency_before, price_book_currency(session))
    if added:  # the gateways' cost budgets price with the version in force
        mark_config_changed(session)
    return added


def record_bundled_prices(session: Session) -> None:
    """Store the bundled price book, which is in force while none was applied, so a period
    closed at its prices has them on record. For a close, which holds the book already
    (``hold_price_book``); the gateways' prices stay the same, so the configuration does not
    change."""
    _store_versions(session, load_price_book_file(BUNDLED), in_force=True)


def _store_versions(session: Session, book: PriceBook, *, in_force: bool = False) -> list[int]:
    """Store the versions of ``book`` not stored yet, checked as ``apply_price_book`` says and
    to leave nothing that would be billed unpriced; returns their numbers. ``in_force``: the
    book prices already (the bundled one, recorded by a close), so storing it changes no
    price, and capacity recorded before its first version (before that was refused) does not
    refuse the close."""
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
    first_added = whole.versions[0].version in added and not in_force
    if problems := unpriced_capacity(session, whole, first_added=first_added):
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
    hold_price_book_now(session)
    first = load_price_book(session).versions[0].version == number
    session.delete(stored)
    session.flush()
    _check_capacity_priced(session, number, first=first)
    # Withdrawing the last stored version brings the bundled book back, perhaps its currency.
    check_budgets_keep_currency(session, before, price_book_currency(session))


def _check_capacity_priced(session: Session, number: int, *, first: bool) -> None:
    """Refuse a withdrawal that leaves dedicated capacity unpriced: the version before the
    withdrawn one now prices its hours (capacity recorded for a flavor only the withdrawn
    version priced), and if it was the first, the next one is first. Withdrawn, every export
    and close of those hours failed. (Token usage needs no such check: a model is served only
    once the version in force prices it, which then prices the withdrawn version's hours.)"""
    if problems := unpriced_capacity(session, load_price_book(session), first_added=first):
        raise Conflict(
            f"price book version {number} cannot be withdrawn: without it, dedicated capacity "
            "would go unpriced: " + "; ".join(problems),
            param="version",
        )


def _unpriced_models(session: Session, book: PriceBook, added: frozenset[int]) -> list[str]:
    """Versions of ``book`` being ``added`` without a ``*`` default that leave a model
    unpriced: one with usage in the hours the version prices, or, for the latest version, one
    the catalog serves. Every export of those hours would fail on it. Stored versions are not
    judged again: one that already misses a model must not refuse the version that prices it."""
    served = set(session.scalars(select(Model.name)))
    problems: list[str] = []
    first = book.versions[0]
    earliest = _earliest_usage_hour(session)
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


def _earliest_usage_hour(session: Session) -> datetime | None:
    """The first hour with usage, rolled up or ingested and waiting for its rollup (a pending
    watermark): checked against the rollups alone, a first version starting after usage
    ingested in the last 30 s was stored, and every export of that usage's month failed."""
    pending = UsageRollupWatermark.changed_seq > UsageRollupWatermark.rolled_seq
    hours = [
        session.scalar(select(func.min(UsageRollup.hour))),
        session.scalar(select(func.min(UsageRollupWatermark.hour)).where(pending)),
    ]
    return min((hour for hour in hours if hour is not None), default=None)


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
