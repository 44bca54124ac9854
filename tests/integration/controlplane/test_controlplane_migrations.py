"""Migrations build the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from trunkline.kit.db import make_engine
from trunkline.kit.migrate import alembic_config, upgrade
from trunkline.kit.shards import key_shard
from trunkline.models import Base


def test_upgrade_head_leaves_no_difference_from_the_models(database_url: str) -> None:
    upgrade(database_url)

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
            current = context.get_current_revision()
    finally:
        engine.dispose()

    assert differences == []
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert current == head


def test_upgrade_head_twice_is_harmless(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)


def test_migration_0014_gives_existing_keys_the_shard_their_id_is_published_in(
    database_url: str,
) -> None:
    """A key created before it must be found by its shard, or a change to its shard would
    publish the shard without it (and every gateway refuse the key)."""
    upgrade(database_url, "0013")
    engine = make_engine(database_url)
    sqlite = database_url.startswith("sqlite")
    tier, tenant, project = (uuid.uuid4() for _ in range(3))
    ids = {"tier": tier, "tenant": tenant, "project": project}
    params = {name: value.hex if sqlite else str(value) for name, value in ids.items()}
    key_ids = ["aaaaaaaaaaaa", "Zq81mKx0PpLw", "0000000000ab"]
    try:
        with engine.begin() as connection:
            for statement in (
                "INSERT INTO tiers (id, name, description, priority, ttft_slo_ms, may_use_burst, "
                "created_at) VALUES (:tier, 'gold', '', 100, 500, true, CURRENT_TIMESTAMP)",
                "INSERT INTO tenants (id, slug, name, tier_id, regions, created_at) "
                "VALUES (:tenant, 'old', 'Old', :tier, '[]', CURRENT_TIMESTAMP)",
                "INSERT INTO projects (id, tenant_id, name, description, created_at) "
                "VALUES (:project, :tenant, 'p', '', CURRENT_TIMESTAMP)",
            ):
                connection.execute(sa.text(statement), params)
            for key_id in key_ids:
                row = uuid.uuid4()
                connection.execute(
                    sa.text(
                        "INSERT INTO api_keys (id, key_id, secret_hash, tenant_id, project_id, "
                        "name, created_at) VALUES (:row, :key_id, 'h', :tenant, :project, 'k', "
                        "CURRENT_TIMESTAMP)"
                    ),
                    params | {"row": row.hex if sqlite else str(row), "key_id": key_id},
                )
            connection.execute(
                sa.text(
                    "INSERT INTO api_key_quotas (api_key_id, limits, updated_at) "
                    "VALUES (:row, '{}', CURRENT_TIMESTAMP)"
                ),
                {"row": row.hex if sqlite else str(row)},
            )
        upgrade(database_url)
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT key_id, shard FROM api_keys")).all()
        assert {key_id: shard for key_id, shard in rows} == {k: key_shard(k) for k in key_ids}
        command.downgrade(alembic_config(database_url), "0013")
        upgrade(database_url)
        with engine.connect() as connection:  # a table recreated on SQLite cascaded to these
            quotas = connection.execute(sa.text("SELECT count(*) FROM api_key_quotas")).scalar()
        assert quotas == 1
    finally:
        engine.dispose()
