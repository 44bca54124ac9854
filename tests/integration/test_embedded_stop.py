"""Ctrl-C on ``trunkline up`` with requests in flight: it says it waits for them, and a second
Ctrl-C cuts them now. Before, it went silent for the drain time (25 s) and a second Ctrl-C did
nothing: a user took it for hung."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from trunkline.apps.embedded import run_embedded
from trunkline.bench.processes import LOOPBACK, free_loopback_ports
from unit.controlplane.cp_support import TENANTS_DIR, make_settings

GUARD_S = 60.0
"""How long the platform may take to start, and a cut stream to end, on a loaded machine;
far below the drain time it would otherwise wait."""


async def test_a_second_ctrl_c_cuts_the_requests_the_first_one_waits_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'trunkline.db'}", tmp_path / "state")
    settings.gateway.port, settings.controlplane.port = free_loopback_ports(2)
    settings.gateway.drain_timeout_s = 3600  # a stop that waits on it never ends in this test
    ready = asyncio.Event()
    up = asyncio.create_task(run_embedded(settings, TENANTS_DIR, ready=ready))
    async with asyncio.timeout(GUARD_S):
        await asyncio.wait([up, asyncio.create_task(ready.wait())], return_when="FIRST_COMPLETED")
    assert ready.is_set(), up.result()
    key = (settings.state_dir / "demo-api-key").read_text().strip()
    events = []
    try:
        async with (
            httpx.AsyncClient(timeout=GUARD_S) as client,
            client.stream(
                "POST",
                f"http://{LOOPBACK}:{settings.gateway.port}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "model": "llama-3.1-8b",
                    "stream": True,
                    "max_tokens": 100_000,  # longer than the test: it ends only when cut
                    "messages": [{"role": "user", "content": "hello"}],
                },
            ) as answer,
        ):
            lines = answer.aiter_lines()
            async with asyncio.timeout(GUARD_S):
                async for line in lines:  # it streams
                    if line.startswith("data: "):
                        break
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
                # What it prints is the only sign it took the first one (no event to await).
                while "Ctrl-C again" not in capsys.readouterr().out:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                os.kill(os.getpid(), signal.SIGINT)  # and again
                events = [line async for line in lines if line.startswith("data: ")]
                await up
    finally:
        up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await up
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == "gateway_stopped"
    assert "Trunkline stopped." in capsys.readouterr().out
