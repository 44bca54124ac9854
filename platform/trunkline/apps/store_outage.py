"""Whether Redis failed a call lately, so a request does not wait on a Redis that does not
answer.

A Redis that accepts connections but never answers (frozen, a blackholed socket) holds each
call for the client's socket timeout. A publish after a commit waited for it, every write
call, one after the other on ``ChangePublisher.publishing``. Once a call failed, publishes
leave their change to the periodic check (``apps.publishing.check_published``), which
publishes what the store lacks once it answers; the check's calls, and any publish's, say
whether it does. The quota endpoints skip their usage reads the same way
(``quota.controllers``). The control plane has one Redis for both, and one ``StoreOutage``
(the runtime's): an outage found by a publish or the check skips the usage reads too, and one
found by a usage read skips the publishes.

The start of an outage and its end are logged once each, not once a request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

log = logging.getLogger(__name__)

STORE_AWAY_S = 10.0
"""After a failed call, publishes leave their change to the check (and the quota endpoints
show no usage) for this long, unless a call succeeds first. The check fails again each round
(every 2 s) while the store does not answer, so this only ends the wait of a process with no
check running (the CLI)."""


class StoreOutage:
    def __init__(
        self,
        hold_s: float = STORE_AWAY_S,
        clock: Callable[[], float] = time.monotonic,
        *,
        name: str = "Redis",
        meanwhile: str = "publishes after writes are left to the control plane's check",
    ) -> None:
        self.hold_s, self._clock = hold_s, clock
        self._name, self._meanwhile = name, [meanwhile]
        self._lock = threading.Lock()
        self._failed_at: float | None = None

    def also(self, meanwhile: str) -> None:
        """Another thing done without the store while it is suspected, said when an outage
        starts (once, however often it is told)."""
        with self._lock:
            if meanwhile not in self._meanwhile:
                self._meanwhile.append(meanwhile)

    def suspected(self) -> bool:
        """A call to the store failed less than ``hold_s`` ago, and none succeeded since."""
        with self._lock:
            failed_at = self._failed_at
        return failed_at is not None and self._clock() - failed_at < self.hold_s

    def failed(self, error: BaseException) -> None:
        """A call to the store failed: logged when none had since the last that answered."""
        with self._lock:
            started, self._failed_at = self._failed_at is None, self._clock()
            meanwhile = ", and ".join(self._meanwhile)
        if started:
            log.warning(
                "%s failed a call (%s); until one answers, %s",
                self._name,
                type(error).__name__,
                meanwhile,
            )

    def answered(self) -> None:
        """A call to the store answered: logged when one had failed before."""
        with self._lock:
            ended, self._failed_at = self._failed_at is not None, None
        if ended:
            log.info("%s answers again", self._name)

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Calls to the store: a Redis error says it failed (re-raised), an end without one
        that it answered."""
        try:
            yield
        except redis.RedisError as exc:
            self.failed(exc)
            raise
        self.answered()
