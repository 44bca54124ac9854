"""The control plane's readiness check: whether its database answers, asked on a connection
and a thread of its own, within a bound.

``/healthz`` took a connection from the API's pool on one of the threads the API's requests
share: with every connection in use (a burst of exports, a long ``apply``) it waited for one
for the pool's timeout, 30 s, far beyond a probe's, and the orchestrator took a busy but
healthy replica out of service, every replica at once under a burst. Here one check runs at a
time; a probe arriving meanwhile waits for that check's answer, so probes of a database that
does not answer pile up neither threads nor connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from litestar import Request, Response, get
from sqlalchemy import text

from trunkline.apps.problems import problem
from trunkline.apps.publishing import SnapshotSync
from trunkline.auth.middleware import EXCLUDE_FROM_AUTH
from trunkline.kit.db import make_engine
from trunkline.kit.scrape_access import ScrapeAccess
from trunkline.kit.shutdown_delay import ShutdownDelay

__all__ = ["DatabaseReadiness", "healthz"]

log = logging.getLogger(__name__)


class DatabaseReadiness:
    """Checks that the database at ``url`` answers ``SELECT 1``; see the module's docstring."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._engine = make_engine(url, connections=1)
        self._thread: threading.Thread | None = None
        self._check: asyncio.Future[None] | None = None

    def _select_one(self) -> None:
        with self._engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    async def answered(self) -> bool:
        """True once the database answered; False if it did not within ``timeout_s`` (the check
        goes on, and the next call waits for it). What the database raised, it raises."""
        if self._check is None or self._check.done():
            self._check = self._start_check()
            # Read here: a check failing after every probe waiting on it timed out had asyncio
            # log "Future exception was never retrieved" with a traceback.
            self._check.add_done_callback(_retrieve)
        try:
            await asyncio.wait_for(asyncio.shield(self._check), self.timeout_s)
        except TimeoutError:
            return False
        return True

    def _start_check(self) -> asyncio.Future[None]:
        """``SELECT 1`` on a daemon thread: a check the database never answers (a server frozen
        mid-statement, whose kernel still acknowledges libpq's keepalives) is left behind at
        exit. An executor's thread held the process after its shutdown, until SIGKILL."""
        loop = asyncio.get_running_loop()
        check: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if check.done():
                return
            if error is None:
                check.set_result(None)
            else:
                check.set_exception(error)

        def run() -> None:
            error: BaseException | None = None
            try:
                self._select_one()
            except BaseException as exc:  # handed to the probes waiting on the check
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, error)

        self._thread = threading.Thread(target=run, name="database-readiness", daemon=True)
        self._thread.start()
        return check

    def close(self, *, wait: bool = False) -> None:
        """Free the connection; ``wait`` for a check under way (else a database that does not
        answer holds no shutdown)."""
        if wait and self._thread is not None:
            self._thread.join()
        self._engine.dispose()


def _retrieve(check: asyncio.Future[None]) -> None:
    if not check.cancelled():
        check.exception()


def healthz(
    readiness: DatabaseReadiness,
    sync: SnapshotSync,
    access: ScrapeAccess,
    shutdown_delay: ShutdownDelay | None = None,
) -> Any:
    @get("/healthz", opt={EXCLUDE_FROM_AUTH: True}, tags=["health"])
    async def health(request: Request[Any, Any, Any]) -> Response[Any] | dict[str, object]:
        """Readiness: the database answers (503 when not, or not within the readiness timeout);
        ``snapshot`` says whether the gateways' configuration is kept the database's
        (``in_sync``; when not, for how long and why), to the holder of the scrape token only
        (a probe needs none)."""
        if shutdown_delay is not None and shutdown_delay.draining:  # SIGTERM: serving on
            return problem(
                request, 503, "unavailable", "the control plane is stopping (draining)",
                headers={"Retry-After": "2"},
            )  # fmt: skip
        if not await readiness.answered():
            log.warning("readiness: the database did not answer within %ss", readiness.timeout_s)
            return problem(
                request, 503, "unavailable",
                f"the database did not answer within {readiness.timeout_s:g} s; retry shortly",
                headers={"Retry-After": "2"},
            )  # fmt: skip
        if not access.allows(request.headers.getall("authorization", [])):
            return {"status": "ok"}
        return {"status": "ok", "snapshot": sync.report()}

    return health
