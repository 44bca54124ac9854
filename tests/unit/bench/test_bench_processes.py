"""Benchmark servers run in their own processes, report failures, and never outlive the run."""

from __future__ import annotations

import contextlib
import socket
import sys
from pathlib import Path

import pytest

from trunkline.bench.processes import ServerProcess, free_loopback_ports
from trunkline.errors import TrunklineError


def test_a_server_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    script = "import sys; print('cannot bind port'); sys.exit(3)"
    server = ServerProcess("engine", [sys.executable, "-c", script], tmp_path / "engine.log")

    with server, pytest.raises(TrunklineError) as caught:
        server.wait_ready("http://127.0.0.1:9/health", timeout_s=30)

    assert "engine process exited with code 3" in caught.value.message
    assert "cannot bind port" in caught.value.message


def test_the_server_is_stopped_when_the_run_fails(tmp_path: Path) -> None:
    server = ServerProcess(
        "gateway", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "gw.log"
    )

    seen_running = []

    def interrupted_run() -> None:
        with server:
            seen_running.append(server.running())
            raise KeyboardInterrupt  # Ctrl-C in the middle of a measurement

    with pytest.raises(KeyboardInterrupt):
        interrupted_run()

    assert seen_running == [True]
    assert not server.running()


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    # Outgoing connections take their local ports from the ephemeral range: a port there can
    # be gone before a server binds it.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])

    ports = free_loopback_ports(8)

    assert len(set(ports)) == 8
    assert all(1024 <= port < low for port in ports)
    with contextlib.ExitStack() as stack:
        for port in ports:
            stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
