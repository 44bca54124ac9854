"""Batches by weight, as the billing exports cut tenants into groups and files into pieces:
every item once, in order, each batch ended by the item that fills it, none empty."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from trunkline.kit.batches import batches


@pytest.mark.parametrize(
    ("items", "limit", "weight", "expected"),
    [
        ([1, 2, 3, 4, 5], 2, None, [[1, 2], [3, 4], [5]]),  # what is left, last
        ([1, 2, 3, 4], 2, None, [[1, 2], [3, 4]]),  # no empty batch after a full one
        ([], 2, None, []),  # no items, no batch (not one empty batch)
        ([1, 2, 3], 1, None, [[1], [2], [3]]),
        (["ab", "c", "defg", "h", "i"], 3, len, [["ab", "c"], ["defg"], ["h", "i"]]),
        (["a", "bcdefg", "h"], 3, len, [["a", "bcdefg"], ["h"]]),  # a heavy item ends its batch
        ([5, 0, 0, 1, 0, 9], 5, lambda rows: rows + 1, [[5], [0, 0, 1, 0], [9]]),  # none weighs 0
    ],
)
def test_batches_hold_every_item_in_order_each_ended_by_the_item_that_fills_it(
    items: list[object],
    limit: int,
    weight: Callable[[object], int] | None,
    expected: list[list[object]],
) -> None:
    assert list(batches(items, limit, weight)) == expected


def test_batches_read_their_items_only_as_each_batch_is_taken() -> None:
    """A month of every tenant's charges is made as it is sent, never read whole first."""
    read: list[int] = []

    def items() -> Iterator[int]:
        for item in range(10):
            read.append(item)
            yield item

    taken = batches(items(), 3)
    assert next(taken) == [0, 1, 2] and read == [0, 1, 2]
    assert next(taken) == [3, 4, 5] and read == list(range(6))
