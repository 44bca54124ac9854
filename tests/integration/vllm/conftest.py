"""Real vLLM servers and a Trunkline gateway in front of them.

``vllm_server`` is one replica pinned to the last core (the test process keeps the first);
``vllm_pair`` two more replicas, one core each, started only by the tests that ask for them.
Both are session-scoped: a server takes ≈40 s to start, so tests share them and must not rely
on an empty prefix cache (use a prompt no other test sends; see ``unique_prompt``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from support.vllm import (
    Gateway,
    VllmEnv,
    VllmServer,
    build_gateway,
    find_vllm_env,
    start_vllm,
    start_vllm_replicas,
)

VLLM_FIXTURES = frozenset({"vllm_env", "vllm_server", "vllm_pair"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on real vLLM are integration tests (``-m "not integration"`` leaves them out)."""
    for item in items:
        if VLLM_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


@pytest.fixture(scope="session")
def vllm_env() -> VllmEnv:
    return find_vllm_env()


@pytest.fixture(scope="session")
def vllm_server(
    vllm_env: VllmEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    server = start_vllm(tmp_path_factory.mktemp("vllm"), str(_cores()[-1]), env=vllm_env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_pair(
    vllm_env: VllmEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[VllmServer, VllmServer]]:
    """Two fresh replicas, one core each (the same core twice on a one-core machine)."""
    cores = _cores()
    first, second = start_vllm_replicas(
        tmp_path_factory.mktemp("vllm-pair"), [str(cores[0]), str(cores[-1])], env=vllm_env
    )
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., Gateway]]:
    """Build a gateway over the given servers (and routing policy, default ``prefix-aware``):
    real HTTP upstream, no mock transport."""
    clients: list[TestClient] = []  # type: ignore[type-arg]

    def build(
        servers: list[VllmServer],
        policy: str = "prefix-aware",
        admission: str = "slo",
        **options: Any,
    ) -> Gateway:
        gateway = build_gateway(servers, policy, admission, **options)
        gateway.client.__enter__()
        clients.append(gateway.client)
        return gateway

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def gateway(
    make_gateway: Callable[[list[VllmServer]], Gateway], vllm_server: VllmServer
) -> Gateway:
    return make_gateway([vllm_server])
