"""``trunkline up`` runs the gateway and the control plane in one process: each serves its own
``/metrics``, with its own requests, and neither the other's."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from trunkline.apps.embedded import run_embedded
from trunkline.bench.processes import LOOPBACK, free_loopback_ports
from unit.controlplane.cp_support import TENANTS_DIR, make_settings

STARTED_S = 60.0
"""How long the embedded platform may take to start on a loaded machine."""


def families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by family name; fails on a family declared twice (a collision)."""
    declared = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(declared) == len(set(declared)), sorted(declared)
    return {
        family.name: {
            (sample.name, *sorted(sample.labels.items())): sample.value  # type: ignore[misc]
            for sample in family.samples
        }
        for family in text_string_to_metric_families(text)
    }


async def test_the_gateway_and_the_control_plane_each_serve_their_own_metrics(
    tmp_path: Path,
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'trunkline.db'}", tmp_path / "state")
    settings.gateway.port, settings.controlplane.port = free_loopback_ports(2)
    gateway = f"http://{LOOPBACK}:{settings.gateway.port}"
    controlplane = f"http://{LOOPBACK}:{settings.controlplane.port}"
    ready = asyncio.Event()
    up = asyncio.create_task(run_embedded(settings, TENANTS_DIR, time_scale=0.02, ready=ready))
    try:
        async with asyncio.timeout(STARTED_S):
            await asyncio.wait(
                [up, asyncio.create_task(ready.wait())], return_when="FIRST_COMPLETED"
            )
        assert ready.is_set(), up.result()
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{gateway}/v1/models")).status_code == 401
            assert (await client.get(f"{controlplane}/api/v1/tiers")).status_code == 401
            gateway_page = (await client.get(f"{gateway}/metrics")).text
            controlplane_page = (await client.get(f"{controlplane}/metrics")).text
    finally:
        up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await up

    on_gateway, on_controlplane = families(gateway_page), families(controlplane_page)
    assert on_gateway["trunkline_requests"] == {
        ("trunkline_requests_total", ("route", "/v1/models"), ("status", "401")): 1
    }
    assert on_controlplane["trunkline_controlplane_requests"] == {
        ("trunkline_controlplane_requests_total",
         ("method", "GET"), ("route", "/api/v1/tiers"), ("status", "401")): 1
    }  # fmt: skip
    assert on_controlplane["trunkline_snapshot_builds"]  # it published at the start
    # Each server's own count of late heads and bodies, under one name on each page.
    for name in ("trunkline_header_timeouts", "trunkline_body_timeouts"):
        assert name in on_gateway and name in on_controlplane
    gateway_only = {
        "trunkline_requests",
        "trunkline_snapshot_version",
        "trunkline_usage_events_held",
    }
    controlplane_only = {"trunkline_controlplane_requests", "trunkline_snapshot_builds"}
    assert gateway_only <= on_gateway.keys() and controlplane_only <= on_controlplane.keys()
    assert not gateway_only & on_controlplane.keys()
    assert not controlplane_only & on_gateway.keys()
