"""The control plane's probes under load: ``/healthz`` (readiness) says whether the database
answers without taking a connection the API's requests wait for; ``/livez`` (liveness) never
touches the database."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Connection

from trunkline.apps.runtime import Runtime


def _take_every_connection(runtime: Runtime, stack: ExitStack) -> list[Connection]:
    """Every connection the API's pool may hold, checked out: what a burst of slow requests
    (a large export, a long apply) does to it."""
    pool: Any = runtime.engine.pool
    most = pool.size() + pool._max_overflow  # QueuePool's bound; no public accessor
    return [stack.enter_context(runtime.engine.connect()) for _ in range(most)]


def test_readiness_answers_while_the_api_holds_every_database_connection(
    runtime: Runtime, client: TestClient[Any]
) -> None:
    """``/healthz`` took its connection from the API's pool: with every one in use it waited
    for one (30 s, the pool's timeout), longer than any probe waits, and then answered 500, so
    Kubernetes took a busy but healthy replica (every replica, under a burst) out of service.
    It now checks the database on a connection of its own."""
    with ExitStack() as stack:
        taken = _take_every_connection(runtime, stack)
        assert taken
        ready = client.get("/healthz")
        assert (ready.status_code, ready.json()["status"]) == (200, "ok")
        assert client.get("/livez").status_code == 200
