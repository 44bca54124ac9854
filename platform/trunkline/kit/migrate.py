"""Run Alembic migrations programmatically (``trunkline migrate``, tests, embedded start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config


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
