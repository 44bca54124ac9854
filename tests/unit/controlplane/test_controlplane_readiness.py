"""The control plane's probes under load: ``/healthz`` (readiness) says whether the database
answers without taking a connection the API's requests wait for; ``/livez`` (liveness) never
touches the database."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import Connection
from tests.unit.controlplane.cp_support import World, problem_of

from support.in_process_server import serving_signals
from support.processes import trunkline_env
from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.readiness import DatabaseReadiness
from trunkline.apps.runtime import Runtime
from trunkline.kit.shutdown_delay import ShutdownDelay


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


async def test_probes_of_a_database_that_does_not_answer_wait_on_one_check() -> None:
    """A PostgreSQL host that takes connections and says nothing: each probe took a thread and
    a connection of the API's for libpq's connect timeout (5 s), probes every few seconds piling
    up on them. Now a probe answers not ready within the readiness timeout, and those arriving
    while the check still waits wait on that one check: one connection, one thread."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    silent.settimeout(10)
    url = f"postgresql+psycopg://trunkline@127.0.0.1:{silent.getsockname()[1]}/trunkline"
    readiness = DatabaseReadiness(url, timeout_s=0.05)
    try:
        answers = [await readiness.answered() for _ in range(5)]
        taken, _ = await asyncio.to_thread(silent.accept)
        taken.close()
        silent.settimeout(0)
        with pytest.raises(BlockingIOError):  # nothing else connected meanwhile
            silent.accept()
        assert answers == [False] * 5
    finally:
        silent.close()  # refused from now on: the check ends
        readiness.close(wait=True)


async def test_sigterm_fails_readiness_at_once_and_the_control_plane_serves_on(
    runtime: Runtime,
) -> None:
    """As the gateway: SIGTERM closed the listener at once, the ingress's requests of that
    moment refused. Now ``/healthz`` fails at once, the API serves on for the delay (answers
    saying ``Connection: close``), and a second SIGTERM stops it."""
    app = create_controlplane_app(runtime, shutdown_delay=ShutdownDelay(3600.0))
    async with serving_signals(app) as (url, task), httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/healthz")).status_code == 200

        signal.raise_signal(signal.SIGTERM)

        ready = await client.get("/healthz")
        assert (ready.status_code, ready.json()["code"]) == (503, "unavailable")
        assert ready.headers["connection"] == "close"
        async with httpx.AsyncClient(base_url=url) as fresh:
            assert (await fresh.get("/api/v1/tiers")).status_code == 401  # served: no token
        assert not task.done()

        signal.raise_signal(signal.SIGTERM)

        await asyncio.wait_for(task, 30)


def test_an_api_request_finding_every_connection_in_use_is_told_to_retry(
    runtime: Runtime, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request waiting out the pool's timeout with every connection in use (a burst of slow
    requests) got a 500 ``internal_error`` and a traceback in the log; it is the control
    plane's load, not a fault: 503 ``unavailable`` with Retry-After, as a database outage."""
    token = world.tokens["root"]
    with ExitStack() as stack:
        _take_every_connection(runtime, stack)
        monkeypatch.setattr(runtime.engine.pool, "_timeout", 0.05)  # QueuePool's wait
        answer = world.client.get("/api/v1/tenants", headers={"Authorization": f"Bearer {token}"})
    body = problem_of(answer, 503)
    assert body["code"] == "unavailable"
    assert answer.headers["retry-after"] == "2"
    assert "connections" in body["detail"]


def test_a_check_that_never_ends_does_not_hold_the_process_at_exit(tmp_path: Path) -> None:
    """A database that never answers the readiness check (a PostgreSQL frozen mid-statement,
    whose kernel still acknowledges the keepalives: libpq waits on): the check's thread held
    the process at exit, after its shutdown, until the orchestrator's SIGKILL. It no longer
    does; the check is abandoned with the process."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    url = f"postgresql+psycopg://trunkline@127.0.0.1:{port}/trunkline?connect_timeout=3600"
    script = tmp_path / "probe_then_exit.py"
    script.write_text(
        "import asyncio, sys\n"
        "from trunkline.apps.readiness import DatabaseReadiness\n"
        "async def main() -> None:\n"
        "    readiness = DatabaseReadiness(sys.argv[1], timeout_s=0.05)\n"
        "    assert not await readiness.answered()\n"
        "    readiness.close()  # as the control plane's shutdown does\n"
        "asyncio.run(main())\n"
    )
    try:
        exited = subprocess.run(
            [sys.executable, str(script), url], env=trunkline_env(), capture_output=True,
            timeout=60,  # the check waits an hour
        )  # fmt: skip
    finally:
        silent.close()
    assert exited.returncode == 0, exited.stderr.decode()
