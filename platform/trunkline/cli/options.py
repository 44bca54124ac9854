"""A data command's options converted to the schema the REST API takes, a refusal naming the
option the caller typed (``--ttl-days``), not the body's field (```$.ttl_days```)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from trunkline.errors import InvalidRequest
from trunkline.kit.text import shown

__all__ = ["convert_options", "option_of"]

T = TypeVar("T")

_FIELD_AT = re.compile(r"`\$\.(?P<field>\w+)[^`]*`")


def option_of(field: str) -> str:
    """How the command line spells a field by default: ``--min-prompt-tokens``."""
    return "--" + field.replace("_", "-")


def convert_options(
    raw: dict[str, Any], kind: type[T], option: Callable[[str], str] = option_of
) -> T:
    """``raw`` as ``kind``; ``InvalidRequest`` saying what is wrong and at which option."""
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        text = _FIELD_AT.sub(lambda found: option(found["field"]), shown(str(exc)))
        raise InvalidRequest(text.replace("`", "")) from exc
