"""Pools, cascading aliases and tenant cache isolation on SQLite and PostgreSQL: the API, the
snapshot, platform-admin-only access, and migration 0004 over existing rows."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import command

from trunkline.kit.db import make_engine
from trunkline.kit.migrate import alembic_config, upgrade
from unit.controlplane.cp_support import World, snapshot

CATALOG = "/api/v1/catalog"


def test_pools_cascades_and_cache_isolation_through_the_api(world: World) -> None:
    admin = world.admin
    pool = {"name": "small-eu", "model": "llama-3.2-1b", "flavor": "l40s", "region": "eu-west",
            "capacity": 3, "tokens_per_s": 5000.0, "cost_per_hour": 0.6}  # fmt: skip
    admin.post(CATALOG + "/models", {"name": "llama-3.2-1b"})
    admin.post(CATALOG + "/pools", pool)
    endpoints = {"urls": [{"url": "http://10.1.0.1:8000", "kv_events": "tcp://10.1.0.1:5557"}]}
    admin.put(CATALOG + "/pools/small-eu/endpoints", endpoints)
    cascade = {"escalate_to": "llama-3.1-8b-instruct", "checks": {"refusal": False}}
    admin.post(CATALOG + "/aliases", {"alias": "auto", "model": "llama-3.2-1b", "cascade": cascade})
    acme = world.tenant("acme")
    admin.patch(f"/api/v1/tenants/{acme}", {"cache_isolated": False})

    published = snapshot(world.runtime)
    entry = published.pools["small-eu"]
    assert (entry.cost_per_hour, entry.capacity, entry.tokens_per_s) == (0.6, 3, 5000.0)
    assert entry.endpoints[0].kv_events == "tcp://10.1.0.1:5557"
    alias = published.aliases["auto"]
    assert alias.cascade is not None and alias.cascade.on_refusal is False
    assert alias.cascade.pools == ("h100-eu-west", "l40s-us-east")
    assert published.tenants[acme].cache_salt is None
    assert published.tenants[world.tenant("globex")].cache_salt is not None


def test_only_a_platform_admin_manages_pools_aliases_and_cache_isolation(world: World) -> None:
    globex = world.tenant("globex")
    for who in ("acme-admin", "acme-dev", "globex-admin", "globex-dev", "outsider"):
        api = world.api(who)
        api.get(CATALOG + "/aliases", expect=403)
        api.patch(CATALOG + "/aliases/llama-3.1-8b", {"cascade": None}, expect=403)
        api.put(CATALOG + "/pools/h100-eu-west/endpoints", {"urls": []}, expect=403)
        api.patch(CATALOG + "/pools/h100-eu-west", {"cost_per_hour": 0}, expect=403)
        expected = 403 if who.startswith("globex") else 404
        api.patch(f"/api/v1/tenants/{globex}", {"cache_isolated": False}, expect=expected)
    published = snapshot(world.runtime)
    assert published.tenants[globex].cache_salt is not None
    assert len(published.pools["h100-eu-west"].endpoints) == 0  # as the manifests left it
    assert published.pools["h100-eu-west"].cost_per_hour == 3.5


def test_migration_0004_keeps_existing_rows_and_isolates_existing_tenants(
    database_url: str,
) -> None:
    upgrade(database_url, "0003")
    engine = make_engine(database_url)
    tier, tenant = uuid.uuid4(), uuid.uuid4()
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO tiers (id, name, description, priority, ttft_slo_ms, "
                        "may_use_burst, created_at) VALUES (:id, 'gold', '', 100, 500, true, "
                        "CURRENT_TIMESTAMP)"),
                {"id": tier.hex if database_url.startswith("sqlite") else str(tier)},
            )  # fmt: skip
            connection.execute(
                sa.text("INSERT INTO tenants (id, slug, name, tier_id, regions, created_at) "
                        "VALUES (:id, 'old', 'Old', :tier, '[]', CURRENT_TIMESTAMP)"),
                {"id": tenant.hex if database_url.startswith("sqlite") else str(tenant),
                 "tier": tier.hex if database_url.startswith("sqlite") else str(tier)},
            )  # fmt: skip
        upgrade(database_url)
        with engine.connect() as connection:
            isolated = connection.execute(sa.text("SELECT cache_isolated FROM tenants")).scalar()
        assert isolated in (True, 1)
        command.downgrade(alembic_config(database_url), "0003")
        with engine.connect() as connection:
            columns = {c["name"] for c in sa.inspect(connection).get_columns("tenants")}
        assert "cache_isolated" not in columns
        upgrade(database_url)
    finally:
        engine.dispose()
