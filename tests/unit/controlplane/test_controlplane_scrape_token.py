"""The control plane's ``/metrics`` and ``/healthz``'s snapshot report, as the gateway's: off
loopback only the scraper holding its scrape token reads them (a user's token, a platform
admin's included, does not); a probe still reads the readiness status."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cp_support import PLATFORM_ADMIN, problem_of, token_for
from litestar.testing import TestClient
from pydantic import SecretStr

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.runtime import Runtime

TOKEN = "controlplane-scrape-token-0f-en0ugh-length"
SCRAPER = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def public(runtime: Runtime) -> Iterator[TestClient[Any]]:
    """A control plane bound to a network address, with a scrape token."""
    settings = runtime.settings.controlplane
    settings.host, settings.metrics_token = "192.0.2.10", SecretStr(TOKEN)
    with TestClient(create_controlplane_app(runtime)) as client:
        yield client


@pytest.mark.parametrize("who", ["nobody", "wrong", "admin"])
def test_metrics_are_refused_without_the_scrape_token(
    public: TestClient[Any], runtime: Runtime, who: str
) -> None:
    headers = {
        "nobody": {},
        "wrong": {"authorization": "Bearer wrong-token"},
        "admin": {"authorization": f"Bearer {token_for(runtime, PLATFORM_ADMIN)}"},
    }[who]
    refused = public.get("/metrics", headers=headers)
    problem = problem_of(refused, 401)
    assert problem["code"] == "unauthenticated"
    assert "TRUNKLINE_CONTROLPLANE__METRICS_TOKEN" in problem["detail"]
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "trunkline_" not in refused.text


def test_the_scraper_reads_the_metrics(public: TestClient[Any]) -> None:
    public.get("/livez")
    page = public.get("/metrics", headers=SCRAPER)
    assert page.status_code == 200
    assert "trunkline_controlplane_requests_total" in page.text


def test_healthz_tells_a_probe_its_status_and_the_scraper_the_snapshot(
    public: TestClient[Any],
) -> None:
    probe = public.get("/healthz")
    assert (probe.status_code, probe.json()) == (200, {"status": "ok"})
    detailed = public.get("/healthz", headers=SCRAPER).json()
    assert detailed["status"] == "ok"
    assert "snapshot" in detailed


def test_off_loopback_without_a_token_the_metrics_are_served_to_nobody(
    runtime: Runtime,
) -> None:
    runtime.settings.controlplane.host = "192.0.2.10"
    with TestClient(create_controlplane_app(runtime)) as client:
        problem = problem_of(client.get("/metrics"), 401)
        assert "set TRUNKLINE_CONTROLPLANE__METRICS_TOKEN" in problem["detail"]
        assert client.get("/healthz").json() == {"status": "ok"}


def test_on_loopback_without_a_token_the_metrics_need_nothing(client: TestClient[Any]) -> None:
    """``trunkline up``: only this machine reaches it."""
    assert client.get("/metrics").status_code == 200
    assert "snapshot" in client.get("/healthz").json()


def test_an_empty_scrape_token_opens_nothing(runtime: Runtime) -> None:
    """``TRUNKLINE_CONTROLPLANE__METRICS_TOKEN=`` set empty is no token: off loopback nobody
    reads the metrics or the snapshot report, a caller sending an empty bearer included."""
    settings = runtime.settings.controlplane
    settings.host, settings.metrics_token = "192.0.2.10", SecretStr("")
    with TestClient(create_controlplane_app(runtime)) as client:
        for sent in ("Bearer ", "Bearer"):
            refused = client.get("/metrics", headers={"authorization": sent})
            assert problem_of(refused, 401)["code"] == "unauthenticated"
            assert "trunkline_" not in refused.text
            health = client.get("/healthz", headers={"authorization": sent})
            assert health.json() == {"status": "ok"}
