"""The simulated engine's HTTP tests' engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.unit.engines.helpers import small_h100

from trunkline.engines import create_sim_app
from unit.engines.sim_client import MODEL, Sim, open_sim


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    app = create_sim_app(
        model=MODEL, profile=small_h100(max_model_len=512), seed=3, time_scale=0.01
    )
    async with open_sim(app) as opened:
        yield opened
