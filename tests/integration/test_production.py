"""Production mode: migrate, apply manifests, control plane, several gateway processes and a
usage worker on real PostgreSQL and Redis, driven by the OpenAI SDK."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import func, select

from support.platform import MESSAGES, Platform, issue_key, lists_models, samples
from support.processes import TRUNKLINE, Proc, trunkline_env
from support.raw_http import read_slowly
from support.servers import free_port
from trunkline.apps.request_context import CUT
from trunkline.apps.runtime import Runtime
from trunkline.auth.principal import Principal
from trunkline.auth.service import admin_token
from trunkline.engines import EngineSpec, start_in_thread
from trunkline.keys.service import revoke_key
from trunkline.kit.db import transaction
from trunkline.models import Tenant, UsageEvent
from trunkline.pools.service import set_pool_endpoints
from unit.metering.usage_support import a_month_of_usage, migrated

EXPORT = b"GET /api/v1/billing/exports/2026-11 HTTP/1.1\r\nhost: t\r\nauthorization: Bearer "


def _refused(base_url: str, key: str) -> bool:
    response = httpx.get(f"{base_url}/models", headers={"Authorization": f"Bearer {key}"})
    return response.status_code == 401


def test_production_processes_serve_meter_and_revoke_across_replicas(platform: Platform) -> None:
    assert "latest migration" in platform.cli("migrate")
    first = platform.cli("tenants", "apply", "tenants")
    second = platform.cli("tenants", "apply", "tenants")
    assert first != second
    with start_in_thread(
        [EngineSpec("llama-3.1-8b-instruct", "h100", time_scale=0.01)] * 2
    ) as engines:
        with transaction(platform.runtime.session_factory) as session:
            set_pool_endpoints(session, "h100-eu-west", engines.urls[:1])
            set_pool_endpoints(session, "l40s-us-east", engines.urls[1:])
        platform.runtime.publish()
        metrics_port = free_port()
        worker = platform.spawn("worker", "worker", TRUNKLINE_JOBS__METRICS_PORT=str(metrics_port))
        gateways = [platform.gateway("gateway-a"), platform.gateway("gateway-b")]
        key = issue_key(platform.runtime)

        for base_url in gateways:
            client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
            platform.procs[-1].wait_until(
                lambda c=client: lists_models(c), "the new key to reach the gateway", 5
            )
            reply = client.chat.completions.create(model="llama-3.1-8b", messages=MESSAGES)  # type: ignore[arg-type]
            assert reply.usage is not None and reply.usage.completion_tokens > 0
            chunks = list(
                client.chat.completions.create(
                    model="llama-3.1-8b",
                    messages=MESSAGES,
                    stream=True,  # type: ignore[arg-type]
                    stream_options={"include_usage": True},
                )
            )
            assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0

        with transaction(platform.runtime.session_factory) as session:
            tenant_id = session.scalars(select(Tenant.id).where(Tenant.slug == "acme")).one()
            revoke_key(session, Principal.system(), tenant_id, key.split("_")[1])
        platform.runtime.publish()
        revoked_at = time.monotonic()
        pending = set(gateways)
        while pending and time.monotonic() - revoked_at < 2.0:
            pending = {g for g in pending if not _refused(g, key)}
        assert not pending, f"still accepting a revoked key after 2 s: {pending}"

    _wait_for_ledger(platform.runtime, expected=4)
    url = f"http://127.0.0.1:{metrics_port}/metrics"

    def acked() -> bool:  # the worker acks (and counts) a batch just after the ledger has it
        figures = samples(url)
        return figures["trunkline_usage_stream_backlog"] == 0 and (
            figures["trunkline_usage_ingested_events_total"] >= 4  # redeliveries would add
        )

    worker.wait_until(acked, "the worker's metrics to show the events ingested", 10)


def _wait_for_ledger(runtime: Runtime, expected: int) -> None:
    deadline = time.monotonic() + 30
    count = 0
    while time.monotonic() < deadline:
        with runtime.session_factory() as session:
            count = session.scalar(select(func.count()).select_from(UsageEvent)) or 0
        if count >= expected:
            break
        time.sleep(0.1)
    with runtime.session_factory() as session:
        rows = session.scalars(select(UsageEvent)).all()
    assert len(rows) == expected
    assert {r.status for r in rows} == {200}
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in rows)
    assert sum(r.stream for r in rows) == 2


@pytest.mark.parametrize(
    ("unset", "message"),
    [
        ("TRUNKLINE_SECURITY__KEY_HASH_SECRET", "KEY_HASH_SECRET"),
        ("TRUNKLINE_SECURITY__DEV_LOGIN", "development login"),
        ("TRUNKLINE_GATEWAY__METRICS_TOKEN", "TRUNKLINE_GATEWAY__METRICS_TOKEN"),
        ("TRUNKLINE_CONTROLPLANE__METRICS_TOKEN", "TRUNKLINE_CONTROLPLANE__METRICS_TOKEN"),
    ],
)
def test_production_refuses_development_shortcuts(
    platform: Platform, unset: str, message: str
) -> None:
    env = dict(platform.env)
    del env[unset]
    # A scrape token is the concern of the server that serves /metrics only.
    server = unset.removeprefix("TRUNKLINE_").partition("__")[0].lower()
    commands = [server] if server in ("gateway", "controlplane") else ["gateway", "controlplane"]
    for command in commands:
        proc = Proc(
            [*TRUNKLINE, command],
            trunkline_env(**env),
            platform.tmp,
            platform.tmp / f"{command}.log",
        )
        assert proc.popen.wait(60) != 0
        assert message in proc.output()


def test_a_stream_outliving_the_drain_timeout_is_metered_before_the_gateway_exits(
    platform: Platform,
) -> None:
    """SIGTERM waits for requests in flight only ``drain_timeout_s``: a stream longer than the
    orchestrator's grace period would otherwise be cut by its SIGKILL, unmetered."""
    platform.cli("migrate")
    platform.cli("tenants", "apply", "tenants")
    with start_in_thread([EngineSpec("llama-3.1-8b-instruct", "h100")]) as engines:  # real time
        with transaction(platform.runtime.session_factory) as session:
            for pool in ("h100-eu-west", "l40s-us-east"):
                set_pool_endpoints(session, pool, engines.urls)
        platform.runtime.publish()
        platform.spawn("worker", "worker")
        port = free_port()
        gateway = platform.spawn(
            "gateway", "gateway", TRUNKLINE_GATEWAY__PORT=str(port),
            TRUNKLINE_GATEWAY__DRAIN_TIMEOUT_S="1",
        )  # fmt: skip
        gateway.wait_http(f"http://127.0.0.1:{port}/health")
        key = issue_key(platform.runtime)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        gateway.wait_until(lambda: lists_models(client), "the new key to reach the gateway", 5)
        stream = client.chat.completions.create(
            model="llama-3.1-8b",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=20_000,  # minutes of decoding at the engine's pace
            stream=True,
        )
        received = _read_until_cut(stream, after=20, then=gateway.popen.terminate)
        # it exits, as uvicorn does, by the signal it was sent (after shutting down)
        assert gateway.popen.wait(30) == -signal.SIGTERM
        deadline = time.monotonic() + 30
        rows: list[UsageEvent] = []
        while not rows and time.monotonic() < deadline:
            with platform.runtime.session_factory() as session:
                rows = list(session.scalars(select(UsageEvent).where(UsageEvent.stream)))
            time.sleep(0.1)
    [row] = rows
    assert row.completion_tokens >= received - 2  # what it streamed (the role chunk has none)
    assert row.status == 499
    # Said in one line, not as uvicorn's "Exception in ASGI application" and a traceback.
    logged = gateway.output()
    assert "stream cut: the gateway stopped" in logged
    assert "Exception in ASGI application" not in logged and "Traceback" not in logged


def test_a_control_plane_export_outliving_the_drain_timeout_is_cut_and_the_process_exits(
    platform: Platform, postgres_url: str
) -> None:
    """SIGTERM waits for the control plane's requests in flight only ``drain_timeout_s``, as
    for the gateway: a billing export to a client reading slowly held the process for as long
    as the client liked, until the orchestrator's SIGKILL cut it unlogged. Now it is cut at the
    drain timeout, visibly (its chunked body never ends), and its access-log line says so."""
    a_month_of_usage(migrated(postgres_url))
    with transaction(platform.runtime.session_factory) as session:
        token = admin_token(session, platform.runtime.server_secret, "ops@example.com")
    port = free_port()
    controlplane = platform.spawn(
        "controlplane", "controlplane", TRUNKLINE_CONTROLPLANE__PORT=str(port),
        TRUNKLINE_CONTROLPLANE__DRAIN_TIMEOUT_S="1",
    )  # fmt: skip
    controlplane.wait_http(f"http://127.0.0.1:{port}/livez")
    request = EXPORT + token.access_token.encode() + b"\r\n\r\n"
    with read_slowly(port, request) as export:  # megabytes: more than the sockets buffer
        assert export.head.startswith(b"HTTP/1.1 200 "), export.head
        controlplane.popen.terminate()
        assert controlplane.popen.wait(60) == -signal.SIGTERM  # it exits, as uvicorn does
        body = export.until_closed()
    assert b"transfer-encoding: chunked" in body.lower()
    assert not body.endswith(b"\r\n0\r\n\r\n"), "the export ended as if it were whole"
    assert f"GET /api/v1/billing/exports/2026-11 200 {CUT}" in controlplane.output()


def test_the_servers_hold_connections_as_their_header_and_keep_alive_timeouts_say(
    platform: Platform,
) -> None:
    """The CLI gives each server its header and keep-alive timeouts, and each of ``--workers``
    processes: a late head gets a 408; a kept-alive connection idle is closed at the keep-alive
    timeout, before one opened after it, which sends nothing, reaches the header timeout."""
    platform.cli("migrate")
    gateway_port, cp_port = free_port(), free_port()
    gateway = platform.spawn(
        "gateway", "gateway", "--workers", "2", TRUNKLINE_GATEWAY__PORT=str(gateway_port),
        TRUNKLINE_GATEWAY__HEADER_TIMEOUT_S="2", TRUNKLINE_GATEWAY__KEEP_ALIVE_TIMEOUT_S="0.3",
    )  # fmt: skip
    controlplane = platform.spawn(
        "controlplane", "controlplane", "--workers", "2", TRUNKLINE_CONTROLPLANE__PORT=str(cp_port),
        TRUNKLINE_CONTROLPLANE__HEADER_TIMEOUT_S="2",
        TRUNKLINE_CONTROLPLANE__KEEP_ALIVE_TIMEOUT_S="0.3",
    )  # fmt: skip
    gateway.wait_http(f"http://127.0.0.1:{gateway_port}/livez")
    controlplane.wait_http(f"http://127.0.0.1:{cp_port}/schema")
    ports = [gateway_port, cp_port] * 4  # spread over each server's workers
    with contextlib.ExitStack() as stack:
        late = [stack.enter_context(socket.create_connection(("127.0.0.1", p))) for p in ports]
        for conn in late:
            conn.sendall(b"GET /livez HTTP/1.1\r\n")  # and no more
        for conn in late:
            conn.settimeout(30)
            assert conn.recv(1024).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    for port in ports:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=30) as kept,
            socket.create_connection(("127.0.0.1", port), timeout=30) as fresh,
        ):
            kept.sendall(b"GET /livez HTTP/1.1\r\nhost: t\r\n\r\n")
            answered = _until_closed(kept)
            fresh.setblocking(False)
            with pytest.raises(BlockingIOError):  # still open: it closes silently, later
                fresh.recv(1)
        assert answered.startswith(b"HTTP/1.1 ") and answered.count(b"HTTP/1.1 ") == 1

    # Whichever worker takes a scrape shows both workers' counts (the other's as of its last
    # write, at most a second old).
    for port in (gateway_port, cp_port):
        url, deadline = f"http://127.0.0.1:{port}/metrics", time.monotonic() + 30
        while (closed := samples(url)["trunkline_header_timeouts_total"]) < 4:
            assert time.monotonic() < deadline, f"{url}: {closed} of the 4 closes counted"
            time.sleep(0.1)
        assert closed == 4, url


def _until_closed(conn: socket.socket) -> bytes:
    """What ``conn`` receives until the server closes it."""
    received = b""
    while chunk := conn.recv(4096):
        received += chunk
    return received


def _read_until_cut(stream: Iterator[object], *, after: int, then: Callable[[], None]) -> int:
    """Chunks read from ``stream`` until the connection is cut; ``then`` runs after ``after``."""
    received = 0
    try:
        for _chunk in stream:
            received += 1
            if received == after:
                then()
    except (openai.APIError, httpx.HTTPError):
        return received
    raise AssertionError(f"the stream ended whole after {received} chunks")


def _workers(supervisor: int) -> list[int]:
    """The ``--workers`` processes of the server whose supervisor is ``supervisor``."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def test_every_worker_drains_at_sigterm_and_the_supervisor_waits_for_them(
    platform: Platform,
) -> None:
    """``trunkline gateway --workers 2`` at SIGTERM (Kubernetes'), sent to the supervisor: its
    workers each hear it from the supervisor, each answers ``/health`` 503 draining while it
    serves on for the shutdown delay, and the supervisor exits only once they did."""
    platform.cli("migrate")
    platform.runtime.publish_now()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gateway = platform.spawn(
        "gateway", "gateway", "--workers", "2", TRUNKLINE_GATEWAY__PORT=str(port),
        TRUNKLINE_GATEWAY__SHUTDOWN_DELAY_S="3600",  # ended below by a SIGTERM to each worker
        TRUNKLINE_GATEWAY__DRAIN_TIMEOUT_S="3600",
    )  # fmt: skip
    gateway.wait_http(f"{base}/health")
    workers = _workers(gateway.popen.pid)
    assert len(workers) == 2

    gateway.popen.terminate()

    def draining() -> bool:
        return httpx.get(f"{base}/health").status_code == 503

    gateway.wait_until(draining, "/health to say draining", 30)
    for _ in range(20):  # fresh connections, spread over both workers
        answer = httpx.get(f"{base}/health")
        assert (answer.status_code, answer.json()) == (503, {"status": "draining"})
        assert httpx.get(f"{base}/livez").status_code == 200  # serving on
    assert gateway.popen.poll() is None  # the supervisor waits for its workers

    for worker in workers:
        os.kill(worker, signal.SIGTERM)  # told again: each stops now
    assert gateway.popen.wait(60) == 0
