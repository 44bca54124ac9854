"""The catalog: flavors, models, aliases, pools, endpoints and entitlements."""

from __future__ import annotations

from cp_support import CATALOG, World, snapshot

from trunkline.pools.service import set_pool_endpoints
from trunkline.tenancy.changes import unit_of_work


def test_catalog_administration_needs_a_platform_admin(world: World) -> None:
    for who in ("acme-admin", "acme-dev"):
        api = world.api(who)
        for path in ("/flavors", "/models", "/pools", "/pools/h100-eu-west"):
            assert api.get(CATALOG + path, expect=403)["code"] == "forbidden"
        api.post(CATALOG + "/flavors", {"name": "a100"}, expect=403)
        api.put(CATALOG + "/pools/h100-eu-west/endpoints", {"urls": []}, expect=403)


def test_a_platform_admin_builds_a_pool_that_the_gateway_sees(world: World) -> None:
    admin = world.admin
    flavor = admin.post(
        CATALOG + "/flavors", {"name": "a100", "vendor": "NVIDIA", "cost_per_hour": 2.25}
    )
    assert flavor["cost_per_hour"] == 2.25
    assert admin.patch(CATALOG + "/flavors/a100", {"memory_gb": 80})["memory_gb"] == 80
    model = admin.post(CATALOG + "/models", {"name": "qwen2.5-7b", "aliases": ["qwen"]})
    assert model["aliases"] == ["qwen"]
    assert admin.post(CATALOG + "/aliases", {"alias": "qwen-7b", "model": "qwen2.5-7b"})[
        "aliases"
    ] == ["qwen", "qwen-7b"]
    pool = admin.post(
        CATALOG + "/pools",
        {"name": "a100-eu", "model": "qwen2.5-7b", "flavor": "a100", "region": "eu-west"},
    )
    assert (pool["model"], pool["flavor"], pool["endpoints"]) == ("qwen2.5-7b", "a100", [])

    urls = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    pool = admin.put(CATALOG + "/pools/a100-eu/endpoints", {"urls": urls})

    assert [e["url"] for e in pool["endpoints"]] == urls
    published = snapshot(world.runtime)
    assert [e.url for e in published.pools["a100-eu"].endpoints] == urls
    assert published.pools["a100-eu"].accelerator == "a100"
    assert published.aliases["qwen-7b"].pools == ("a100-eu",)
    assert admin.patch(CATALOG + "/pools/a100-eu", {"burst": True})["burst"] is True
    assert snapshot(world.runtime).pools["a100-eu"].burst is True


def test_catalog_names_are_unique_and_things_in_use_stay(world: World) -> None:
    admin = world.admin
    admin.post(CATALOG + "/flavors", {"name": "h100"}, expect=409)
    admin.post(CATALOG + "/models", {"name": "x", "aliases": ["llama-3.1-8b"]}, expect=409)
    assert admin.delete(CATALOG + "/flavors/h100", expect=409)["code"] == "conflict"
    admin.delete(CATALOG + "/models/llama-3.1-8b-instruct", expect=409)
    unknown = admin.post(
        CATALOG + "/pools", {"name": "p", "model": "nope", "flavor": "h100", "region": "r"}, 400
    )
    assert unknown["errors"][0]["field"] == "model"


def test_deleting_a_pool_and_an_alias_reaches_the_gateway(world: World) -> None:
    world.admin.delete(CATALOG + "/pools/embed-eu-west")
    world.admin.delete(CATALOG + "/aliases/bge-small")

    published = snapshot(world.runtime)
    assert "embed-eu-west" not in published.pools
    assert "bge-small" not in published.aliases
    assert "bge-small" not in published.tenants[world.tenant("acme")].aliases
    world.admin.delete(CATALOG + "/models/bge-small-en")
    world.admin.get(CATALOG + "/models/bge-small-en", expect=404)


def test_set_pool_endpoints_replaces_the_list_and_keeps_known_endpoints(world: World) -> None:
    runtime = world.runtime
    with unit_of_work(runtime.session_factory, runtime.publish) as session:
        first = set_pool_endpoints(session, "h100-eu-west", ["http://a:1", "http://b:2"])
    version = snapshot(runtime).version
    with unit_of_work(runtime.session_factory, runtime.publish) as session:
        second = set_pool_endpoints(session, "h100-eu-west", ["http://b:2", "http://c:3"])
    with unit_of_work(runtime.session_factory, runtime.publish) as session:
        set_pool_endpoints(session, "h100-eu-west", ["http://c:3", "http://b:2"])

    ids = {e.url: e.id for e in first.endpoints} | {e.url: e.id for e in second.endpoints}
    assert [e.url for e in second.endpoints] == ["http://b:2", "http://c:3"]
    assert next(e.id for e in second.endpoints if e.url == "http://b:2") == ids["http://b:2"]
    published = snapshot(runtime)
    assert [e.url for e in published.pools["h100-eu-west"].endpoints] == [
        "http://b:2",
        "http://c:3",
    ]
    assert published.version == version + 1, "an unchanged list publishes nothing"


def test_entitlements_are_granted_and_revoked_by_the_platform_admin(world: World) -> None:
    initech = world.tenant("initech")
    path = f"/api/v1/tenants/{initech}/entitlements"

    granted = world.admin.put(f"{path}/bge-small")
    assert granted["model"] == "bge-small-en"
    world.admin.put(f"{path}/bge-small")
    aliases = [e["alias"] for e in world.api("root").get(path)]
    assert aliases == ["bge-small", "llama-3.1-8b"]
    assert "bge-small" in snapshot(world.runtime).tenants[initech].aliases

    world.admin.delete(f"{path}/llama-3.1-8b")
    assert snapshot(world.runtime).tenants[initech].aliases == frozenset({"bge-small"})
    world.admin.delete(f"{path}/llama-3.1-8b", expect=404)
    world.admin.put(f"{path}/no-such-alias", expect=404)


def test_members_read_entitlements_but_cannot_change_them(world: World) -> None:
    path = f"/api/v1/tenants/{world.tenant('acme')}/entitlements"

    assert len(world.api("acme-dev").get(path)) == 2
    world.api("acme-admin").put(f"{path}/bge-small", expect=403)
    world.api("acme-admin").delete(f"{path}/bge-small", expect=403)


def test_models_lists_what_the_callers_tenants_may_use(world: World) -> None:
    initech = world.api("root").get(f"/api/v1/tenants/{world.tenant('initech')}")
    world.api("root").post(
        f"/api/v1/tenants/{initech['id']}/members",
        {"email": "dev@acme.example", "role": "developer"},
    )

    models = {m["alias"]: m for m in world.api("acme-dev").get("/api/v1/models")}
    assert set(models) == {"llama-3.1-8b", "bge-small"}
    assert (models["llama-3.1-8b"]["tenant_count"], models["bge-small"]["tenant_count"]) == (2, 1)
    assert "tenant_ids" not in models["bge-small"]
    entitled = world.api("acme-dev").get("/api/v1/tenants", params={"entitled_to": "llama-3.1-8b"})
    assert {t["id"] for t in entitled} == {world.tenant("acme"), initech["id"]}
    bge = world.api("acme-dev").get("/api/v1/tenants", params={"entitled_to": "bge-small"})
    assert [t["slug"] for t in bge] == ["acme"]
    assert models["bge-small"]["kind"] == "embedding"
    only_initech = world.api("acme-dev").get("/api/v1/models", params={"tenant_id": initech["id"]})
    assert [m["alias"] for m in only_initech] == ["llama-3.1-8b"]
    assert world.api("outsider").get("/api/v1/models") == []
    assert {m["alias"] for m in world.admin.get("/api/v1/models")} == {"llama-3.1-8b", "bge-small"}


def test_a_platform_admin_counts_a_shared_models_tenants_and_pages_through_them(
    world: World,
) -> None:
    """A model every tenant may use: its /models entry stays one count however many tenants
    share it; the tenants come a page at a time, with the listing's next links."""
    slugs = [f"shared-{n}" for n in range(7)]
    for slug in slugs:
        tenant = world.admin.post("/api/v1/tenants", {"slug": slug, "name": slug, "tier": "gold"})
        world.admin.put(f"/api/v1/tenants/{tenant['id']}/entitlements/bge-small")
    entitled = {
        t["slug"]
        for t in world.admin.get("/api/v1/tenants")
        if any(e["alias"] == "bge-small"
               for e in world.admin.get(f"/api/v1/tenants/{t['id']}/entitlements"))
    }  # fmt: skip
    assert set(slugs) < entitled

    models = {m["alias"]: m for m in world.admin.get("/api/v1/models")}
    assert models["bge-small"]["tenant_count"] == len(entitled)
    pages = world.admin.pages("/api/v1/tenants", entitled_to="bge-small", limit=3)
    assert [len(page) for page in pages[:-1]] == [3] * (len(pages) - 1)
    assert [t["slug"] for page in pages for t in page] == sorted(entitled)
    assert world.admin.get("/api/v1/tenants", params={"entitled_to": "no-such-alias"}) == []
    empty = world.admin.get("/api/v1/tenants", params={"entitled_to": ""}, expect=400)
    assert empty["errors"][0]["field"] == "entitled_to"  # not every tenant, nor none


def test_the_openapi_document_describes_the_count_and_the_tenants_filter(world: World) -> None:
    schema = world.api(None).get("/schema/openapi.json")
    listing = schema["paths"]["/api/v1/tenants"]["get"]
    assert "entitled_to" in {p["name"] for p in listing["parameters"]}
    entry = schema["components"]["schemas"]["AvailableModel"]
    assert "tenant_count" in entry["required"] and "tenant_ids" not in entry["properties"]
