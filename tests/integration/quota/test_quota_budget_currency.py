"""A price book in a new currency finds every cost budget set (tier, tenant and key documents)
on SQLite and PostgreSQL alike, and is refused while any is, unless kept on purpose."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.pricebook import BUNDLED, PriceBook, load_price_book_file
from trunkline.billing.pricebook_store import apply_price_book
from trunkline.errors import Conflict, InvalidRequest
from trunkline.quota.repository import QuotaRepository
from trunkline.quota.schemas import QuotaLimits, ScopeLimits
from trunkline.quota.service import set_tier_quota
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


def _impatient(world: World) -> sessionmaker[Session]:
    """Sessions of another process that waits a moment at most for a lock."""
    url = world.runtime.session_factory.kw["bind"].url
    if url.get_backend_name() == "sqlite":
        return sessionmaker(create_engine(url, connect_args={"timeout": 0.2}))
    engine = create_engine(url)
    event.listen(engine, "connect", _lock_timeout)
    return sessionmaker(engine)


def _lock_timeout(connection: Any, _record: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
    connection.commit()


def test_a_budget_set_while_a_currency_change_commits_waits_for_it(world: World) -> None:
    """Each checked against what the other had not committed: the budget saw dollars, the
    book saw no budget, and both committed, 100 dollars read as 100 euros."""
    world.admin.put("/api/v1/tiers/bronze/quota", {"tenant": {"cost_per_month": None}})
    bundled = load_price_book_file(BUNDLED)
    euros = PriceBook([msgspec.structs.replace(v, currency="EUR") for v in bundled.versions])
    dollars = QuotaLimits(tenant=ScopeLimits(cost_per_month_usd=100))
    other = _impatient(world)
    with world.runtime.session_factory() as changing, changing.begin():
        assert apply_price_book(changing, euros) == [1]  # not committed yet
        with pytest.raises(OperationalError), other() as session, session.begin():
            set_tier_quota(session, "gold", dollars)
    with pytest.raises(InvalidRequest, match="bills in EUR"), other() as session:
        set_tier_quota(session, "gold", dollars)
    with world.runtime.session_factory() as session:
        assert QuotaRepository(session).cost_budgets() == []
    other.kw["bind"].dispose()
