"""Migrations build the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from support.processes import TRUNKLINE, trunkline_env
from trunkline.kit.db import make_engine
from trunkline.kit.migrate import alembic_config, upgrade
from trunkline.kit.shards import key_shard
from trunkline.models import Base
from trunkline.models.base import UtcDateTime


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


def test_migration_0018_gives_closed_periods_the_watermark_they_were_billed_at(
    database_url: str,
) -> None:
    """A closed month's summed ``rolled_seq`` is kept from 0018 on: its rollups as they stand
    are what it was reconciled at (a change since still moved its count or revisions)."""
    upgrade(database_url, "0017")
    engine = make_engine(database_url)
    nov, dec = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    periods = sa.table(
        "billing_periods",
        *(sa.column(c, UtcDateTime()) for c in ("period_start", "period_end")),
        *(sa.column(c, UtcDateTime()) for c in ("closed_at", "reconciled_at")),
        sa.column("reconciled_rows", sa.BigInteger()),
        sa.column("reconciled_revisions", sa.BigInteger()),
    )
    marks = sa.table(
        "usage_rollup_watermarks",
        sa.column("tenant_id", sa.Uuid()),
        sa.column("hour", UtcDateTime()),
        sa.column("changed_seq", sa.BigInteger()),
        sa.column("rolled_seq", sa.BigInteger()),
    )
    tenant = uuid.uuid4()
    try:
        with engine.begin() as connection:
            connection.execute(
                periods.insert(),
                [
                    {
                        "period_start": nov,
                        "period_end": dec,
                        "closed_at": dec,
                        "reconciled_at": dec,
                        "reconciled_rows": 2,
                        "reconciled_revisions": 2,
                    }
                ],
            )
            connection.execute(
                marks.insert(),
                [
                    {"tenant_id": tenant, "hour": hour, "changed_seq": seq, "rolled_seq": seq}
                    for hour, seq in ((nov, 3), (dec - timedelta(hours=1), 4), (dec, 9))
                ],
            )
        upgrade(database_url)
        with engine.connect() as connection:
            kept = connection.execute(sa.text("SELECT reconciled_seq FROM billing_periods")).all()
        assert kept == [(7,)]  # November's hours, not December's
        command.downgrade(alembic_config(database_url), "0017")
    finally:
        engine.dispose()


_ROWS_AT_0003 = {
    "tiers": "INSERT INTO tiers (id, name, description, priority, ttft_slo_ms, may_use_burst, "
    "created_at) VALUES (:tier, 'gold', '', 100, 500, true, CURRENT_TIMESTAMP)",
    "tenants": "INSERT INTO tenants (id, slug, name, tier_id, regions, created_at) "
    "VALUES (:tenant, 'old', 'Old', :tier, '[]', CURRENT_TIMESTAMP)",
    "projects": "INSERT INTO projects (id, tenant_id, name, description, created_at) "
    "VALUES (:project, :tenant, 'p', '', CURRENT_TIMESTAMP)",
    "api_keys": "INSERT INTO api_keys (id, key_id, secret_hash, tenant_id, project_id, name, "
    "created_at) VALUES (:key, 'aaaaaaaaaaaa', 'h', :tenant, :project, 'k', CURRENT_TIMESTAMP)",
    "users": "INSERT INTO users (id, email, name, is_platform_admin, created_at) "
    "VALUES (:user, 'a@old.example', 'A', false, CURRENT_TIMESTAMP)",
    "memberships": "INSERT INTO memberships (id, user_id, tenant_id, role, created_at) "
    "VALUES (:membership, :user, :tenant, 'TENANT_ADMIN', CURRENT_TIMESTAMP)",
    "models": "INSERT INTO models (id, name, kind, context_length, created_at) "
    "VALUES (:model, 'm', 'CHAT', 8192, CURRENT_TIMESTAMP)",
    "model_aliases": "INSERT INTO model_aliases (id, alias, model_id, created_at) "
    "VALUES (:alias, 'a', :model, CURRENT_TIMESTAMP)",
    "entitlements": "INSERT INTO entitlements (id, tenant_id, alias_id, created_at) "
    "VALUES (:entitlement, :tenant, :alias, CURRENT_TIMESTAMP)",
    # recreated on SQLite by 0017 (its foreign key to projects) and 0018's downgrade
    "dedicated_capacity": "INSERT INTO dedicated_capacity (id, tenant_id, project_id, flavor, "
    "region, gpus, starts_at, created_at) VALUES (:capacity, :tenant, :project, 'h100', '', 2, "
    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    "billing_periods": "INSERT INTO billing_periods (period_start, period_end, closed_at, "
    "reconciled_at, reconciled_rows, reconciled_revisions) VALUES (CURRENT_TIMESTAMP, "
    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 0, 0)",
}


def test_migrations_up_and_down_keep_every_row_of_the_tables_they_alter(database_url: str) -> None:
    """On SQLite, 0004 recreated ``tenants`` and ``model_aliases`` (a column, a foreign key)
    with foreign keys enforced: dropping the old tables deleted by cascade every project, API
    key, membership and entitlement. A demo database upgraded from 0003 came back with its
    tenants and no keys; a downgrade past 0004 did the same."""
    upgrade(database_url, "0003")
    engine = make_engine(database_url)
    sqlite = database_url.startswith("sqlite")
    names = ("tier", "tenant", "project", "key", "user", "membership", "model", "alias")
    ids = {name: uuid.uuid4() for name in (*names, "entitlement", "capacity")}
    params = {name: value.hex if sqlite else str(value) for name, value in ids.items()}

    def counts() -> dict[str, int | None]:
        with engine.connect() as connection:
            return {
                table: connection.scalar(sa.select(sa.func.count()).select_from(sa.table(table)))
                for table in _ROWS_AT_0003
            }

    try:
        with engine.begin() as connection:
            for statement in _ROWS_AT_0003.values():
                connection.execute(sa.text(statement), params)
        upgrade(database_url)
        assert counts() == dict.fromkeys(_ROWS_AT_0003, 1)
        command.downgrade(alembic_config(database_url), "0003")
        assert counts() == dict.fromkeys(_ROWS_AT_0003, 1)
    finally:
        engine.dispose()


@pytest.mark.integration
def test_two_migrations_at_once_both_end_at_head(postgres_url: str, tmp_path: Path) -> None:
    """Two ``trunkline migrate`` at once (an init container per replica, or two deploys): the
    second created the tables the first was creating and stopped on PostgreSQL's duplicate
    key, a failed deploy to retry by hand."""
    env = trunkline_env(TRUNKLINE_DATABASE__URL=postgres_url)
    migrations = [
        subprocess.Popen(
            [*TRUNKLINE, "migrate"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    errors = [migration.communicate(timeout=120)[1] for migration in migrations]
    assert [migration.returncode for migration in migrations] == [0, 0, 0], errors
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    assert current == ScriptDirectory.from_config(alembic_config(postgres_url)).get_current_head()
