"""A request carries one credential: two ``Authorization`` headers (or, without one, two
``api-key`` headers) are refused, not served as whichever came first. A proxy in front that
checks one of them, or adds its own, must not decide whose key the gateway serves."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from tests.unit.gateway.conftest import TENANT_B
from tests.unit.gateway.test_gateway import _ready, assert_openai_error, auth

from trunkline.gateway.shutdown import cut_at_shutdown


def _get(app: object, path: str, headers: list[tuple[str, str]]) -> httpx.Response:
    """``GET path`` with ``headers`` sent as they are: the test client joins repeated headers
    into one, as a server never sees them."""

    async def sent() -> httpx.Response:
        transport = httpx.ASGITransport(app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(sent())


@pytest.mark.parametrize("header", ["Authorization", "api-key"])
def test_two_credentials_of_one_kind_are_refused_whatever_their_order(
    make_gateway, header: str
) -> None:
    gw, key = _ready(make_gateway)
    other = gw.world.add_key(TENANT_B)
    gw.world.publish()

    def sent(value: str) -> str:
        return f"Bearer {value}" if header == "Authorization" else value

    for first, second in ((key, "not-a-key"), ("not-a-key", key), (key, other), (key, key)):
        headers = [(header, sent(first)), (header, sent(second))]
        answer = _get(gw.client.app, "/v1/models", headers)
        assert_openai_error(answer, 401, "invalid_api_key")
        assert "one" in answer.json()["error"]["message"]
    assert _get(gw.client.app, "/v1/models", [(header, sent(key))]).is_success


def test_an_authorization_and_an_api_key_naming_two_keys_are_refused(make_gateway) -> None:
    """Both headers, each with its own key: the gateway served Authorization's, whichever key
    a proxy in front had checked or added as ``api-key``. The same key in both is served."""
    gw, key = _ready(make_gateway)
    other = gw.world.add_key(TENANT_B)
    gw.world.publish()

    for authorization, api_key in ((key, other), (other, key), (key, "not-a-key")):
        headers = [("Authorization", f"Bearer {authorization}"), ("api-key", api_key)]
        answer = _get(gw.client.app, "/v1/models", headers)
        assert_openai_error(answer, 401, "invalid_api_key")
        assert "one" in answer.json()["error"]["message"]
    same = [("Authorization", f"Bearer {key}"), ("api-key", key)]
    assert _get(gw.client.app, "/v1/models", same).is_success
    # an empty api-key names no key: a client's placeholder beside what a proxy adds
    for blank in ("", " "):
        beside = [("Authorization", f"Bearer {key}"), ("api-key", blank)]
        assert _get(gw.client.app, "/v1/models", beside).is_success


def test_a_key_pasted_into_the_url_is_not_echoed_in_the_404(make_gateway) -> None:
    """A base URL with the key in it (``…/v1/<key>``) reached no route, and the 404's message
    (``Unknown request URL: …``) wrote the path out, key and secret. Its public id stays."""
    gw, key = _ready(make_gateway)
    public, secret = key.split("_")[1:]
    for path in (f"/v1/{key}/chat/completions", f"/{key}"):
        answer = gw.client.get(path, headers=[("Authorization", f"Bearer {key}")])
        message = assert_openai_error(answer, 404, "unknown_url")["message"]
        assert f"tlk_{public}_" in message
        assert secret not in answer.text


def test_a_key_pasted_as_the_model_is_not_echoed_in_the_404(make_gateway) -> None:
    """The key sent as ``model`` (two settings swapped) came back whole in the answer's message
    (``The model '…' does not exist …``), as for any other name."""
    gw, key = _ready(make_gateway)
    secret = key.split("_")[2]
    body = {"model": key, "messages": [{"role": "user", "content": "hi"}]}
    answers = (
        gw.client.post("/v1/chat/completions", json=body, headers=auth(key)),
        gw.client.get(f"/v1/models/{key}", headers=auth(key)),
    )
    for answer in answers:
        assert_openai_error(answer, 404, "model_not_found")
        assert secret not in answer.text


def test_a_key_in_the_path_of_a_request_cut_at_shutdown_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The line saying a request was cut at shutdown wrote its path as sent: a key pasted as an
    Azure deployment name, its body still coming when the gateway stopped, went whole into the
    log."""
    key = "tlk_" + "a" * 12 + "_" + "S" * 40
    path = f"/openai/deployments/{key}/chat/completions"

    async def waiting(scope: object, receive: object, send: object) -> None:
        await asyncio.Event().wait()

    async def cut() -> list[dict[str, object]]:
        sent: list[dict[str, object]] = []

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "http", "path": path, "headers": []}
        task = asyncio.create_task(cut_at_shutdown(waiting)(scope, None, send))  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the request under way
        task.cancel()
        await task
        return sent

    with caplog.at_level(logging.WARNING):
        sent = asyncio.run(cut())
    assert sent[0]["status"] == 503
    [line] = [r for r in caplog.records if "cut" in r.getMessage()]
    assert "S" * 20 not in str(line.path)
    assert str(line.path).startswith("/openai/deployments/tlk_" + "a" * 12 + "_")
