"""Pages over HTTP: the ``limit`` and ``after`` query parameters, and the link to the next page.

The body of a paged listing stays a JSON array, as before pagination; when more rows follow,
an RFC 8288 ``Link: <?limit=N&after=CURSOR>; rel="next"`` header says where, with the
request's other query parameters kept (``project_id``, ``tenant_id``). The link is a query-only
reference (RFC 3986), resolved against the URL the client called: behind a proxy that
terminates TLS, rewrites ``Host`` or strips a path prefix, an absolute URL or a path built from
what the control plane sees would point elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeAlias, TypeVar
from urllib.parse import urlencode

from litestar import Request, Response
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.params import Parameter

from trunkline.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest

__all__ = ["NEXT_PAGE_LINK", "PageQuery", "Paging", "provide_paging"]

T = TypeVar("T")

NEXT_PAGE_LINK = [
    ResponseHeader(
        name="Link",
        documentation_only=True,
        description='`<?limit=N&after=CURSOR>; rel="next"` while more rows follow (RFC 8288); '
        "absent on the last page",
    )
]
"""The ``response_headers`` of a paged listing, for its OpenAPI description."""
_PAGING_PARAMETERS = ("limit", "after")
MAX_CURSOR_CHARS = 1024
"""Far above any cursor a listing makes (one holding a 320-character e-mail address: 450)."""


@dataclass(frozen=True)
class PageQuery:
    """The page a request asks for, and what its next page's link is made of."""

    request: PageRequest
    kept: tuple[tuple[str, str], ...]
    """The request's other query parameters, kept in the next page's link."""

    def answer(self, page: Page[T]) -> Response[list[T]]:
        """The page's rows as a JSON array, with a ``Link`` to the next page if any."""
        headers = {} if page.next is None else {"Link": self.link(page.next)}
        return Response(page.items, headers=headers)

    def link(self, following: PageRequest) -> str:
        query = [*self.kept, ("limit", str(following.limit)), ("after", following.after or "")]
        return f'<?{urlencode(query)}>; rel="next"'


Paging: TypeAlias = NamedDependency[PageQuery]
"""A handler parameter ``paging``: the page asked for (see :func:`provide_paging`)."""


def provide_paging(
    request: Request[Any, Any, Any],
    limit: Annotated[
        int,
        Parameter(ge=1, le=MAX_LIMIT, description=f"rows per page, 1 to {MAX_LIMIT}"),
    ] = DEFAULT_LIMIT,
    after: Annotated[
        str | None,
        Parameter(
            max_length=MAX_CURSOR_CHARS,
            description="the cursor of the `Link` to the next page; absent for the first",
        ),
    ] = None,
) -> PageQuery:
    """The dependency ``paging``: out-of-range or non-integer limits are refused (400) by the
    parameters' declaration, cursors by the listing that reads them."""
    kept = tuple(
        (name, value)
        for name, value in request.query_params.multi_items()
        if name not in _PAGING_PARAMETERS
    )
    return PageQuery(PageRequest(limit, after), kept)
