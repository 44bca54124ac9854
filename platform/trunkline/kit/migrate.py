"""Run Alembic migrations programmatically (``trunkline migrate``, tests, embedded start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine


def migrations_dir() -> Path:
    package_root = Path(__file__).resolve().parents[1]
    bundled = package_root / "_migrations"  # inside a built wheel
    if bundled.is_dir():
        return bundled
    return package_root.parents[1] / "migrations"  # a source checkout


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def schema_problem(engine: Engine) -> str | None:
    """Why the database behind ``engine`` cannot serve this Trunkline (it holds no schema, or
    one at another revision than this code's head), None when it can."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(migrations_dir())).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return None
    if current is None:
        return "holds no Trunkline schema"
    return f"is at schema revision {current}; this Trunkline needs {head}"
