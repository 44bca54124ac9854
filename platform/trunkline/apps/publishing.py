"""Keeping the gateways' configuration the database's: the control plane checks every few
seconds that the snapshot store holds what the database says (publishing it again if not),
and remembers whether that works, for ``/healthz``."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import anyio
from litestar import Litestar

from trunkline.apps.runtime import Runtime
from trunkline.snapshot.builder import current_fingerprint

log = logging.getLogger(__name__)


def republish_if_stale(runtime: Runtime) -> bool:
    """Publish the snapshot if the store holds none (a Redis restarted without its data) or the
    database's configuration is not the one this process last published: a change whose
    publish failed (Redis was away when an API call or ``trunkline keys revoke`` committed it)
    would otherwise stay unknown to every gateway, a revoked key accepted, until the next
    change. A change another process published is published once more (same content, a newer
    version). Returns whether it published."""
    lost = runtime.publisher.published_version() is None
    current = current_fingerprint(runtime.session_factory, cache_secret=runtime.server_secret)
    if not lost and current == runtime.published:
        return False
    if lost:
        log.warning("the snapshot store holds no snapshot; publishing it again")
    else:
        log.info("the configuration is not the one last published here; publishing it")
    runtime.publish_now()
    return True


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
            while True:
                await anyio.sleep(every_s)
                try:
                    await anyio.to_thread.run_sync(republish_if_stale, runtime)
                except Exception as exc:  # the store or the database away: try again later
                    log.warning("snapshot check failed: %s", type(exc).__name__)
                    sync.failed(type(exc).__name__)
                else:
                    sync.succeeded()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(check)
            yield
            tasks.cancel_scope.cancel()

    return keep_published
