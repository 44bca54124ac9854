"""What the control plane refuses in a request's path and query parameters before a handler
reads them (the app's ``before_request``): a NUL character, and a parameter that takes one
value given more than once.

Litestar keeps the last of a scalar query parameter's values and drops the others, so
``?format=csv&format=parquet`` answered parquet and ``?limit=5&limit=500`` a page of 500, as if
the caller had asked for that alone. Which parameters take one value is read from what each
route declares (its handler's and its dependencies' parameters, as Litestar resolved them),
once for the whole app: a parameter declared as a list keeps taking repeats, and a new route
is covered without a check of its own.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from litestar import Litestar, Request
from litestar.exceptions import ValidationException
from litestar.handlers import BaseRouteHandler
from litestar.routes import HTTPRoute

__all__ = ["ParameterCheck", "scalar_query_parameters"]


class ParameterCheck:
    """The control plane's ``before_request``: refuses a NUL and a repeated single-valued query
    parameter, each as a validation error naming it and its source (``path`` or ``query``), as
    a query parameter of the wrong kind is."""

    def __init__(self) -> None:
        self._scalars: dict[BaseRouteHandler, frozenset[str]] | None = None

    def __call__(self, request: Request[Any, Any, Any]) -> None:
        refuse_nul(request)
        if self._scalars is None:  # the routes exist once the app does: read them at first use
            self._scalars = scalar_query_parameters(request.app)
        refuse_repeats(request, self._scalars.get(request.route_handler, frozenset()))


def scalar_query_parameters(app: Litestar) -> dict[BaseRouteHandler, frozenset[str]]:
    """The query parameters that take one value, by route handler (their names in the URL)."""
    found: dict[BaseRouteHandler, frozenset[str]] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler, kwargs_model in route.route_handler_map.values():
            names = {p.field_alias for p in kwargs_model.expected_query_params if not p.is_sequence}
            if names:
                found[handler] = frozenset(names)
    return found


def refuse_repeats(request: Request[Any, Any, Any], scalars: frozenset[str]) -> None:
    """Raise when a parameter of ``scalars`` is given more than once, naming each such one (by
    name: the query's own order is not kept by ``query_params``)."""
    if not scalars:
        return
    given = Counter(name for name, _ in request.query_params.multi_items() if name in scalars)
    repeated = sorted((name, count) for name, count in given.items() if count > 1)
    if repeated:
        raise ValidationException(
            detail="a query parameter that takes one value was given more than once",
            extra=[
                {"key": name, "message": f"given {count} times; give it once", "source": "query"}
                for name, count in repeated
            ],
        )


def refuse_nul(request: Request[Any, Any, Any]) -> None:
    """A path or query parameter holding NUL (``%00``) is refused as a 400 naming it: PostgreSQL
    refuses NUL in text, so looking it up would fail in the database, as a 500. No name,
    id or alias of Trunkline can hold one (the schemas refuse control characters)."""
    given = [
        *((name, value, "path") for name, value in request.path_params.items()),
        *((name, value, "query") for name, value in request.query_params.multi_items()),
    ]
    for name, value, source in given:
        if isinstance(value, str) and "\x00" in value:
            raise ValidationException(
                detail=f"{name} must not contain a NUL character",
                extra=[
                    {"key": name, "message": "must not contain a NUL character", "source": source}
                ],
            )
