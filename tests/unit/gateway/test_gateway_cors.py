"""Browser pages calling the gateway (an OpenAI SDK with its browser mode on, a chat page of
the tenant's own): allowed only from the origins configured, never with credentials, and a
gateway configured with none answers no CORS header at all, so browsers refuse the call."""

from __future__ import annotations

import pydantic
import pytest
from tests.unit.gateway.conftest import Harness
from tests.unit.gateway.test_gateway import CHAT, _ready, auth
from tests.unit.gateway.upstreams import chat_any

from trunkline.settings import GatewaySettings

PAGE = "https://chat.acme.example"


def _gateway(make_gateway, origins: list[str]) -> tuple[Harness, str]:  # type: ignore[no-untyped-def]
    settings = GatewaySettings(snapshot_poll_s=0.05, cors_origins=origins)
    return _ready(make_gateway, chat_any, settings=settings)


def _preflight(gw: Harness, origin: str) -> dict[str, str]:
    response = gw.client.options(
        "/v1/chat/completions",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, x-stainless-os",
        },
    )
    assert response.status_code in (200, 204), response.text
    return dict(response.headers)


def test_a_page_of_a_configured_origin_may_call_and_read_the_request_id(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw, key = _gateway(make_gateway, [PAGE])
    allowed = _preflight(gw, PAGE)
    assert allowed["access-control-allow-origin"] == PAGE
    assert "POST" in allowed["access-control-allow-methods"]
    assert "x-stainless-os" in allowed["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed
    response = gw.client.post(
        "/v1/chat/completions", json=CHAT, headers={**auth(key), "origin": PAGE}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == PAGE
    assert "x-request-id" in response.headers["access-control-expose-headers"]


def test_a_page_of_another_origin_gets_no_permission(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw, key = _gateway(make_gateway, [PAGE])
    other = "https://evil.example"
    assert "access-control-allow-origin" not in _preflight_any(gw, other)
    response = gw.client.post(
        "/v1/chat/completions", json=CHAT, headers={**auth(key), "origin": other}
    )
    assert "access-control-allow-origin" not in response.headers


def test_any_origin_when_configured_so_and_none_by_default(make_gateway) -> None:  # type: ignore[no-untyped-def]
    anyone, _key = _gateway(make_gateway, ["*"])
    assert _preflight(anyone, "https://anywhere.example")["access-control-allow-origin"] == "*"
    default, key = _ready(make_gateway)
    response = default.client.post(
        "/v1/chat/completions", json=CHAT, headers={**auth(key), "origin": PAGE}
    )
    assert response.status_code == 200
    assert not any(h.startswith("access-control-") for h in response.headers)


def test_options_answers_carry_a_request_id_as_every_other_answer(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """A preflight, and any OPTIONS Litestar answers itself, came without ``x-request-id``:
    nothing to quote when a browser's call failed at its preflight."""
    gw, _key = _gateway(make_gateway, [PAGE])
    plain, _ = _ready(make_gateway)
    answers = [
        gw.client.options(
            "/v1/chat/completions",
            headers={"origin": PAGE, "access-control-request-method": "POST"},
        ),
        gw.client.options("/v1/chat/completions"),
        plain.client.options("/v1/models", headers={"x-request-id": "mine-1"}),
        plain.client.options("/nope"),  # an error: its own id, once
    ]
    ids = [answer.headers.get_list("x-request-id") for answer in answers]
    assert all(len(found) == 1 and found[0].startswith("req-") for found in ids), ids
    assert len({found[0] for found in ids}) == len(ids)  # each its own, never the caller's
    assert answers[2].headers["allow"] == "GET, HEAD, OPTIONS"  # as a 405's Allow says


@pytest.mark.parametrize("origin", ["chat.acme.example", "https://chat.acme.example/app", ""])
def test_an_origin_that_is_not_one_is_refused_at_start(origin: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="not a web origin"):
        GatewaySettings(cors_origins=[origin])


def _preflight_any(gw: Harness, origin: str) -> dict[str, str]:
    response = gw.client.options(
        "/v1/chat/completions",
        headers={"origin": origin, "access-control-request-method": "POST"},
    )
    return dict(response.headers)
