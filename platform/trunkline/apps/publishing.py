"""Keeping the gateways' configuration the database's: the control plane checks every few
seconds that the snapshot store holds what the database says (publishing it again if not),
and remembers whether that works, for ``/healthz``."""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import anyio
from litestar import Litestar

from trunkline.apps.change_gaps import key_gap
from trunkline.apps.change_publisher import WHOLE_ABOVE, Published
from trunkline.apps.config_state import ConfigState, read_config_state
from trunkline.apps.publish_metrics import Check
from trunkline.apps.runtime import Runtime
from trunkline.kit.ids import utcnow
from trunkline.snapshot import InMemorySnapshotStore
from trunkline.snapshot.builder import current_digest
from trunkline.snapshot.key_shards import expired_shards
from trunkline.snapshot.store import Recorded

log = logging.getLogger(__name__)


SKIPS_BEFORE_WAITING = 2
CHECK_WAIT_S = 2.0
"""How long a check that skipped ``SKIPS_BEFORE_WAITING`` rounds in a row waits for a publish
under way (``_lock_for_check``)."""

STUCK = "a publish held the publishing lock past the check's wait"
"""``/healthz``'s error while checks keep finding a publish under way (a build stuck on a
database that does not answer): nothing this process publishes, nor the changes only its check
publishes, reaches the gateways meanwhile."""

THOROUGH_EVERY = 30
"""One check in this many builds the snapshot even when ``config_generation`` did not move:
for a change written to the database without the services (SQL by hand, a restored backup)."""


def republish_if_stale(runtime: Runtime, *, thorough: bool = False) -> bool:
    """Whether :func:`check_published` published (see it)."""
    return check_published(runtime, thorough=thorough) in ("expired_keys", "published")


def check_published(runtime: Runtime, *, thorough: bool = False) -> Check:
    """Publish the snapshot if the store does not hold the database's configuration: it holds
    none (a Redis restarted without its data), or a change's publish failed (Redis was away
    when an API call or ``trunkline keys revoke`` committed it), which would otherwise stay
    unknown to every gateway, a revoked key accepted, until the next change. Returns what the
    check did (``Check``): ``skipped`` and ``refused`` say nothing of whether the store is in
    sync.

    The snapshot is built only on a ``thorough`` check, or when the configuration state
    (``config_state``: the count of committed changes, the price book version in force) moved
    since this process last published or checked and the store does not say that its version
    was built from the state the database is in (``SnapshotPublisher.built_from``: another
    process published it, so a change through one control plane costs the others no build);
    what it builds is compared with the digest of what the store holds, so a change another
    process published is not published again (and the store is made to say it holds that
    state, when it did not: ``_vouch``). A publish under way in this process
    (``ChangePublisher.publishing``) skips the round: it will look again.
    When nothing moved, the shards of keys expired since the last build are published (read
    by an index: a key that expires is a change to its shard alone)."""
    locked = _lock_for_check(runtime)
    if locked != "locked":
        runtime.metrics.checked(locked)
        return locked
    try:
        with runtime.outage.watch():  # whether the store answers, for the publishes after writes
            outcome = _check(runtime, thorough)
    except Exception:
        runtime.mark_left(counted=not thorough)  # what it would have built is still missing
        runtime.metrics.checked("failed")
        raise
    finally:
        runtime.publishing.release()
    runtime.metrics.checked(outcome)
    return outcome


def _lock_for_check(runtime: Runtime) -> Literal["locked", "skipped", "stuck"]:
    """The publishing lock, unless a publish holds it: then the check skips its round, unless
    it skipped ``SKIPS_BEFORE_WAITING`` in a row, when it waits up to ``CHECK_WAIT_S`` for it
    (``stuck`` if in vain). Under a stream of writes the check skipped most rounds (9 of 13 at
    10,000 keys in a probe), and what it alone publishes (another process's change whose
    publish never came) waited; a publish that never ends (a build on a database that does not
    answer) held everything while ``/healthz`` said the configuration was in sync."""
    lock, waits = runtime.publishing, runtime.checks_skipped >= SKIPS_BEFORE_WAITING
    if lock.acquire(timeout=CHECK_WAIT_S) if waits else lock.acquire(blocking=False):
        runtime.checks_skipped = 0
        return "locked"
    runtime.checks_skipped += 1
    return "stuck" if waits else "skipped"


def _check(runtime: Runtime, thorough: bool) -> Check:
    if _gateways_ahead(runtime):
        return _CHECKED[runtime.publish_now()]
    state = read_config_state(runtime.session_factory)
    if state.generation is not None and not thorough and _store_whole_and_current(runtime):
        if state == runtime.seen:
            return _drop_expired(runtime)
        recorded = runtime.publisher.built_from()
        if recorded is not None and recorded.built_from.generation > state.generation:
            # Another process stored a newer version after the state was read: read it again
            # (still behind the record: the database went back, a restored backup, and the
            # build below publishes what it says). Taken as a gap, it was built whole.
            state = read_config_state(runtime.session_factory)
        if recorded is not None and recorded.built_from == state.as_built_from():
            runtime.seen, runtime.published_version = state, recorded.version  # another's
            return "current"
        gap = None if recorded is None else _key_gap(runtime, recorded, state)
        if gap is not None:
            return _follow_key_gap(runtime, *gap)
    runtime.awaited = frozenset()
    current = current_digest(
        runtime.session_factory, cache_secret=runtime.server_secret, now=utcnow()
    )
    if runtime.publisher.published_digest() == current:  # read after it
        runtime.left = runtime.left_whole = False  # nothing is missing
        runtime.seen = state
        runtime.published_version = runtime.publisher.published_version()  # what it holds
        return "vouched" if _vouch(runtime, state, current, thorough=thorough) else "current"
    if runtime.publisher.published_version() is None:
        log.warning("the snapshot store holds no snapshot; publishing it again")
    else:
        log.info("the snapshot store does not hold the database's configuration; publishing")
    # Refused every time: other control planes kept storing newer versions, which may not
    # hold this change; the next check looks again. Held: another's newer version has it.
    return _CHECKED[runtime.publish_now(counted=not thorough)]


def _key_gap(
    runtime: Runtime, recorded: Recorded, state: ConfigState
) -> tuple[list[int], set[int]] | None:
    """The changes the store's record does not name yet and the key shards they changed, when
    they all changed keys only, in at most ``WHOLE_ABOVE`` shards, and the prices in force are
    the record's (``change_gaps.key_gap``): with another control plane taking key writes,
    one of its changes is nearly always committed and not yet stored. None when anything else
    may be missing, which a whole build carries."""
    ours = state.as_built_from()
    if ours is None or ours.rest != recorded.built_from.rest or runtime.left_whole:
        return None
    gap = key_gap(recorded, runtime.session_factory, ours.generation)
    return None if gap is None or len(gap[1]) > WHOLE_ABOVE else gap


def _follow_key_gap(runtime: Runtime, missing: list[int], shards: set[int]) -> Check:
    """The store lacks only key changes (``_key_gap``). Another control plane's, as a rule,
    which it is publishing by their shards: ``in_flight``, nothing built. Every check built
    whole instead (a second at 19,000 keys), was refused by the other's next patch three times,
    and held this process's publishes the while (writes waited 3-7 s in a probe). Any of
    them still missing a check later (its publisher stopped, or its publish failed), or one of
    this process's own whose publish failed (``left``), or a store no other process publishes
    to: their shards are patched in now, carrying them (the shards are read after the patch's
    version is handed out, after they committed). So are changes this process knew stored
    (``ChangePublisher.known_stored``): the store lost them (a failover to a replica that had not
    received them, a backup restored) and a newer version was stored over it; no one is
    publishing them, and every gateway is serving the parts from before them (a revoked key
    accepted again)."""
    alone = isinstance(runtime.publisher, InMemorySnapshotStore)  # no other publisher
    lost = any(runtime.known_stored(generation) for generation in missing)
    if runtime.awaited.isdisjoint(missing) and not (runtime.left or alone or lost):
        runtime.awaited = frozenset(missing)
        return "in_flight"
    was_left, runtime.awaited, runtime.left = runtime.left, frozenset(), False  # carried now
    if runtime.publish_shards(shards, missing):
        return "published"
    runtime.left = runtime.left or was_left
    return "refused"


_CHECKED: dict[Published, Check] = {"stored": "published", "held": "current", "refused": "refused"}
"""A check's outcome by what became of its whole publish: ``current`` when another process's
newer version holds the change."""


def _vouch(runtime: Runtime, state: ConfigState, content: bytes, *, thorough: bool) -> bool:
    """The store holds ``content``, built here from ``state``: when it does not say it was
    built from ``state``, say so (``SnapshotPublisher.vouch``), so the other control planes'
    checks need no build of their own. Without it a record stopped by a gap (patches of two
    processes' changes stored out of order, or a write by an older control plane) never moved
    again while only keys changed, and every change cost every other control plane a build.
    Whether it stored the new version."""
    built_from, held = state.as_built_from(alone=thorough), runtime.published_version
    if built_from is None or held is None:
        return False
    recorded = runtime.publisher.built_from()
    if recorded is not None and (
        recorded.built_from == built_from
        or (not thorough and recorded.built_from.generation > built_from.generation)
    ):
        # Says so already, or names a later state (read since by another process); a thorough
        # check says what it read, alone: the count may have gone back (a restored backup).
        return False
    new = runtime.publisher.next_version()  # after ``state`` was read: see ``vouch``
    if not runtime.publisher.vouch(held, content, new, built_from):
        return False
    runtime.published_version = new
    return True


def _drop_expired(runtime: Runtime) -> Check:
    """Publish the shards of the keys that expired since this process last built (the whole
    build leaves them out): whether there were any. A gateway refuses them already (it checks
    expiry per request); this keeps the snapshot stored the one the whole build gives.
    ``unchanged`` when there were none, ``refused`` when no publish of them was stored."""
    if runtime.built_at is None:
        return "unchanged"
    with runtime.session_factory() as session:
        shards = expired_shards(session, runtime.built_at, utcnow())
    if not shards:
        return "unchanged"
    return "expired_keys" if runtime.publish_shards(shards) else "refused"


def _gateways_ahead(runtime: Runtime) -> bool:
    """Whether gateways reported serving a newer version than the store holds, one no control
    plane remembered (Redis lost its data and every one restarted, that version handed out
    under a clock that was ahead): they ignore every version below it, keys revoked since
    accepted, so the configuration is published whole above it (``served_version``)."""
    served = runtime.publisher.served_version()
    stored = runtime.publisher.published_version()
    if served is None or (stored is not None and stored >= served):
        return False
    log.warning(
        "gateways serve snapshot version %s, newer than the %s stored; publishing above it",
        served,
        stored,
    )
    return True


def _store_whole_and_current(runtime: Runtime) -> bool:
    """The store holds a whole snapshot, not older than the one this process published last
    (else Redis was restored from a backup, or failed over to a lagging replica, and gateways
    started since would load a configuration from before: keys revoked since accepted)."""
    if runtime.publisher.published_digest() is None:
        return False
    stored, ours = runtime.publisher.published_version(), runtime.published_version
    return ours is None or (stored is not None and stored >= ours)


@dataclass
class SnapshotSync:
    """Whether the periodic check keeps the gateways' configuration the database's: since when
    it has failed (the snapshot store refusing writes, or away), None while it succeeds. A key
    created meanwhile is refused by every gateway, and a revoked one still accepted."""

    failing_since: float | None = None
    error: str | None = None
    checked: bool = False
    """A check has run (the first comes ``snapshot_check_s`` after the start)."""

    def succeeded(self) -> None:
        if self.failing_since is not None:
            log.info("snapshot check succeeded again; the gateways have this configuration")
        self.failing_since, self.error, self.checked = None, None, True

    def checked_with(self, outcome: Check) -> None:
        """A check that did not raise: a skipped one (a publish under way, perhaps blocked on
        an away store) or a refused one (nothing stored) says nothing, the state stays; a stuck
        one (it waited for a publish under way, in vain) fails."""
        if outcome == "stuck":
            self.failed(STUCK)
        elif outcome not in ("skipped", "refused"):
            self.succeeded()

    def failed(self, error: str) -> None:
        self.failing_since = self.failing_since or time.time()
        self.error, self.checked = error, True

    def report(self) -> dict[str, object]:
        if not self.checked:
            return {"in_sync": None}  # not known yet
        if self.failing_since is None:
            return {"in_sync": True}
        failing_s = round(time.time() - self.failing_since, 1)
        return {"in_sync": False, "failing_s": failing_s, "error": self.error}


def keeping_published(
    runtime: Runtime, every_s: float, sync: SnapshotSync
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def keep_published(_app: Litestar) -> AsyncIterator[None]:
        async def check() -> None:
            thorough_due = False
            for count in itertools.count(1):
                await anyio.sleep(every_s)
                thorough = thorough_due or count % THOROUGH_EVERY == 0
                try:
                    outcome = await anyio.to_thread.run_sync(
                        functools.partial(check_published, runtime, thorough=thorough)
                    )
                except Exception as exc:  # the store or the database away: try again later
                    log.warning("snapshot check failed: %s", type(exc).__name__)
                    sync.failed(type(exc).__name__)
                    continue
                thorough_due = thorough and outcome in ("skipped", "stuck")  # the next, then
                sync.checked_with(outcome)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(check)
            yield
            tasks.cancel_scope.cancel()

    return keep_published
