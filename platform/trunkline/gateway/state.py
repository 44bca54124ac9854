"""The gateway's in-memory copy of the config snapshot, refreshed when its version moves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from trunkline.snapshot import Snapshot, SnapshotSource
from trunkline.snapshot.parts import Assembly
from trunkline.snapshot.store import MAX_VERSION, IncompleteSnapshot

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
        self._beyond_seen: int | None = None

    async def refresh(self) -> bool:
        """Load the snapshot if its version changed (fetching and decoding only the parts that
        changed: ``snapshot.parts``); returns whether it did."""
        version = await self._source.version()
        self.reachable = True
        self.checked_at = time.monotonic()
        if version is not None and version < self.current.version:
            await self._behind_by(version)
        else:
            self._behind = False
        if version is None or version <= self.current.version or self._beyond(version):
            return False  # an older one: versions only move forward (a key revoked stays so)
        loaded = await self._source.load(self._parts.digests)
        if loaded is None or loaded.version <= self.current.version:
            return False  # the store went back since its version was read (a failover)
        if self._beyond(loaded.version):
            return False
        self.current = self._parts.apply(loaded)
        fetched = {"snapshot_version": self.current.version, "snapshot_parts": len(loaded.blobs)}
        log.info("snapshot loaded", extra=fetched)
        return True

    def _beyond(self, version: int) -> bool:
        """Whether ``version`` is beyond any a control plane hands out (``MAX_VERSION``):
        written by hand or by a tool. Served, it would have every version handed out after it
        ignored until the gateway restarted; one warning says so."""
        beyond = version > MAX_VERSION
        if beyond and version != self._beyond_seen:
            log.warning(
                "the snapshot store holds version %s, beyond any a control plane hands out "
                "(written by hand or by another tool?); keeping %s until it is replaced",
                version,
                self.current.version,
            )
        self._beyond_seen = version if beyond else None
        return beyond

    async def _behind_by(self, stored: int) -> None:
        """The store holds ``stored``, older than the version served (a Redis restored from a
        backup, failed over to a lagging replica, or that lost its data): keep serving ours,
        and tell the control planes, at every poll while it lasts. One that published ours
        publishes anew at its next check anyway; but none may remember it (every one restarted
        since, ours handed out under a clock that was ahead), and the gateways would ignore
        every version below it, a key revoked since accepted, until that clock passed it."""
        first, self._behind = not self._behind, True
        if first:
            log.warning(
                "the snapshot store holds version %s, older than the %s served; keeping it "
                "until a control plane stores a newer one",
                stored,
                self.current.version,
            )
        try:
            await self._source.report_served(self.current.version)
        except Exception as exc:  # a read-only replica: serving goes on, the store answered
            if first:
                log.warning(
                    "could not tell the control planes the version served: %s: %s",
                    type(exc).__name__,
                    exc,
                )

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
