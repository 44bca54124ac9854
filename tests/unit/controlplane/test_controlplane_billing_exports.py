"""Billing exports over HTTP: what a finance tool reads in the response head."""

from __future__ import annotations

import pytest

from unit.controlplane.cp_support import World


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [
        ("focus-csv", "text/csv; charset=utf-8"),
        ("invoice", "text/plain; charset=utf-8"),
        ("focus-parquet", "application/vnd.apache.parquet"),
    ],
)
def test_an_export_states_its_media_type_once(world: World, fmt: str, media_type: str) -> None:
    # Not "text/csv; charset=utf-8; charset=utf-8": a parameter given twice is an error
    # (RFC 6838, 4.3) that strict clients refuse.
    response = world.client.get(
        f"/api/v1/tenants/{world.tenant('acme')}/billing/exports/2026-11",
        params={"format": fmt},
        headers=world.api("acme-admin").headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
