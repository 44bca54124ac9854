"""A request's outcome, from its HTTP status: what the rollups count, what the price book's
``billable_outcomes`` name, and what cost budgets are charged for. One table, read in Python
(the gateway settling a budget) and in SQL (the rollups), so the two never disagree."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.sql.elements import ColumnElement

CLIENT_CLOSED = 499
"""The status of a request whose client left (nginx's)."""

BILLED_BY_DEFAULT = ("completed", "cancelled")
"""The outcomes a price version bills unless it says otherwise (``billable_outcomes``)."""


def outcome_of(status: int) -> str:
    """``completed`` (2xx, 3xx), ``cancelled`` (499: the client left), ``rejected`` (other
    4xx) or ``failed`` (5xx)."""
    if status < 400:
        return "completed"
    if status == CLIENT_CLOSED:
        return "cancelled"
    return "rejected" if status < 500 else "failed"


def outcome_column(status: Any) -> ColumnElement[str]:
    """:func:`outcome_of` as a SQL expression over the ``status`` column (SQLAlchemy is
    imported here: the gateway, which imports this module, never loads it)."""
    from sqlalchemy import case

    return case(
        (status < 400, "completed"),
        (status == CLIENT_CLOSED, "cancelled"),
        (status < 500, "rejected"),
        else_="failed",
    )
