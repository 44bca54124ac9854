"""Billing exports over HTTP: what a finance tool reads in the response head, and how the
invoice of every tenant, sent as it is made, fails before its first byte and after it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from litestar.exceptions import LitestarException

from trunkline.billing import invoice
from trunkline.billing.charges import ChargeLine
from trunkline.billing.exports import export_period
from trunkline.billing.periods import parse_period
from trunkline.kit.db import transaction
from unit.controlplane.cp_support import World
from unit.metering.usage_support import Account, at, event, ingest, ingest_unchecked

EVERY_TENANT = "/api/v1/billing/exports"


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


def _usage(world: World, write: Callable[..., object] = ingest, **when: int) -> None:
    """An event of acme's and one of globex's, on the 3rd of November 2026 unless ``when``,
    ingested (or written by ``write``)."""
    accounts = [
        Account(world.tenant("acme"), world.project("acme", "demo"), "gold", "acmekey00000"),
        Account(world.tenant("globex"), world.project("globex", "support-bot"), "silver",
                "globexkey000"),
    ]  # fmt: skip
    write(world.runtime.session_factory, [event(a, when=at(3, **when)) for a in accounts])


def _invoices(world: World, period: str) -> tuple[int, str, str]:
    answer = world.client.get(
        f"{EVERY_TENANT}/{period}", params={"format": "invoice"}, headers=world.admin.headers
    )
    return answer.status_code, answer.headers["content-type"], answer.text


def test_finance_gets_every_tenants_invoice_as_the_cli_writes_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _usage(world)
    monkeypatch.setattr(invoice, "PIECE_CHARS", 1)  # sent an invoice at a time
    status, media_type, text = _invoices(world, "2026-11")
    assert (status, media_type) == (200, "text/plain; charset=utf-8")
    with transaction(world.runtime.session_factory) as session:
        written = export_period(session, parse_period("2026-11"), "invoice").body.decode()
    assert text == written and text.count("TOTAL DUE") == 2


def test_an_invoice_of_every_tenant_that_cannot_be_priced_is_a_problem_not_a_cut_file(
    world: World,
) -> None:
    """Usage before the first price version: found before the 200 is sent."""
    _usage(world, ingest_unchecked, month=12, year=2025)
    status, media_type, text = _invoices(world, "2025-12")
    assert (status, media_type) == (500, "application/problem+json"), text
    assert '"code":"configuration_error"' in text.replace(" ", "")


def test_an_invoice_of_every_tenant_failing_after_its_first_byte_is_cut_not_ended(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """acme's invoice has gone when globex's fails: the response must not end as if whole (the
    client would keep a file of acme's invoice alone), but fail."""
    _usage(world)
    monkeypatch.setattr(invoice, "PIECE_CHARS", 1)
    made = invoice.render_invoice

    def failing(lines: list[ChargeLine], *args: object, **kwargs: object) -> str:
        if lines[0].tenant_slug == "globex":
            raise ValueError("an invoice that cannot be made")
        return made(lines, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(invoice, "render_invoice", failing)
    with pytest.raises(LitestarException, match="after response started"):
        _invoices(world, "2026-11")
