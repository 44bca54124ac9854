"""The admission check, as pure functions over limit and usage vectors.

A request needs one request slot, one concurrency slot, its reserved tokens (in the minute, the
day and the month) and its reserved cost. It is admitted when, in every scope, what is used plus
what it needs stays within each limit. Budgets are checked first (waiting a minute does not help
when the month is spent), then concurrency, requests and tokens per minute; within a check the
most specific scope (key, project, tenant) answers first. The Lua script of the Redis store
implements exactly this; the contract suite holds both stores to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, NamedTuple

from trunkline.quota.limits import (
    CONCURRENCY,
    DAY_TOKENS,
    MONTH_COST,
    MONTH_TOKENS,
    REQUESTS,
    TOKENS,
    UNLIMITED,
)
from trunkline.quota.windows import Windows

Vector = tuple[int, int, int, int, int, int]
"""One number per limit, in ``LIMIT_NAMES`` order."""

ZERO: Final[Vector] = (0, 0, 0, 0, 0, 0)
CHECK_ORDER: Final = (MONTH_COST, MONTH_TOKENS, DAY_TOKENS, CONCURRENCY, REQUESTS, TOKENS)
BUDGETS: Final = frozenset({MONTH_COST, MONTH_TOKENS, DAY_TOKENS})
CONCURRENCY_RETRY_MS: Final = 1000
"""A concurrency slot frees when some request ends; we cannot know when, so: retry in a second."""


class Verdict(NamedTuple):
    limit: int | None
    """Index of the limit that refused (``LIMIT_NAMES``); ``None`` when admitted."""
    scope: int
    """Index of the scope that refused; -1 when admitted."""
    never_fits: bool
    """The request alone exceeds the limit: no amount of waiting admits it."""

    @property
    def admitted(self) -> bool:
        return self.limit is None


ADMITTED: Final = Verdict(None, -1, False)


def demand(tokens: int, cost: int) -> Vector:
    """What one request takes from each counter."""
    return (1, tokens, 1, tokens, tokens, cost)


def check(limits: Sequence[Vector], used: Sequence[Vector], need: Vector) -> Verdict:
    for field in CHECK_ORDER:
        wanted = need[field]
        for scope, (limit, current) in enumerate(zip(limits, used, strict=True)):
            bound = limit[field]
            if bound != UNLIMITED and current[field] + wanted > bound:
                return Verdict(field, scope, wanted > bound)
    return ADMITTED


def plus(used: Vector, need: Vector) -> Vector:
    return (
        used[0] + need[0],
        used[1] + need[1],
        used[2] + need[2],
        used[3] + need[3],
        used[4] + need[4],
        used[5] + need[5],
    )


def retry_after_ms(verdict: Verdict, windows: Windows) -> int | None:
    """How long to wait before the same request would be admitted; ``None`` if waiting a
    minute does not help (a spent budget, or a request larger than the limit itself)."""
    if verdict.limit is None or verdict.never_fits or verdict.limit in BUDGETS:
        return None
    if verdict.limit == CONCURRENCY:
        return CONCURRENCY_RETRY_MS
    return windows.minute_end_ms - windows.now_ms


def still_used(used: Vector, read: Windows, now: Windows) -> Vector:
    """The budgets of ``used``, counters read in ``read``'s windows, as they stand in ``now``'s:
    a day's or a month's that has ended since counts nothing any more (a limiter that last
    heard of the store before midnight must not refuse the new day from the old one's count).
    Per-minute counters and concurrency are left as they were (``local_limits`` ignores them)."""
    day = used[DAY_TOKENS] if read.day == now.day else 0
    month_tokens, month_cost = (
        (used[MONTH_TOKENS], used[MONTH_COST]) if read.month == now.month else (0, 0)
    )
    return (used[0], used[1], used[2], day, month_tokens, month_cost)


def local_limits(limits: Vector, share: float, last_used: Vector | None) -> Vector:
    """The limits one gateway process enforces alone while the shared store is unreachable.

    Per-minute limits and concurrency shrink to ``share`` of themselves. Budgets shrink to
    ``share`` of what was left when the process last heard from the store (the whole budget
    if it never did), counted from the start of the outage. So N replicas together admit at
    most ``N * share`` times each limit: bounded overshoot, configurable down to none.
    """
    out = []
    for field, limit in enumerate(limits):
        if limit == UNLIMITED:
            out.append(UNLIMITED)
            continue
        base = limit
        if field in BUDGETS and last_used is not None:
            base = max(0, limit - last_used[field])
        scaled = math.floor(base * share)
        out.append(max(scaled, 1) if base > 0 else 0)
    return (out[0], out[1], out[2], out[3], out[4], out[5])


__all__ = [
    "ADMITTED",
    "BUDGETS",
    "CHECK_ORDER",
    "REQUESTS",
    "TOKENS",
    "ZERO",
    "Vector",
    "Verdict",
    "check",
    "demand",
    "local_limits",
    "plus",
    "retry_after_ms",
    "still_used",
]
