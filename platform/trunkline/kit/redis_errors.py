"""Which Redis errors mean "Redis cannot take this write right now", not a bug of ours.

Besides a connection that failed or timed out, a reachable Redis refuses writes while it is a
replica (``READONLY``: a failover demoted it, and the client still talks to it), out of memory
(``OOM``), unable to persist (``MISCONF``), running a long script (``BUSY``), without its
master (``MASTERDOWN``) or replicas (``NOREPLICAS``), or its cluster is down or resharding.
Each passes, and callers treat it as an outage: wait and retry, or decide without Redis.
"""

from __future__ import annotations

from typing import Final

import redis
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)

UNREACHABLE: Final = (redis.ConnectionError, redis.TimeoutError, OSError)
_REFUSING: Final = (ReadOnlyError, OutOfMemoryError, ClusterDownError, TryAgainError)
_REFUSING_CODES: Final = (
    "MISCONF ",
    "BUSY ",
    "MASTERDOWN ",
    "NOREPLICAS ",
    "CLUSTERDOWN ",
    "TRYAGAIN ",
)
"""Error codes as they start a message: those redis-py has no class for (in every version
this project takes), and as Redis 7 keeps them for errors raised inside a script."""


def redis_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis cannot serve now (unreachable, or refusing writes)."""
    if isinstance(exc, UNREACHABLE + _REFUSING):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(_REFUSING_CODES)
