"""Whether the snapshot store failed a call lately, so a publish after an API write does not
wait on a store that does not answer.

A Redis that accepts connections but never answers (frozen, a blackholed socket) holds each
call for the client's socket timeout. A publish after a commit waited for it, every write
call, one after the other on ``Runtime.publishing``. Once a call failed, publishes leave their
change to the periodic check (``apps.publishing.check_published``), which publishes what the
store lacks once it answers; the check's calls, and any publish's, say whether it does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

STORE_AWAY_S = 10.0
"""After a failed call, publishes leave their change to the check for this long, unless a
call succeeds first. The check fails again each round (every 2 s) while the store does not
answer, so this only ends the wait of a process with no check running (the CLI)."""


class StoreOutage:
    def __init__(
        self, hold_s: float = STORE_AWAY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.hold_s, self._clock = hold_s, clock
        self._lock = threading.Lock()
        self._failed_at: float | None = None

    def suspected(self) -> bool:
        """A call to the store failed less than ``hold_s`` ago, and none succeeded since."""
        with self._lock:
            failed_at = self._failed_at
        return failed_at is not None and self._clock() - failed_at < self.hold_s

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Calls to the store: a Redis error says it failed (re-raised), an end without one
        that it answered."""
        try:
            yield
        except redis.RedisError:
            with self._lock:
                self._failed_at = self._clock()
            raise
        with self._lock:
            self._failed_at = None
