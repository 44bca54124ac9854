"""Keyset (cursor) pagination over a SQLAlchemy select.

A listing is ordered by a keyset: columns unique together within it (a tenant's ``slug``, a
key's ``(created_at, key_id)``). A page is the next ``limit`` rows after a cursor in that order,
and a cursor is the last row's key and the listing's name, JSON in urlsafe base64. The rows
after it are found in SQL, by comparing the keyset's columns with the cursor's values as one row
value, the very columns the ``ORDER BY`` sorts by: the database that orders the rows decides
what comes after the cursor, under its own collation, on SQLite and PostgreSQL alike. So rows
written between two pages behind the cursor never come back, rows ahead of it are never skipped,
and the row a cursor names may be deleted meanwhile.

A cursor only positions: the rows after it are still selected by the caller's own statement,
with its tenant scope and filters, so no cursor, however made, shows a row that the caller's
listing does not hold. A cursor of another listing, or one that does not decode into this
listing's key, is refused (``InvalidRequest`` naming ``after``).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar, TypeVarTuple, cast

import msgspec
from sqlalchemy import Select, TypeDecorator, literal, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from trunkline.errors import InvalidRequest

__all__ = [
    "DEFAULT_LIMIT",
    "EVERYTHING",
    "MAX_LIMIT",
    "Keyset",
    "Page",
    "PageRequest",
]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

T = TypeVar("T")
U = TypeVar("U")
Ts = TypeVarTuple("Ts")

_AWARE = Annotated[datetime, msgspec.Meta(tz=True)]
"""A cursor's timestamps carry their offset: a naive one would be refused by the UTC columns."""


@dataclass(frozen=True)
class PageRequest:
    """Which page: at most ``limit`` rows (``None``: every row) after the cursor ``after``
    (``None``: from the first)."""

    limit: int | None = None
    after: str | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"a page holds at least one row, not {self.limit}")


EVERYTHING = PageRequest()
"""The whole listing in one page: for the CLI and the manifests, which read the database."""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next: PageRequest | None = None
    """The request for the page after this one; ``None`` on the last page."""

    def map(self, convert: Callable[[T], U]) -> Page[U]:
        return Page([convert(item) for item in self.items], self.next)


@dataclass(frozen=True)
class Keyset:
    """How one listing is paged: its name (cursors carry it) and the columns it is ordered by,
    ascending, unique together within the listing."""

    listing: str
    columns: tuple[InstrumentedAttribute[Any], ...]
    _key_type: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        types = tuple(_cursor_type(column) for column in self.columns)
        object.__setattr__(self, "_key_type", cast(Any, tuple)[types])

    def page(
        self, session: Session, statement: Select[*Ts], request: PageRequest
    ) -> Page[tuple[*Ts]]:
        """The rows of ``statement`` on the page ``request`` asks for, in keyset order."""
        ordered = statement.order_by(*self.columns).add_columns(*self.columns)
        if request.after is not None:
            after = zip(self.columns, self.decode(request.after), strict=True)
            bound = tuple_(*(literal(value, column.type) for column, value in after))
            ordered = ordered.where(tuple_(*self.columns) > bound)
        if request.limit is not None:
            ordered = ordered.limit(request.limit + 1)  # one more says whether a next page exists
        rows: Sequence[Any] = session.execute(ordered).all()
        width = len(self.columns)
        following = None
        if request.limit is not None and len(rows) > request.limit:
            rows = rows[: request.limit]
            following = PageRequest(request.limit, self.encode(tuple(rows[-1][-width:])))
        items = [cast("tuple[*Ts]", tuple(row[:-width])) for row in rows]
        return Page(items, following)

    def scalars(self, session: Session, statement: Select[T], request: PageRequest) -> Page[T]:
        """:meth:`page` of a statement selecting one thing, without the 1-tuples."""
        return self.page(session, statement, request).map(lambda row: row[0])

    def encode(self, key: tuple[Any, ...]) -> str:
        raw = msgspec.json.encode([self.listing, *key])
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def decode(self, cursor: str) -> tuple[Any, ...]:
        """The key in ``cursor``; ``InvalidRequest`` unless it is a cursor of this listing."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            decoded = msgspec.json.decode(raw, type=list[Any])
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise _bad_cursor(_NOT_GIVEN) from None
        if not decoded or decoded[0] != self.listing:
            raise _bad_cursor(f"is a cursor of another listing than {self.listing}")
        try:
            key = msgspec.convert(decoded[1:], type=self._key_type)
        except msgspec.ValidationError:
            raise _bad_cursor(_NOT_GIVEN) from None
        return tuple(_checked(value) for value in key)


def _cursor_type(column: InstrumentedAttribute[Any]) -> Any:
    """The Python type of a key value in a cursor (a ``TypeDecorator`` says ``object``)."""
    stored = column.type
    if isinstance(stored, TypeDecorator):
        stored = stored.impl_instance
    python_type = stored.python_type
    if python_type not in (str, int, uuid.UUID, datetime):
        raise TypeError(f"{column} cannot be a keyset column: {python_type} in a cursor")
    return _AWARE if python_type is datetime else python_type


def _checked(value: Any) -> Any:
    """A key value the database can compare: PostgreSQL refuses NUL in text, and a timestamp
    the UTC columns cannot hold (year 9999 at -12:00) fails when bound."""
    if isinstance(value, str) and "\x00" in value:
        raise _bad_cursor(_NOT_GIVEN)
    if isinstance(value, datetime):
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise _bad_cursor(_NOT_GIVEN) from None
    return value


_NOT_GIVEN = "is not a cursor this API gave"


def _bad_cursor(reason: str) -> InvalidRequest:
    return InvalidRequest(f"after {reason}; start again without it", param="after")
