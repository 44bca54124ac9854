"""A stream cut into consecutive batches by weight: how the billing exports read tenants a group
at a time and write their files a piece at a time, holding a batch, never the whole."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def batches(
    items: Iterable[T], limit: int, weight: Callable[[T], int] | None = None
) -> Iterator[list[T]]:
    """``items`` in order, in lists each ended by the item that brings its weight to ``limit``
    or past it (an item weighs 1 without ``weight``; one heavier than ``limit`` ends a list of
    its own or of those before it), and a last list of what is left. No list is empty, so no
    items make no list. ``items`` is read only as the lists are taken."""
    batch: list[T] = []
    held = 0
    for item in items:
        batch.append(item)
        held += 1 if weight is None else weight(item)
        if held >= limit:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch
