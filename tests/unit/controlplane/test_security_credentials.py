"""The control plane takes one access token a request: two ``Authorization`` headers are
refused, not served as whichever came first."""

from __future__ import annotations

import asyncio

import httpx
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
