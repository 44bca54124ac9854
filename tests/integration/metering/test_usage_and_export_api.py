"""The usage API and billing exports over HTTP, on SQLite and PostgreSQL: a tenant sees its
own usage and cost, a tenant admin exports only their own tenant, nothing of another tenant
leaks (its ids read exactly like made-up ones)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from trunkline.billing import invoice, statements
from trunkline.kit.db import transaction
from unit.billing.billing_support import NOV, whole_invoices
from unit.controlplane.cp_support import World, random_id
from unit.metering.usage_support import LLAMA, Account, at, event, ingest

T = "/api/v1/tenants"


def account(world: World, slug: str, project: str, key_id: str, tier: str) -> Account:
    return Account(world.tenant(slug), world.project(slug, project), tier, key_id)


@pytest.fixture
def usage(world: World) -> dict[str, str]:
    """acme: two keys (its developer's and its admin's); globex: one. Returns the key ids."""
    keys = {
        "acme-dev": world.create_key("acme-dev", "acme", "demo")["key"]["key_id"],
        "acme-admin": world.create_key("acme-admin", "acme", "demo")["key"]["key_id"],
        "globex": world.create_key("globex-admin", "globex", "support-bot")["key"]["key_id"],
    }
    dev = account(world, "acme", "demo", keys["acme-dev"], "gold")
    admin = account(world, "acme", "demo", keys["acme-admin"], "gold")
    globex = account(world, "globex", "support-bot", keys["globex"], "silver")
    ingest(
        world.runtime.session_factory,
        [
            event(dev, when=at(3), prompt=1_000_000, cached=0, completion=0),
            event(dev, when=at(3), status=502, prompt=50, completion=0),
            event(admin, when=at(4), prompt=0, cached=0, completion=1_000_000),
            event(admin, when=at(4), prompt=10, completion=1, model="bge-small-en"),
            event(globex, when=at(5), prompt=7, completion=7),
        ],
    )
    return keys


def test_a_tenant_sees_its_usage_and_cost_by_model_key_and_day(
    world: World, usage: dict[str, str]
) -> None:
    acme = world.tenant("acme")
    api = world.api("acme-admin")
    by_model = api.get(f"{T}/{acme}/usage", params={"period": "2026-11", "group_by": "model"})
    rows = {r["group"]: r for r in by_model["rows"]}
    assert set(rows) == {LLAMA, "bge-small-en"}
    llama = rows[LLAMA]
    assert (llama["requests"], llama["failed_requests"]) == (3, 1)
    assert llama["prompt_tokens"] == 1_000_050  # the failed request is metered...
    # ...but not billed: 1M input at 0.30 + 1M output at 0.90 (gold = 1.5 x list)
    assert Decimal(llama["cost"]) == Decimal("1.2")
    assert by_model["currency"] == "USD" and by_model["total"]["requests"] == 4
    # 10 embedding tokens at $0.02 per million, gold 1.5 x: in plain notation, not 3.0E-7.
    tiny = rows["bge-small-en"]["cost"]
    assert Decimal(tiny) == Decimal("0.0000003") and tiny.startswith("0.0000003")
    assert all(
        "E" not in r[k] for r in [*rows.values(), by_model["total"]] for k in ("cost", "list_cost")
    )

    by_key = api.get(f"{T}/{acme}/usage", params={"period": "2026-11", "group_by": "key"})
    assert {r["group"] for r in by_key["rows"]} == {usage["acme-dev"], usage["acme-admin"]}
    by_day = api.get(f"{T}/{acme}/usage", params={"period": "2026-11", "group_by": "day"})
    assert [r["group"] for r in by_day["rows"]] == ["2026-11-03", "2026-11-04"]
    by_project = api.get(f"{T}/{acme}/usage", params={"period": "2026-11", "group_by": "project"})
    assert [r["label"] for r in by_project["rows"]] == ["demo"]
    filtered = api.get(
        f"{T}/{acme}/usage", params={"period": "2026-11", "key_id": usage["acme-dev"]}
    )
    assert filtered["total"]["requests"] == 2
    assert api.get(f"{T}/{acme}/usage", params={"period": "2026-10"})["rows"] == []


def test_a_developer_sees_the_usage_of_their_own_keys(world: World, usage: dict[str, str]) -> None:
    acme = world.tenant("acme")
    mine = world.api("acme-dev").get(
        f"{T}/{acme}/usage", params={"period": "2026-11", "group_by": "key"}
    )
    assert [r["group"] for r in mine["rows"]] == [usage["acme-dev"]]


def test_a_tenant_admin_exports_their_own_tenant(world: World, usage: dict[str, str]) -> None:
    acme = world.tenant("acme")
    api = world.api("acme-admin")
    response = api.client.get(
        f"{T}/{acme}/billing/exports/2026-11", params={"format": "focus-csv"}, headers=api.headers
    )
    assert response.status_code == 200
    assert response.headers["x-trunkline-billing-final"] == "false"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["BillingAccountId"] for r in rows} == {acme}
    parquet = api.client.get(
        f"{T}/{acme}/billing/exports/2026-11",
        params={"format": "focus-parquet"},
        headers=api.headers,
    )
    assert pq.read_table(io.BytesIO(parquet.content)).num_rows == len(rows)
    invoice = api.client.get(
        f"{T}/{acme}/billing/exports/2026-11", params={"format": "invoice"}, headers=api.headers
    )
    assert "Acme Corporation" in invoice.text and "Globex" not in invoice.text


def test_finance_exports_every_tenant(world: World, usage: dict[str, str]) -> None:
    response = world.admin.client.get(
        "/api/v1/billing/exports/2026-11",
        params={"format": "focus-csv"},
        headers=world.admin.headers,
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["BillingAccountId"] for r in rows} == {world.tenant("acme"), world.tenant("globex")}


def test_finance_gets_every_tenants_invoice_read_a_tenant_at_a_time_as_made_whole(
    world: World, usage: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statements, "ROWS_PER_STATEMENT", 1)  # a group per tenant
    monkeypatch.setattr(invoice, "PIECE_CHARS", 1)  # sent an invoice at a time
    response = world.admin.client.get(
        "/api/v1/billing/exports/2026-11", params={"format": "invoice"}, headers=world.admin.headers
    )
    assert response.status_code == 200
    with transaction(world.runtime.session_factory) as session:
        whole = whole_invoices(session, NOV)
    assert response.text == whole and whole.count("TOTAL DUE") == 2


def answer(world: World, who: str, path: str, params: dict[str, str]) -> tuple[int, str]:
    response = world.client.get(path, params=params, headers=world.api(who).headers)
    body = response.json() if response.headers["content-type"].startswith("application/") else {}
    return response.status_code, body.get("code", "") if isinstance(body, dict) else ""


@pytest.mark.parametrize("who", ["acme-admin", "acme-dev"])
def test_acme_cannot_see_globex_usage_or_exports(
    world: World, usage: dict[str, str], who: str
) -> None:
    globex, made_up = world.tenant("globex"), random_id()
    period = {"period": "2026-11"}
    for path, params in [
        (f"{T}/{{}}/usage", period),
        (f"{T}/{{}}/usage", {**period, "group_by": "key"}),
        (f"{T}/{{}}/billing/exports/2026-11", {"format": "focus-csv"}),
        (f"{T}/{{}}/billing/exports/2026-11", {"format": "invoice"}),
    ]:
        got = answer(world, who, path.format(globex), params)
        assert got == (404, "not_found"), (path, got)
        assert got == answer(world, who, path.format(made_up), params)
    assert answer(world, who, "/api/v1/billing/exports/2026-11", {}) == (403, "forbidden")


def test_a_developer_cannot_export_even_their_own_tenant(
    world: World, usage: dict[str, str]
) -> None:
    acme = world.tenant("acme")
    got = answer(world, "acme-dev", f"{T}/{acme}/billing/exports/2026-11", {})
    assert got == (403, "forbidden")


def test_a_bad_period_or_format_is_a_clear_error(world: World, usage: dict[str, str]) -> None:
    acme = world.tenant("acme")
    api = world.api("acme-admin")
    api.get(f"{T}/{acme}/usage", expect=400, params={"period": "November"})
    api.get(f"{T}/{acme}/billing/exports/2026-11", expect=400, params={"format": "xlsx"})
