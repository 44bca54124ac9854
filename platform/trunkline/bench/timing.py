"""Time calls of several variants interleaved in blocks, so machine noise hits each alike.

A slow minute on a shared machine (another process, a CPU frequency change) then lands on every
variant in turn instead of on whichever ran during it. The lead alternates between rounds, so no
variant always runs right after another one's block.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

__all__ = ["block_schedule", "time_interleaved"]


def block_schedule(variants: list[str], count: int, block: int) -> Iterator[tuple[str, int]]:
    """``(variant, calls)`` blocks giving each variant ``count`` calls, ``block`` at a time."""
    if count < 0 or block < 1:
        raise ValueError("count must be >= 0 and block >= 1")
    done = 0
    round_index = 0
    while done < count:
        size = min(block, count - done)
        order = variants if round_index % 2 == 0 else variants[::-1]
        for name in order:
            yield name, size
        done += size
        round_index += 1


def time_interleaved(
    calls: Mapping[str, Callable[[], None]], count: int, block: int
) -> dict[str, list[float]]:
    """Run each variant's call ``count`` times in interleaved blocks; seconds per call."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    clock = time.perf_counter
    for name, size in block_schedule(list(calls), count, block):
        call, out = calls[name], samples[name]
        for _ in range(size):
            start = clock()
            call()
            out.append(clock() - start)
    return samples
