"""What the control plane refuses in a request's JSON body before Litestar converts it: a body
declared as another media type than JSON, a member given twice in one object, and a value of
another JSON type than its field's, which Litestar would convert.

Litestar reads a route's body as JSON whatever its ``Content-Type`` says: JSON sent as
``text/plain`` or XML was stored, and a form (``curl -d`` without ``-H``) answered "not valid
JSON". A body of a type given that is not JSON is refused as 415, naming the type to send.

Litestar converts every handler's arguments, the body included, with msgspec's loose rules,
made for path and query parameters, which are text: ``"1000"`` became a quota of 1000,
``"null"`` removed a limit, ``"true"`` and ``1`` were true. A body is JSON, whose values have
types: it is read here as the schema says (as the manifests are), once for every route that
takes one, so a new route is covered without a check of its own. A number with no fraction
(``60.0``) still counts as an integer, as JSON Schema (the OpenAPI document's) says. What the
loose rules refuse too is left to Litestar, whose problems name the field already.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar.exceptions import SerializationException, ValidationException
from litestar.handlers import BaseRouteHandler
from litestar.routes import HTTPRoute

from trunkline.errors import UnsupportedMediaType

__all__ = ["BodyCheck", "body_types"]

_AT = re.compile(r"^(?P<message>.*) - at `\$\.?(?P<field>[^`]*)`$", re.DOTALL)


class BodyCheck:
    """Part of the control plane's ``before_request``: refuses a body whose values Litestar
    would have to convert to another type, as a validation error naming the field."""

    def __init__(self) -> None:
        self._types: dict[BaseRouteHandler, Any] | None = None

    async def __call__(self, request: Request[Any, Any, Any]) -> None:
        if self._types is None:  # the routes exist once the app does: read them at first use
            self._types = body_types(request.app)
        target = self._types.get(request.route_handler)
        if target is None:
            return
        refuse_media_type(request.headers.get("content-type"))
        try:
            value = await request.json()  # kept: the handler's reading decodes it no more
        except SerializationException:  # not JSON: Litestar's own reading answers it so
            return
        refuse_repeated_names(await request.body())
        if (refusal := strict_refusal(value, target)) is not None:
            raise refusal


def refuse_repeated_names(body: bytes) -> None:
    """Raise when an object of ``body`` (JSON that decodes) gives a member twice, naming it.

    The decoder keeps the last value and drops the others, silently: ``{"priority": 1,
    "priority": 1000}`` was served as 1000, while a proxy or an audit log reading the first
    saw another request. Read a second time for this alone: the control plane's bodies are
    small (1 MiB at most) and its requests few."""

    def pairs(members: list[tuple[str, Any]]) -> dict[str, Any]:
        given = Counter(name for name, _ in members)
        repeated = [(name, count) for name, count in given.items() if count > 1]
        if repeated:
            name, count = repeated[0]
            raise ValidationException(
                detail=f"invalid value for {name}",
                extra=[{"key": name, "message": f"given {count} times; give it once",
                        "source": "body"}],
            )  # fmt: skip
        return dict(members)

    try:
        json.loads(body, object_pairs_hook=pairs)
    except ValidationException:  # a ValueError too
        raise
    except ValueError:  # JSON the decoder took but this reading does not: nothing to say
        return


def refuse_media_type(content_type: str | None) -> None:
    """Raise unless ``content_type`` is JSON's: ``application/json`` or a ``+json`` type
    (``application/merge-patch+json``), with any parameters. A body sent without one is read
    as JSON, as it always was."""
    if content_type is None:
        return
    media_type = content_type.partition(";")[0].strip().lower()
    kind, _, subtype = media_type.partition("/")
    if kind == "application" and (subtype == "json" or subtype.endswith("+json")):
        return
    raise UnsupportedMediaType(
        f"the body must be JSON, sent as Content-Type: application/json, not {media_type[:100]}"
    )


def body_types(app: Litestar) -> dict[BaseRouteHandler, Any]:
    """The type of each route handler's JSON body (its ``data`` argument), if it takes one."""
    found: dict[BaseRouteHandler, Any] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is not None:
                found[handler] = data.annotation
    return found


def strict_refusal(value: Any, target: Any) -> ValidationException | None:
    """The refusal of ``value`` (decoded JSON) as a ``target`` where only the loose rules
    would take it; None when it is one as JSON has it, or is none even loosely."""
    try:
        msgspec.convert(_integers(value), target, strict=True)
    except msgspec.ValidationError as exc:
        try:
            msgspec.convert(value, target, strict=False)
        except (msgspec.ValidationError, TypeError):
            return None
        found = _AT.match(str(exc))
        field, message = (found["field"], found["message"]) if found else ("body", str(exc))
        return ValidationException(
            detail=f"invalid value for {field}",
            extra=[{"key": field, "message": message, "source": "body"}],
        )
    except TypeError:  # a type msgspec does not read by itself: Litestar's hooks do
        return None
    return None


def _integers(value: Any) -> Any:
    """``value`` with each number that has no fraction as an integer (``60.0`` is 60)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integers(item) for item in value]
    return value
