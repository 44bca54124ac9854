"""One ``trunkline up`` per database. A second one started in the same directory on other
ports (as the README says to when ports are taken) pointed the simulated pools at its own
engines; the first one's gateway follows the database, so its requests went to the second's
engines, and every one failed (503) once the second stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from trunkline.apps.embedded import run_embedded
from trunkline.bench.processes import LOOPBACK, free_loopback_ports
from trunkline.errors import ConfigurationError
from trunkline.settings import Settings
from unit.controlplane.cp_support import TENANTS_DIR, make_settings

STARTED_S = 60.0
"""How long the embedded platform may take to start on a loaded machine."""


def settings_on_free_ports(tmp_path: Path) -> Settings:
    settings = make_settings(f"sqlite:///{tmp_path / 'trunkline.db'}", tmp_path / "state")
    settings.gateway.port, settings.controlplane.port = free_loopback_ports(2)
    return settings


@contextlib.asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    """``trunkline up`` on ``settings``, once it serves (or once it stopped, whichever first)."""
    ready = asyncio.Event()
    up = asyncio.create_task(run_embedded(settings, TENANTS_DIR, time_scale=0, ready=ready))
    try:
        async with asyncio.timeout(STARTED_S):
            await asyncio.wait(
                [up, asyncio.create_task(ready.wait())], return_when="FIRST_COMPLETED"
            )
        yield up
    finally:
        up.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConfigurationError):
            await up


async def chat(settings: Settings) -> int:
    key = (settings.state_dir / "demo-api-key").read_text().strip()
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(
            f"http://{LOOPBACK}:{settings.gateway.port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]},
        )
    return answer.status_code


async def test_a_second_up_on_the_same_database_is_refused_and_the_first_keeps_serving(
    tmp_path: Path,
) -> None:
    first = settings_on_free_ports(tmp_path)
    async with started(first) as up:
        assert not up.done(), up.exception()
        second = settings_on_free_ports(tmp_path)  # same database and state, other ports
        async with started(second) as again:
            assert again.done(), "a second `trunkline up` served the first one's database"
            with pytest.raises(ConfigurationError) as refused:
                again.result()
        message = refused.value.message
        assert "another `trunkline up`" in message
        assert str(tmp_path / "trunkline.db") in message
        assert "TRUNKLINE_DATABASE__URL" in message
        assert await chat(first) == 200  # its pools still point at its own engines

    # Once the first stops, the database is free again.
    async with started(settings_on_free_ports(tmp_path)) as after:
        assert not after.done(), after.exception()
