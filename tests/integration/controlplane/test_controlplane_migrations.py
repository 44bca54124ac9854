"""Migrations build the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from trunkline.kit.db import make_engine
from trunkline.kit.migrate import alembic_config, upgrade
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
