"""Tiers, tenants, members and projects: happy paths and the role each one needs."""

from __future__ import annotations

from cp_support import World, random_id, snapshot

TIER = {"name": "platinum", "priority": 200, "ttft_slo_ms": 250, "itl_slo_ms": 25}


def test_every_authenticated_caller_reads_tiers_highest_priority_first(world: World) -> None:
    tiers = world.api("acme-dev").get("/api/v1/tiers")

    assert [t["name"] for t in tiers] == ["gold", "silver", "bronze"]
    assert world.api("outsider").get("/api/v1/tiers/gold")["ttft_slo_ms"] == 500
    assert world.api(None).get("/api/v1/tiers", expect=401)["code"] == "unauthenticated"


def test_only_a_platform_admin_writes_tiers_and_the_gateway_learns_them(world: World) -> None:
    for who in ("acme-admin", "acme-dev", "outsider"):
        assert world.api(who).post("/api/v1/tiers", TIER, expect=403)["code"] == "forbidden"
        world.api(who).patch("/api/v1/tiers/gold", {"priority": 1}, expect=403)

    created = world.admin.post("/api/v1/tiers", TIER)
    assert created["name"] == "platinum"
    assert snapshot(world.runtime).tiers["platinum"].ttft_slo_ms == 250

    updated = world.admin.patch("/api/v1/tiers/platinum", {"itl_slo_ms": None})
    assert updated["itl_slo_ms"] is None
    assert snapshot(world.runtime).tiers["platinum"].itl_slo_ms is None
    world.admin.post("/api/v1/tiers", TIER, expect=409)
    world.admin.get("/api/v1/tiers/missing", expect=404)


def test_a_platform_admin_creates_and_updates_tenants(world: World) -> None:
    body = {"slug": "hooli", "name": "Hooli", "tier": "silver", "regions": ["us-east"]}
    tenant = world.admin.post("/api/v1/tenants", body)

    assert tenant["tier"] == "silver"
    assert snapshot(world.runtime).tenants[tenant["id"]].regions == ("us-east",)
    updated = world.admin.patch(f"/api/v1/tenants/{tenant['id']}", {"tier": "gold", "regions": []})
    assert (updated["tier"], updated["regions"]) == ("gold", [])
    assert snapshot(world.runtime).tenants[tenant["id"]].tier == "gold"

    world.admin.post("/api/v1/tenants", body, expect=409)
    bad_tier = world.admin.post(
        "/api/v1/tenants", {**body, "slug": "x", "tier": "nope"}, expect=400
    )
    assert bad_tier["errors"][0]["field"] == "tier"
    twice = {**body, "slug": "x", "regions": ["us-east", "eu-west", "us-east"]}
    assert world.admin.post("/api/v1/tenants", twice, 400)["errors"][0]["field"] == "regions[2]"
    path = f"/api/v1/tenants/{tenant['id']}"
    assert world.admin.patch(path, {"regions": ["eu-west"] * 2}, 400)["detail"] == (
        "region 'eu-west' listed twice"
    )
    assert world.admin.get(path)["regions"] == []
    world.api("acme-admin").post("/api/v1/tenants", {**body, "slug": "y"}, expect=403)
    world.api("acme-admin").patch(f"/api/v1/tenants/{world.tenant('acme')}", {"name": "A"}, 403)


def test_tenant_list_shows_all_to_the_platform_admin_and_own_tenants_to_members(
    world: World,
) -> None:
    assert {t["slug"] for t in world.admin.get("/api/v1/tenants")} == {"acme", "globex", "initech"}
    assert [t["slug"] for t in world.api("acme-dev").get("/api/v1/tenants")] == ["acme"]
    assert world.api("outsider").get("/api/v1/tenants") == []
    acme = world.api("acme-dev").get(f"/api/v1/tenants/{world.tenant('acme')}")
    assert (acme["slug"], acme["tier"]) == ("acme", "gold")


def test_a_tenant_admin_manages_members(world: World) -> None:
    acme = world.tenant("acme")
    admin = world.api("acme-admin")

    added = admin.post(
        f"/api/v1/tenants/{acme}/members", {"email": "New@Acme.example", "role": "developer"}
    )
    assert added["email"] == "new@acme.example"
    admin.post(
        f"/api/v1/tenants/{acme}/members",
        {"email": "new@acme.example", "role": "developer"},
        expect=409,
    )

    promoted = admin.patch(
        f"/api/v1/tenants/{acme}/members/{added['user_id']}", {"role": "tenant_admin"}
    )
    assert promoted["role"] == "tenant_admin"
    admin.delete(f"/api/v1/tenants/{acme}/members/{added['user_id']}")
    emails = [m["email"] for m in admin.get(f"/api/v1/tenants/{acme}/members")]
    assert emails == ["admin@acme.example", "dev@acme.example"]
    admin.delete(f"/api/v1/tenants/{acme}/members/{random_id()}", expect=404)


def test_adding_an_existing_user_leaves_their_name_alone(world: World) -> None:
    """The name is the user's, shown by every tenant they belong to: another tenant's admin
    adding them must not set it."""
    acme, globex = world.tenant("acme"), world.tenant("globex")
    added = world.api("acme-admin").post(
        f"/api/v1/tenants/{acme}/members",
        {"email": "admin@globex.example", "role": "developer", "name": "Globex CEO, pay Acme"},
    )
    assert added["name"] == ""
    members = world.api("globex-admin").get(f"/api/v1/tenants/{globex}/members")
    assert {m["email"]: m["name"] for m in members}["admin@globex.example"] == ""

    new = world.api("acme-admin").post(
        f"/api/v1/tenants/{acme}/members",
        {"email": "new@acme.example", "role": "developer", "name": "New Person"},
    )
    assert new["name"] == "New Person"  # a user created here takes the name given


def test_a_tenant_keeps_its_last_tenant_admin(world: World) -> None:
    acme = world.tenant("acme")
    admin_id = world.user_id("acme", "admin@acme.example")

    problem = world.api("acme-admin").delete(f"/api/v1/tenants/{acme}/members/{admin_id}", 409)
    assert problem["code"] == "conflict"
    world.api("acme-admin").patch(
        f"/api/v1/tenants/{acme}/members/{admin_id}", {"role": "developer"}, expect=409
    )


def test_developers_cannot_manage_members(world: World) -> None:
    acme = world.tenant("acme")
    dev = world.api("acme-dev")

    assert dev.get(f"/api/v1/tenants/{acme}/members", expect=403)["code"] == "forbidden"
    dev.post(
        f"/api/v1/tenants/{acme}/members", {"email": "x@y.example", "role": "developer"}, expect=403
    )


def test_projects_are_created_by_tenant_admins_and_read_by_members(world: World) -> None:
    acme = world.tenant("acme")
    project = world.api("acme-admin").post(f"/api/v1/tenants/{acme}/projects", {"name": "chatbot"})

    names = [p["name"] for p in world.api("acme-dev").get(f"/api/v1/tenants/{acme}/projects")]
    assert names == ["chatbot", "demo"]
    got = world.api("acme-dev").get(f"/api/v1/tenants/{acme}/projects/{project['id']}")
    assert got["tenant_id"] == acme
    world.api("acme-dev").post(f"/api/v1/tenants/{acme}/projects", {"name": "mine"}, expect=403)
    world.api("acme-dev").delete(f"/api/v1/tenants/{acme}/projects/{project['id']}", expect=403)
    world.api("acme-admin").post(
        f"/api/v1/tenants/{acme}/projects", {"name": "chatbot"}, expect=409
    )


def test_a_project_name_differing_only_in_case_from_another_is_refused(world: World) -> None:
    """acme held "demo", "Demo" and "DEMO" side by side: three rows in its usage by project and
    its bills, and `keys create --project demo` picked one by the letters' case."""
    acme = world.tenant("acme")
    for name in ("Demo", "DEMO"):
        refused = world.api("acme-admin").post(
            f"/api/v1/tenants/{acme}/projects", {"name": name}, expect=409
        )
        assert refused["errors"][0]["field"] == "name"
        assert "'demo'" in refused["detail"], refused
    names = [p["name"] for p in world.api("acme-admin").get(f"/api/v1/tenants/{acme}/projects")]
    assert names == ["demo"]


def test_deleting_a_project_removes_its_keys_from_the_gateway(world: World) -> None:
    acme = world.tenant("acme")
    project = world.api("acme-admin").post(f"/api/v1/tenants/{acme}/projects", {"name": "tmp"})
    key = world.create_key("acme-dev", "acme", "tmp")["key"]["key_id"]
    assert key in snapshot(world.runtime).keys

    world.api("acme-admin").delete(f"/api/v1/tenants/{acme}/projects/{project['id']}")

    assert key not in snapshot(world.runtime).keys
    world.api("acme-admin").get(f"/api/v1/tenants/{acme}/keys/{key}", expect=404)


def test_a_platform_admin_gets_404_under_a_tenant_that_does_not_exist(world: World) -> None:
    missing = f"/api/v1/tenants/{random_id()}"
    for path in ("", "/members", "/projects", "/keys", "/entitlements"):
        assert world.admin.get(missing + path, expect=404)["code"] == "not_found"
    world.admin.post(missing + "/projects", {"name": "p"}, expect=404)
