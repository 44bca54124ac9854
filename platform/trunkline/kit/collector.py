"""Pausing Python's cyclic garbage collector around work that builds many objects and no
reference cycles: a decoded JSON body, a simulation's millions of short-lived records. The
collector would otherwise traverse what is being built again and again as it grows."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off for the block, as it was after (on again only if it was)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
