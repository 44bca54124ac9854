"""Where ``trunkline bench fidelity`` runs: the model real vLLM serves, CPU pinning and the
machine's load average.

Servers start through the test fixtures' launcher (:mod:`trunkline.bench.vllm_server`);
:func:`fidelity_env` makes the heavier model ``scripts/vllm-env.sh`` builds next to the tests'
tiny one the model its servers serve, as ``fidelity-llama``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass

from trunkline.bench.vllm_server import ServedModel, VllmEnv, find_vllm_env

__all__ = [
    "FIDELITY_MODEL",
    "FidelityEnv",
    "fidelity_env",
    "load_average",
    "pinned",
]

FIDELITY_MODEL = "fidelity-llama"


@dataclass(frozen=True)
class FidelityEnv(VllmEnv):
    """The vLLM venv whose servers serve the fidelity model instead of the tests' tiny one."""

    @property
    def served_model(self) -> ServedModel:
        return self.built_model(FIDELITY_MODEL)


def fidelity_env(find: Callable[[], VllmEnv] = find_vllm_env) -> FidelityEnv:
    """The environment with the fidelity model; fails naming the command that builds it."""
    env = FidelityEnv(find().venv)
    model = env.model
    if not (model / "config.json").exists():
        raise RuntimeError(
            f"real vLLM: the fidelity model is missing ({model / 'config.json'} not found): "
            "run `make vllm-env` (bash scripts/vllm-env.sh) to build it"
        )
    return env


@contextlib.contextmanager
def pinned(cpus: Set[int]) -> Iterator[None]:
    """Run this process on ``cpus`` inside the block; processes started meanwhile inherit it."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages, rounded to what a report shows."""
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)
