"""``/metrics`` and ``/health``'s details name every pool and endpoint and count each tier's
traffic: off loopback they go to the scraper holding the gateway's scrape token, never to a
caller holding nothing or a tenant's key; a probe still reads the readiness status."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from pydantic import SecretStr
from tests.unit.gateway.conftest import Harness
from tests.unit.gateway.test_gateway import CHAT, assert_openai_error, auth
from tests.unit.gateway.upstreams import chat_any

from trunkline.settings import GatewaySettings
from trunkline.snapshot import Snapshot

TOKEN = "scrape-token-0f-en0ugh-length-for-tests"
SCRAPER = {"authorization": f"Bearer {TOKEN}"}
SENSITIVE = ("h100-eu", "l40s-us", "e1", "e2", "gold", "trunkline_")
"""Pool, endpoint and tier names, and any metric."""


def _gateway(make_gateway: Callable[..., Harness], token: str | None) -> tuple[Harness, str]:
    """A gateway bound to a network address (a pod's), one request served through it."""
    settings = GatewaySettings(
        host="192.0.2.10",
        snapshot_poll_s=0.05,
        metrics_token=None if token is None else SecretStr(token),
    )
    gw = make_gateway(chat_any, settings=settings)
    key = gw.world.add_key()
    gw.world.publish()
    gw.client.blocking_portal.call(gw.client.app.state.gateway.holder.refresh)
    assert gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key)).status_code == 200
    return gw, key


def _shows_nothing(text: str) -> None:
    for name in SENSITIVE:
        assert name not in text, name


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-token"},
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": TOKEN},
        {"authorization": f"Bearer {TOKEN[:-1]}"},
    ],
    ids=["none", "wrong", "basic", "no-scheme", "prefix"],
)
def test_metrics_refuse_a_caller_without_the_scrape_token(
    make_gateway: Callable[..., Harness], headers: dict[str, str]
) -> None:
    gw, _key = _gateway(make_gateway, TOKEN)
    refused = gw.client.get("/metrics", headers=headers)
    error = assert_openai_error(refused, 401, "invalid_scrape_token")
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "TRUNKLINE_GATEWAY__METRICS_TOKEN" in error["message"]
    assert TOKEN not in refused.text
    _shows_nothing(refused.text)


def test_a_tenants_api_key_does_not_read_the_metrics(make_gateway: Callable[..., Harness]) -> None:
    gw, key = _gateway(make_gateway, TOKEN)
    refused = gw.client.get("/metrics", headers=auth(key))
    assert_openai_error(refused, 401, "invalid_scrape_token")
    _shows_nothing(refused.text)


def test_the_scraper_with_the_token_reads_every_metric(
    make_gateway: Callable[..., Harness],
) -> None:
    gw, _key = _gateway(make_gateway, TOKEN)
    page = gw.client.get("/metrics", headers=SCRAPER)
    assert page.status_code == 200
    assert 'trunkline_requests_total{route="/v1/chat/completions",status="200"} 1.0' in page.text
    assert "trunkline_snapshot_version" in page.text


def test_health_tells_a_probe_its_status_and_the_scraper_everything(
    make_gateway: Callable[..., Harness],
) -> None:
    gw, _key = _gateway(make_gateway, TOKEN)
    probe = gw.client.get("/health")
    assert (probe.status_code, probe.json()) == (200, {"status": "ok"})
    for header in ({"authorization": "Bearer wrong-token"}, auth(_key)):
        assert gw.client.get("/health", headers=header).json() == {"status": "ok"}
    assert gw.client.head("/health").status_code == 200
    detailed = gw.client.get("/health", headers=SCRAPER)
    assert detailed.status_code == 200
    assert detailed.json()["status"] == "ok"
    assert {"snapshot_version", "engines", "quota_store"} <= set(detailed.json())


def test_off_loopback_without_a_token_the_details_are_served_to_nobody(
    make_gateway: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    """Development settings on a public address (no token set): closed, saying what to set,
    at start too."""
    with caplog.at_level(logging.WARNING, "trunkline.kit.scrape_access"):
        gw, _key = _gateway(make_gateway, None)
    assert "TRUNKLINE_GATEWAY__METRICS_TOKEN is unset" in caplog.text
    refused = gw.client.get("/metrics", headers={"authorization": "Bearer anything"})
    error = assert_openai_error(refused, 401, "invalid_scrape_token")
    assert "set TRUNKLINE_GATEWAY__METRICS_TOKEN" in error["message"]
    _shows_nothing(refused.text)
    assert gw.client.get("/health").json() == {"status": "ok"}


def test_on_loopback_without_a_token_the_metrics_need_nothing(
    make_gateway: Callable[..., Harness],
) -> None:
    """``trunkline up``: only this machine reaches it, so it works without setup."""
    gw = make_gateway(chat_any)  # host 127.0.0.1, no token
    assert gw.client.get("/metrics").status_code == 200
    assert "engines" in gw.client.get("/health").json()


def test_two_authorization_headers_are_refused(make_gateway: Callable[..., Harness]) -> None:
    """A proxy adding its own header must not decide which one is checked."""
    gw, _key = _gateway(make_gateway, TOKEN)
    headers = [("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer other")]
    assert_openai_error(gw.client.get("/metrics", headers=headers), 401, "invalid_scrape_token")


def test_a_probe_of_a_gateway_without_configuration_gets_503_starting_alone(
    make_gateway: Callable[..., Harness],
) -> None:
    gw, _key = _gateway(make_gateway, TOKEN)
    holder = gw.client.app.state.gateway.holder
    gw.client.blocking_portal.call(holder.close)  # no polling: it would load the snapshot again
    holder.current = Snapshot.empty()
    probe = gw.client.get("/health")
    assert (probe.status_code, probe.json()) == (503, {"status": "starting"})
    detailed = gw.client.get("/health", headers=SCRAPER)
    assert (detailed.status_code, detailed.json()["snapshot_version"]) == (503, 0)


@pytest.mark.parametrize("sent", ["Bearer ", "Bearer", "bearer   "])
def test_an_empty_scrape_token_opens_nothing(
    make_gateway: Callable[..., Harness], sent: str
) -> None:
    """``TRUNKLINE_GATEWAY__METRICS_TOKEN=`` (set empty, as a compose file leaves a variable it
    does not fill) is no token: off loopback the details go to nobody, not to any caller
    sending an empty bearer."""
    gw, _key = _gateway(make_gateway, "")
    refused = gw.client.get("/metrics", headers={"authorization": sent})
    assert_openai_error(refused, 401, "invalid_scrape_token")
    _shows_nothing(refused.text)
    assert gw.client.get("/health", headers={"authorization": sent}).json() == {"status": "ok"}


def test_a_scrape_token_set_with_a_trailing_newline_is_the_token(
    make_gateway: Callable[..., Harness],
) -> None:
    """A Kubernetes Secret made from a file (``kubectl create secret --from-file``) ends the
    variable with the file's newline; Prometheus sends its ``credentials_file`` trimmed."""
    gw, _key = _gateway(make_gateway, f"{TOKEN}\n")
    assert gw.client.get("/metrics", headers=SCRAPER).status_code == 200
    assert "engines" in gw.client.get("/health", headers=SCRAPER).json()
