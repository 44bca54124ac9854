"""The control plane takes one access token a request: two ``Authorization`` headers are
refused, not served as whichever came first."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from cp_support import World


def _get(app: object, path: str, headers: list[tuple[str, str]]) -> httpx.Response:
    """``GET path`` with ``headers`` sent as they are (the test client joins repeated ones)."""

    async def sent() -> httpx.Response:
        transport = httpx.ASGITransport(app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(sent())


def test_two_authorization_headers_are_refused(world: World) -> None:
    root, developer = world.tokens["root"], world.tokens["acme-dev"]
    for first, second in ((developer, root), (root, developer), (root, "nothing")):
        headers = [("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")]
        response = _get(world.client.app, "/api/v1/tenants", headers)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "one Authorization header" in response.json()["detail"]
    one = [("Authorization", f"Bearer {root}")]
    assert _get(world.client.app, "/api/v1/tenants", one).status_code == 200


def test_a_token_pasted_where_a_name_goes_is_not_echoed_in_the_problem(world: World) -> None:
    """A tier's or an alias's name is repeated in its 404 (``tier '…' not found``): an access
    token pasted there came back whole in ``detail`` and in ``errors``."""
    token = world.tokens["root"]
    for path in (f"/api/v1/tiers/{token}", f"/api/v1/catalog/aliases/{token}"):
        response = world.client.get(path, headers=world.admin.headers)
        assert response.status_code == 404, response.text
        assert token.split("_")[2] not in response.text
        assert f"tlu_{token.split('_')[1]}_" in response.json()["detail"]  # the id still names it


def test_a_token_pasted_twice_or_cut_short_is_not_echoed_in_the_problem_nor_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a token standing alone, whole, had its secret cut: pasted twice, with a character
    more, or with its last one left behind, it came back in the problem's detail and instance
    and in the access log, all of it or all but one character. A name that merely looks like
    one (``tlk_``, twelve letters, ``_``) is shown as it is."""
    token = world.tokens["root"]
    public, secret = token.split("_")[1:]
    caplog.set_level(logging.INFO, logger="trunkline.controlplane")
    for pasted in (token + token, token + "x", token[:-1]):
        response = world.client.get(f"/api/v1/tiers/{pasted}", headers=world.admin.headers)
        assert response.status_code == 404, response.text
        assert secret[:-1] not in response.text
        assert f"tlu_{public}_" in response.json()["detail"]  # the id still names it
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"tlu_{public}_" in logged and secret[:-1] not in logged
    ordinary = "tlk_experiment12_v2"
    response = world.client.get(f"/api/v1/tiers/{ordinary}", headers=world.admin.headers)
    assert response.status_code == 404 and ordinary in response.json()["detail"]
