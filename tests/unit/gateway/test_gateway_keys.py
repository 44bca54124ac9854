"""API keys at the gateway: how a key is presented, when it is refused (malformed, tampered,
revoked, expired), and that a request is served by the configuration current once its body has
come, not the one its key was checked against when its headers came."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import pytest
from tests.unit.gateway.conftest import TENANT_B, Harness
from tests.unit.gateway.test_gateway import (
    CHAT,
    _ready,
    _wait_for_version,
    assert_openai_error,
    auth,
)
from tests.unit.gateway.upstreams import chat_any

from trunkline.errors import Unauthenticated
from trunkline.settings import GatewaySettings


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic abc", "Bearer sk-not-ours", "Bearer tlk_AAAAAAAAAAAA_" + "B" * 40],
)
def test_missing_or_malformed_keys_get_401(make_gateway, header) -> None:
    gw, _key = _ready(make_gateway)
    headers = {} if header is None else {"Authorization": header}
    assert_openai_error(
        gw.client.post("/v1/chat/completions", json=CHAT, headers=headers), 401, "invalid_api_key"
    )
    assert_openai_error(gw.client.get("/v1/models", headers=headers), 401, "invalid_api_key")


def test_an_azure_client_s_api_key_header_is_taken_when_there_is_no_authorization(
    make_gateway,
) -> None:
    gw, key = _ready(make_gateway)
    assert gw.client.post("/v1/chat/completions", json=CHAT, headers={"api-key": key}).is_success
    assert gw.client.get("/v1/models", headers={"api-key": key}).is_success
    wrong = {"api-key": key[:-1] + ("A" if key[-1] != "A" else "B")}
    assert_openai_error(gw.client.get("/v1/models", headers=wrong), 401, "invalid_api_key")
    # an Authorization header, when sent, is the credential: a bad one is not rescued by api-key
    both = {"Authorization": "Basic abc", "api-key": key}
    assert_openai_error(gw.client.get("/v1/models", headers=both), 401, "invalid_api_key")


def test_tampered_secret_is_refused(make_gateway) -> None:
    gw, key = _ready(make_gateway)
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert_openai_error(gw.client.get("/v1/models", headers=auth(tampered)), 401, "invalid_api_key")


def test_revoked_key_is_refused_after_the_next_snapshot(make_gateway) -> None:
    gw, key = _ready(make_gateway)
    assert gw.client.get("/v1/models", headers=auth(key)).status_code == 200
    key_id = key.split("_")[1]
    del gw.world.keys[key_id]
    gw.world.publish()
    _wait_for_version(gw)
    assert_openai_error(gw.client.get("/v1/models", headers=auth(key)), 401, "invalid_api_key")


def test_expired_key_is_refused_without_a_new_snapshot(make_gateway) -> None:
    gw: Harness = make_gateway(chat_any)
    key = gw.world.add_key(expires_at=time.time() - 1)
    gw.world.publish()
    _wait_for_version(gw)
    error = assert_openai_error(
        gw.client.get("/v1/models", headers=auth(key)), 401, "invalid_api_key"
    )
    assert "expired" in error["message"]


def test_a_request_is_served_by_the_configuration_current_when_its_body_came(
    make_gateway,
) -> None:
    """The key is checked when the headers come; a slow body outlived the key's revocation
    and the tenant's move to other regions, served as if neither had happened."""
    gw, key = _ready(make_gateway)
    globex = gw.world.add_key(TENANT_B)  # regions: eu-west
    gw.world.publish()
    _wait_for_version(gw)
    service = gw.client.app.state.gateway
    checked = {k: service.authenticate(f"Bearer {k}") for k in (key, globex)}
    del gw.world.keys[key.split("_")[1]]  # revoked while its body was on its way
    gw.world.tenants[TENANT_B] = msgspec.structs.replace(
        gw.world.tenants[TENANT_B], regions=("us-east",)
    )
    gw.world.publish()
    _wait_for_version(gw)
    raw = json.dumps(CHAT).encode()

    async def handle(principal: object) -> object:
        return await service.handle("chat", raw, principal, "req-slow")

    with pytest.raises(Unauthenticated):
        gw.client.blocking_portal.call(handle, checked[key])
    reply = gw.client.blocking_portal.call(handle, checked[globex])
    assert reply.headers["x-trunkline-pool"] == "l40s-us"  # its regions now, not then


def _chat_scope(key: str) -> dict:  # type: ignore[type-arg]
    """A chat completion's ASGI scope, its body (1000 bytes) to come."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": None,
        "headers": [(b"authorization", f"Bearer {key}".encode()), (b"content-length", b"1000"),
                    (b"content-type", b"application/json")],
    }  # fmt: skip


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_reaches_no_engine(
    make_gateway,
) -> None:
    """A client trickling its body in held a connection, and its key's check, for ever."""
    gw, key = _ready(make_gateway, settings=GatewaySettings(body_timeout_s=0.05))
    sent: list[dict] = []  # type: ignore[type-arg]
    scope = _chat_scope(key)

    async def trickle() -> None:
        parts = iter([{"type": "http.request", "body": b'{"model": "ll', "more_body": True}])

        async def receive() -> dict:  # type: ignore[type-arg]
            part = next(parts, None)
            if part is None:
                await asyncio.Event().wait()  # the rest never comes
            return part  # type: ignore[return-value]

        async def send(message: dict) -> None:  # type: ignore[type-arg]
            sent.append(message)

        await gw.client.app(scope, receive, send)

    gw.client.blocking_portal.call(trickle)
    assert sent[0]["status"] == 408
    # RFC 9110: the rest of the body is not read, so the connection is closed, not kept
    # reading the client's trickle until the next head's timeout.
    assert (b"connection", b"close") in sent[0]["headers"]
    error = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["error"]
    assert error["code"] == "request_timeout" and gw.upstream == []


def test_a_client_leaving_before_its_body_is_whole_is_a_499_and_not_metered(
    make_gateway,
) -> None:
    """As a client gone before its answer: "the client left", not a 400 for a bad request."""
    gw, key = _ready(make_gateway)
    sent: list[dict] = []  # type: ignore[type-arg]

    async def leave() -> None:
        parts = iter([{"type": "http.request", "body": b'{"model": "ll', "more_body": True}])

        async def receive() -> dict:  # type: ignore[type-arg]
            return next(parts, {"type": "http.disconnect"})

        async def send(message: dict) -> None:  # type: ignore[type-arg]
            sent.append(message)

        await gw.client.app(_chat_scope(key), receive, send)

    gw.client.blocking_portal.call(leave)
    assert sent[0]["status"] == 499 and gw.upstream == []
    assert gw.drain_usage() == []  # nothing of it reached an engine: nothing to charge
    page = gw.client.get("/metrics").text
    assert 'trunkline_requests_total{route="/v1/chat/completions",status="499"} 1.0' in page
    assert 'status="400"' not in page
