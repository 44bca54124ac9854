"""Run Alembic migrations programmatically (``trunkline migrate``, tests, embedded start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import URL, Engine, make_url
from sqlalchemy.exc import OperationalError

from trunkline.errors import ConfigurationError
from trunkline.kit.db import driver_message


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


def parse_url(url: str) -> URL:
    """``url`` as SQLAlchemy reads it; a ``ConfigurationError`` when it cannot. SQLAlchemy's
    own error quotes what followed the host (a password's characters, in a mistyped URL)."""
    try:
        return make_url(url)
    except ValueError:
        raise ConfigurationError(
            "TRUNKLINE_DATABASE__URL cannot be read: what follows HOST: must be a port "
            "number (an '@' in a password is written %40)"
        ) from None


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (relative to the working directory as SQLite takes
    it), None for other databases and in-memory SQLite."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def ensure_sqlite_dir(url: str) -> None:
    """Create the directory of a SQLite database file, which SQLite will not."""
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


_PASSWORD_PARAMETERS = ("password", "sslpassword")
"""libpq's parameters that hold a password, which a URL may give in its query instead."""


def database_name(url: str) -> str:
    """The database as messages name it: a SQLite file's absolute path, else the URL without
    its password, whether in its user information or in libpq's ``password`` (and
    ``sslpassword``) parameters."""
    path = sqlite_file(url)
    if path is not None:
        return str(path.resolve())
    parsed = parse_url(url)
    hidden = {name: "***" for name in _PASSWORD_PARAMETERS if name in parsed.query}
    shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace("=%2A%2A%2A", "=***")  # as the user information's is shown


def upgrade(url: str, revision: str = "head") -> None:
    ensure_sqlite_dir(url)
    try:
        command.upgrade(alembic_config(url), revision)
    except OperationalError as exc:
        if exc.statement is None:  # failed to connect
            raise unreachable(url, exc) from exc
        # A statement failed: the database is locked, or holds what a migration creates.
        raise ConfigurationError(
            f"cannot migrate the database {database_name(url)}: {driver_message(exc)}"
        ) from exc
    except CommandError as exc:  # a revision this code does not know: a newer Trunkline's
        raise ConfigurationError(
            f"cannot migrate the database {database_name(url)}: {exc}; "
            f"a newer Trunkline migrated it, so run that one"
        ) from exc


def schema_problem(engine: Engine) -> str | None:
    """Why the database behind ``engine`` cannot serve this Trunkline, and what to do (it
    holds no schema, or one at another revision than this code's head), None when it can."""
    from alembic.runtime.migration import MigrationContext

    script = ScriptDirectory(str(migrations_dir()))
    head = script.get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return None
    if current is None:
        return "holds no Trunkline schema: run `trunkline migrate`"
    try:
        script.get_revision(current)
    except CommandError:
        return (
            f"is at schema revision {current}, which this Trunkline ({head}) does not know: "
            "a newer Trunkline migrated it, so run that one"
        )
    return f"is at schema revision {current}; this Trunkline needs {head}: run `trunkline migrate`"


def require_existing(url: str) -> None:
    """Stop with one line when ``url`` is a SQLite file that is not there, rather than let a
    connection create an empty one (and its directory) where nobody meant to have a database."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise ConfigurationError(
            f"no Trunkline database at {path.resolve()}: run this command where `trunkline up` "
            "was started (or start it here), or set TRUNKLINE_DATABASE__URL (then `trunkline "
            "migrate`)"
        )


def require_current(url: str, engine: Engine | None = None) -> None:
    """Stop with one line unless the database at ``url`` (through ``engine`` when given, else
    an engine of its own, disposed after) is at this code's schema."""
    from trunkline.kit.db import make_engine

    checked = engine or make_engine(url)
    try:
        problem = schema_problem(checked)
    except OperationalError as exc:
        raise unreachable(url, exc) from exc
    finally:
        if engine is None:
            checked.dispose()
    if problem is not None:
        raise ConfigurationError(f"the database {database_name(url)} {problem}")


def unreachable(url: str, exc: OperationalError) -> ConfigurationError:
    """One line for a database that refused or dropped the connection (the driver's first
    line names the host and the reason, never a password)."""
    return ConfigurationError(
        f"cannot reach the database {database_name(url)}: {driver_message(exc)}"
    )
