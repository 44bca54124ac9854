"""Admins set quotas through the control-plane API; members read their limits and what is left;
every change reaches the gateways in the next snapshot."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from trunkline.billing.pricebook import TOKEN_CLASSES
from trunkline.billing.pricebook_store import load_price_book
from trunkline.quota.limits import Limits, price_key
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.store import ReserveRequest, Scope
from trunkline.quota.windows import system_clock
from trunkline.tenancy.manifests import apply_manifests
from unit.controlplane.cp_support import TENANTS_DIR, World, snapshot

T = "/api/v1/tenants"


def test_the_shipped_tiers_set_defaults_every_tenant_and_key_gets(world: World) -> None:
    gold = world.api("acme-dev").get("/api/v1/tiers/gold/quota")
    assert gold["tenant"]["requests_per_minute"] == 6000
    key = world.create_key("acme-dev", "acme", "demo")["key"]["key_id"]
    book = snapshot(world.runtime).quotas
    assert book.tenants[world.tenant("acme")].requests_per_minute == 6000
    assert book.keys[key] == Limits(
        requests_per_minute=1200, tokens_per_minute=400_000, concurrent_requests=128
    )
    assert book.tenants[world.tenant("initech")].cost_per_month == 100 * 10**9  # nano-USD
    assert world.tenant("acme") not in book.projects, "no project limits: nothing to count"


def test_cost_budgets_use_the_price_book_in_force(world: World) -> None:
    with world.runtime.session_factory() as session:
        version = load_price_book(session).at(datetime.now(UTC))
    model = "llama-3.1-8b-instruct"
    per_million = [version.token_price(model, "bronze", c) for c in TOKEN_CLASSES]
    price = snapshot(world.runtime).quotas.prices[price_key(model, "bronze")]
    assert [price.input, price.cached_input, price.output] == [
        int(p * 1_000_000) for p in per_million
    ]
    assert price.output > price.input > 0


def test_a_platform_admin_sets_tier_defaults_others_may_not(world: World) -> None:
    body = {"tenant": {"tokens_per_day": 1000}, "project": {"requests_per_minute": 7}}
    version = snapshot(world.runtime).version

    assert world.admin.put("/api/v1/tiers/silver/quota", body) == {
        "tenant": {"tokens_per_day": 1000},
        "project": {"requests_per_minute": 7},
        "key": {},
    }
    assert snapshot(world.runtime).version == version + 1
    assert snapshot(world.runtime).quotas.projects[world.tenant("globex")] == Limits(7)
    world.api("acme-admin").put("/api/v1/tiers/silver/quota", body, expect=403)
    world.admin.put("/api/v1/tiers/platinum/quota", body, expect=404)
    bad = world.admin.put("/api/v1/tiers/silver/quota", {"key": {"tokens_per_day": -1}}, 400)
    assert bad["errors"][0]["field"] == "key.tokens_per_day"


def test_tenant_overrides_apply_over_the_tier_and_members_read_them(world: World) -> None:
    acme = world.tenant("acme")
    body = {"tenant": {"tokens_per_minute": 5000, "concurrent_requests": None}}
    world.api("acme-admin").put(f"{T}/{acme}/quota", body, expect=403)
    world.admin.put(f"{T}/{acme}/quota", body)

    view = world.api("acme-dev").get(f"{T}/{acme}/quota")

    assert view["tier"] == "gold"
    assert view["overrides"]["tenant"] == body["tenant"]
    assert view["limits"]["tenant"] == {
        "requests_per_minute": 6000,
        "tokens_per_minute": 5000,
        "concurrent_requests": None,
        "tokens_per_day": None,
        "tokens_per_month": None,
        "cost_per_month": None,
    }
    assert view["usage"]["tokens_per_minute"] == {
        "limit": 5000,
        "used": 0,
        "remaining": 5000,
        "resets_at": view["usage"]["tokens_per_minute"]["resets_at"],
    }
    assert snapshot(world.runtime).quotas.tenants[acme].tokens_per_minute == 5000


def test_usage_shows_what_the_gateways_counted(world: World, store: InMemoryQuotaStore) -> None:
    acme = world.tenant("acme")
    key = world.create_key("acme-dev", "acme", "demo")["key"]
    limits = snapshot(world.runtime).quotas
    scopes = (
        Scope("key", key["key_id"], limits.keys[key["key_id"]].vector()),
        Scope("tenant", acme, limits.tenants[acme].vector()),
    )
    request = ReserveRequest("r1", acme, scopes, 700, 0, system_clock(), 60_000, 3_600_000)
    world.client.blocking_portal.call(store.reserve, request)

    view = world.api("acme-dev").get(f"{T}/{acme}/keys/{key['key_id']}/quota")

    assert view["usage"]["key"]["tokens_per_minute"]["used"] == 700
    assert view["usage"]["key"]["tokens_per_minute"]["remaining"] == 400_000 - 700
    assert view["usage"]["key"]["concurrent_requests"]["used"] == 1
    assert view["usage"]["key"]["concurrent_requests"]["resets_at"] is None
    assert view["usage"]["tenant"]["requests_per_minute"]["used"] == 1
    assert view["usage"]["project"]["requests_per_minute"]["limit"] is None


def test_what_is_left_of_a_cost_budget_reads_as_the_amount_not_a_float_residue(
    world: World, store: InMemoryQuotaStore
) -> None:
    """It read 0.29999999999999716 of 100 with 99.70 used: the limit and the use were each
    turned into floats before the subtraction."""
    acme = world.tenant("acme")
    world.admin.put(f"{T}/{acme}/quota", {"tenant": {"cost_per_month": 100}})
    budget = snapshot(world.runtime).quotas.tenants[acme].vector()
    used = 99_700_000_000  # 99.70 in billionths
    request = ReserveRequest(
        "r1", acme, (Scope("tenant", acme, budget),), 10, used, system_clock(), 60_000, 3_600_000
    )
    world.client.blocking_portal.call(store.reserve, request)

    cost = world.api("acme-dev").get(f"{T}/{acme}/quota")["usage"]["cost_per_month"]

    assert (cost["limit"], cost["used"], cost["remaining"]) == (100, 99.7, 0.3)


def test_tenant_admins_set_key_overrides_developers_read_their_own(world: World) -> None:
    acme = world.tenant("acme")
    mine = world.create_key("acme-dev", "acme", "demo")["key"]["key_id"]
    admins = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
    path = f"{T}/{acme}/keys/{mine}/quota"

    world.api("acme-dev").put(path, {"requests_per_minute": 1}, expect=403)
    set_ = world.api("acme-admin").put(path, {"requests_per_minute": 5, "tokens_per_day": 900})

    assert set_["limits"]["key"]["requests_per_minute"] == 5
    assert set_["limits"]["key"]["concurrent_requests"] == 128, "the rest from the tier"
    assert world.api("acme-dev").get(path)["overrides"] == {
        "requests_per_minute": 5,
        "tokens_per_day": 900,
    }
    world.api("acme-dev").get(f"{T}/{acme}/keys/{admins}/quota", expect=404)
    assert snapshot(world.runtime).quotas.keys[mine].tokens_per_day == 900

    rotated = world.api("acme-dev").post(f"{T}/{acme}/keys/{mine}/rotate")["key"]["key_id"]
    assert snapshot(world.runtime).quotas.keys[rotated].requests_per_minute == 5
    again = world.api("acme-dev").post(f"{T}/{acme}/keys/{rotated}/rotate")["key"]["key_id"]
    view = world.api("acme-dev").get(f"{T}/{acme}/keys/{again}/quota")
    assert view["overrides"] == {"requests_per_minute": 5, "tokens_per_day": 900}, "inherited"


def test_manifests_set_tenant_overrides_and_reapplying_changes_nothing(
    world: World, tmp_path: Path
) -> None:
    manifests = tmp_path / "tenants"
    shutil.copytree(TENANTS_DIR, manifests)
    examples = manifests / "examples.yaml"
    quota = "quota:\n  tenant: {tokens_per_day: 777, concurrent_requests: null}\n"
    examples.write_text(examples.read_text().replace("tier: silver\n", "tier: silver\n" + quota))

    first = apply_manifests(world.runtime.session_factory, manifests, publish=world.runtime.publish)
    again = apply_manifests(world.runtime.session_factory, manifests, publish=world.runtime.publish)

    assert "Tenant globex updated: quota overrides set" in first.lines()
    assert again.lines() == ["no changes"]
    globex = snapshot(world.runtime).quotas.tenants[world.tenant("globex")]
    assert (globex.tokens_per_day, globex.concurrent_requests) == (777, None)
    assert globex.requests_per_minute == 1200, "the rest from silver's defaults"


def test_a_pin_above_a_tenant_moved_down_gives_the_key_its_tenants_tier_limits(
    world: World,
) -> None:
    """The gateway serves such a key in its tenant's tier (``authn.key_tier``): its limits
    must come from that tier too, not from the higher tier it was once pinned to."""
    acme = world.tenant("acme")
    path = f"{T}/{acme}/keys"
    pinned = world.api("acme-admin").post(
        path, {"project_id": world.project("acme", "demo"), "name": "k", "tier": "silver"}
    )["key"]["key_id"]
    assert snapshot(world.runtime).quotas.keys[pinned].requests_per_minute == 300

    world.admin.patch(f"{T}/{acme}", {"tier": "bronze"})

    bronze = Limits(requests_per_minute=60, tokens_per_minute=30_000, concurrent_requests=8)
    assert snapshot(world.runtime).quotas.keys[pinned] == bronze
    view = world.api("acme-admin").get(f"{path}/{pinned}/quota")
    assert view["tier"] == "bronze"
    assert view["limits"]["key"]["requests_per_minute"] == 60
