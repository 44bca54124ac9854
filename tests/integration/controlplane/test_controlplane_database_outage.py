"""The control plane with its PostgreSQL stopped: 503 problem details saying to retry, not
500s with tracebacks; and back to normal, without a restart, once the database returns."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import Engine

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.runtime import build_runtime
from trunkline.bench.servers import start_postgres
from trunkline.kit.db import make_engine
from unit.controlplane.cp_support import build_world, make_runtime, make_settings


def test_a_stopped_database_is_a_503_to_retry_and_recovery_needs_no_restart(
    tmp_path: Path,
) -> None:
    cluster = start_postgres(durable=False)
    try:
        runtime = make_runtime(cluster.create_database("outage"), tmp_path / "state")
        with TestClient[Any](create_controlplane_app(runtime)) as client:
            world = build_world(runtime, client)
            admin = world.admin.headers
            assert client.get("/api/v1/tenants", headers=admin).status_code == 200
            cluster.stop()
            for method, path, body in [
                ("GET", "/healthz", None),
                ("GET", "/api/v1/tenants", None),
                ("PUT", "/api/v1/tiers/gold/quota", {"tokens_per_minute": 1000}),
            ]:
                response = client.request(method, path, headers=admin, json=body)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.headers["retry-after"] == "2"
                problem = response.json()
                assert (problem["code"], problem["status"]) == ("unavailable", 503)
                assert "Traceback" not in response.text
            assert client.get("/livez").status_code == 200  # alive: no restart would help
            cluster.start()
            assert client.get("/healthz").status_code == 200
            assert client.get("/api/v1/tenants", headers=admin).status_code == 200
        runtime.close()
    finally:
        cluster.destroy()


def test_a_database_host_that_never_answers_is_a_503_not_a_probe_that_hangs(
    tmp_path: Path,
) -> None:
    """A PostgreSQL host that takes connections and says nothing (frozen, or a load balancer
    before a dead one) held ``/healthz``, and every request, for as long as the socket lived:
    no connect timeout. A readiness probe timing out says nothing of why, and each hung
    request held one of the threads all requests share."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nothing ever answers
        url = f"postgresql+psycopg://trunkline@127.0.0.1:{silent.getsockname()[1]}/trunkline"
        runtime = build_runtime(make_settings(url, tmp_path / "state"))
        answers: list[int] = []

        def probe() -> None:
            with TestClient[Any](create_controlplane_app(runtime)) as client:
                answers.append(client.get("/healthz").status_code)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        prober.join(60)  # far beyond the connect timeout: else it waits for ever
        runtime.close()
    assert answers == [503]


def _tcp_options(engine: Engine) -> dict[str, int]:
    """The TCP options libpq set on the socket of a connection the engine's pool opened."""
    with engine.connect() as connection:
        fd = connection.connection.dbapi_connection.fileno()  # type: ignore[union-attr]
        with socket.socket(fileno=os.dup(fd)) as sock:
            return {
                "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                "idle_s": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                "interval_s": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            }


def test_pooled_connections_give_up_on_a_vanished_host_within_a_minute(postgres_url: str) -> None:
    """A database host that vanishes without a reset (powered off, a partition, a failover
    that moved its address) left each pooled connection waiting on its read for the kernel's
    defaults: keepalive probes after 2 h idle, retransmissions for about 15 min. The sockets
    now probe after 30 s idle and give up on data unacknowledged for 30 s, so a statement
    waiting on a vanished host fails (503 on the API, a retry in the jobs) within a minute.
    (The vanishing itself takes dropping packets, which needs root; this reads the options
    libpq set on a real connection's socket.)"""
    engine = make_engine(postgres_url)
    try:
        options = _tcp_options(engine)
    finally:
        engine.dispose()
    assert options == {
        "keepalive": 1,
        "idle_s": 30,
        "interval_s": 10,
        "count": 3,
        "user_timeout_ms": 30_000,
    }


def test_the_database_urls_own_keepalive_and_user_timeout_win(postgres_url: str) -> None:
    engine = make_engine(f"{postgres_url}?keepalives_idle=7&tcp_user_timeout=1234")
    try:
        options = _tcp_options(engine)
    finally:
        engine.dispose()
    assert (options["idle_s"], options["user_timeout_ms"]) == (7, 1234)
    assert (options["interval_s"], options["count"]) == (10, 3)  # the defaults it left
