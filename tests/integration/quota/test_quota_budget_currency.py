"""A price book in a new currency finds every cost budget set (tier, tenant and key documents)
on SQLite and PostgreSQL alike, and is refused while any is, unless kept on purpose."""

from __future__ import annotations

import msgspec
import pytest

from trunkline.billing.pricebook import BUNDLED, PriceBook, load_price_book_file
from trunkline.billing.service import apply_price_book
from trunkline.errors import Conflict
from unit.controlplane.cp_support import World

T = "/api/v1/tenants"


def test_a_new_currency_names_every_budget_it_would_re_read(world: World) -> None:
    acme = world.tenant("acme")
    key = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
    world.admin.put(f"{T}/{acme}/quota", {"project": {"cost_per_month_usd": 20}})
    world.api("acme-admin").put(f"{T}/{acme}/keys/{key}/quota", {"cost_per_month": 2.5})
    bundled = load_price_book_file(BUNDLED)
    pounds = PriceBook([msgspec.structs.replace(v, currency="GBP") for v in bundled.versions])

    sessions = world.runtime.session_factory
    with pytest.raises(Conflict) as refused, sessions() as session, session.begin():
        apply_price_book(session, pounds)
    for budget in ("tier bronze, tenant scope: 100", "tenant acme, project scope: 20"):
        assert budget in refused.value.message
    assert f"key {key}: 2.5" in refused.value.message

    with world.runtime.session_factory() as session, session.begin():
        assert apply_price_book(session, pounds, keep_budget_amounts=True) == [1]
    view = world.api("acme-admin").get(f"{T}/{acme}/keys/{key}/quota")
    assert (view["currency"], view["overrides"]) == ("GBP", {"cost_per_month": 2.5})
