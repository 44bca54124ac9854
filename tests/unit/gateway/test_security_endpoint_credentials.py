"""An endpoint URL may carry credentials for what fronts the engine
(``http://user:password@host``): they are sent to the engine, never written out."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import msgspec
import pytest
from tests.unit.gateway.conftest import Harness, World, default_world
from tests.unit.gateway.upstreams import chat_json

from trunkline.snapshot import EndpointEntry

PASSWORD = "pw-of-the-engine-proxy"
CHAT = {"model": "llama", "messages": [{"role": "user", "content": "hi"}]}


def _world_with_one_guarded_endpoint() -> World:
    world = default_world()
    world.pools = {
        name: msgspec.structs.replace(
            pool, endpoints=(EndpointEntry("e1", f"http://trunk:{PASSWORD}@engine-1:8000"),)
        )
        for name, pool in world.pools.items()
    }
    return world


def test_the_engine_gets_the_credentials_and_the_usage_record_does_not(
    make_gateway: Callable[..., Harness],
) -> None:
    world = _world_with_one_guarded_endpoint()
    key = world.add_key()
    gateway = make_gateway(chat_json, world)

    answer = gateway.client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
    )

    assert answer.status_code == 200
    assert gateway.upstream[-1].headers["authorization"].startswith("Basic ")
    (record,) = gateway.drain_usage()
    assert record.endpoint is not None
    assert "engine-1:8000" in record.endpoint
    assert PASSWORD not in record.endpoint


def test_an_endpoint_that_fails_is_logged_without_its_password(
    make_gateway: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    world = _world_with_one_guarded_endpoint()
    key = world.add_key()
    gateway = make_gateway(refused, world)

    with caplog.at_level(logging.DEBUG):
        answer = gateway.client.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
        )

    assert answer.status_code == 503
    logged = [(r.getMessage(), vars(r)) for r in caplog.records]
    assert any("engine-1:8000" in str(fields.get("endpoint")) for _m, fields in logged)
    assert not [line for line in logged if PASSWORD in str(line)]
    assert PASSWORD not in answer.text
