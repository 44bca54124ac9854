"""The gateway's in-memory copy of the config snapshot, refreshed when its version moves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from trunkline.snapshot import Snapshot, SnapshotSource
from trunkline.snapshot.parts import Assembly
from trunkline.snapshot.store import IncompleteSnapshot

log = logging.getLogger(__name__)


class SnapshotHolder:
    """Polls the source's version every ``poll_s`` and swaps in a new snapshot.

    Polling (not pub/sub) keeps the guarantee simple: a change is served by every
    replica within ``poll_s`` plus one fetch, and a missed message cannot strand a
    replica on an old snapshot. Reads are a plain attribute access.
    """

    def __init__(self, source: SnapshotSource, poll_s: float = 0.5) -> None:
        self._source = source
        self._poll_s = poll_s
        self.current: Snapshot = Snapshot.empty()
        self.reachable = False
        """The store answered the last poll (it may hold no snapshot: see ``current.version``)."""
        self.checked_at: float | None = None
        """When (``time.monotonic()``) the store last answered a poll: the configuration served
        is known current as of then. Its publication's age says nothing of that: the control
        plane publishes only on change."""
        self.created_at = time.monotonic()
        """When this holder was made (``time.monotonic()``), with the process: how stale the
        configuration may be is counted from then until the store first answers."""
        self._task: asyncio.Task[None] | None = None
        self._parts = Assembly()
        self._incomplete = False
        self._behind = False

    async def refresh(self) -> bool:
        """Load the snapshot if its version changed (fetching and decoding only the parts that
        changed: ``snapshot.parts``); returns whether it did."""
        version = await self._source.version()
        self.reachable = True
        self.checked_at = time.monotonic()
        if version is not None and version < self.current.version and not self._behind:
            log.warning(  # a Redis restored from a backup: the control plane publishes anew
                "the snapshot store holds version %s, older than the %s served; keeping it",
                version,
                self.current.version,
            )
        self._behind = version is not None and version < self.current.version
        if version is None or version <= self.current.version:
            return False  # an older one: versions only move forward (a key revoked stays so)
        loaded = await self._source.load(self._parts.digests)
        if loaded is None or loaded.version <= self.current.version:
            return False  # the store went back since its version was read (a failover)
        self.current = self._parts.apply(loaded)
        fetched = {"snapshot_version": self.current.version, "snapshot_parts": len(loaded.blobs)}
        log.info("snapshot loaded", extra=fetched)
        return True

    async def start(self) -> None:
        try:
            await self.refresh()
        except Exception:
            log.exception("initial snapshot load failed; retrying in the background")
        self._task = asyncio.create_task(self._poll(), name="snapshot-poll")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            was_reachable = self.reachable
            try:
                await self.refresh()
            except IncompleteSnapshot as exc:  # the store answered: the control plane repairs it
                if not self._incomplete:
                    log.warning(
                        "could not read a whole snapshot from the store (%s); serving snapshot "
                        "%s until it can (the control plane publishes a lost part again)",
                        exc,
                        self.current.version,
                    )
                self._incomplete = True
                continue
            except Exception as exc:
                # Keep serving the last good snapshot while the store is away. One line when
                # it goes, one when it is back: polled twice a second, a traceback per poll
                # buried every other log line of an outage.
                self.reachable = False
                if was_reachable:
                    log.warning(
                        "snapshot store unreachable; serving snapshot %s until it is back: %s: %s",
                        self.current.version,
                        type(exc).__name__,
                        exc,
                    )
            else:
                if not was_reachable:
                    log.warning("snapshot store reachable again")
                self._incomplete = False
