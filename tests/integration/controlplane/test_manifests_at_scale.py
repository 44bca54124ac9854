"""`tenants apply` of many tenants (SQLite and PostgreSQL): what the manifests' tenants hold is
read, and what they add written, a few statements per table, not about 11 per tenant (21,000
statements for a first apply of 1,000 tenants, 11,500 to find nothing changed; an operator
waited on every round trip)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event

from support.platform import REPO
from trunkline.apps.runtime import Runtime
from trunkline.kit.db import make_engine, make_sessionmaker
from trunkline.kit.migrate import upgrade
from trunkline.tenancy.changes import count_config_changes
from trunkline.tenancy.manifests import ApplyReport, apply_manifests, load_manifests


def _tenant(n: int, *, renamed: bool = False) -> str:
    quota = "quota: {tenant: {requests_per_minute: 100}}\n" if n % 2 else ""
    return (
        f"kind: Tenant\nslug: t{n:03d}\nname: Tenant {n}{' renamed' if renamed else ''}\n"
        f"tier: {('gold', 'silver', 'bronze')[n % 3]}\nmodels: [llama-3.1-8b, bge-small]\n"
        "projects: [{name: main}]\n"
        f"members:\n  - {{email: admin-{n}@t.example, role: tenant_admin}}\n"
        f"  - {{email: dev-{n}@t.example, role: developer}}\n{quota}"
    )


def _manifests(directory: Path, tenants: range, renamed: frozenset[int] = frozenset()) -> Path:
    directory.mkdir()
    for name in ("tiers.yaml", "catalog.yaml"):
        (directory / name).write_text((REPO / "tenants" / name).read_text())
    documents = [_tenant(n, renamed=n in renamed) for n in tenants]
    (directory / "tenants.yaml").write_text("---\n".join(documents))
    return directory


@contextmanager
def _counted(runtime: Runtime) -> Iterator[list[str]]:
    statements: list[str] = []
    engine = runtime.session_factory.kw["bind"]

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _apply(runtime: Runtime, path: Path) -> tuple[ApplyReport, int]:
    manifests = load_manifests(path)
    with _counted(runtime) as statements:
        report = apply_manifests(runtime.session_factory, manifests)
    return report, len(statements)


def test_applying_more_tenants_takes_no_more_statements(runtime: Runtime, tmp_path: Path) -> None:
    few, few_count = _apply(runtime, _manifests(tmp_path / "few", range(6)))
    many, many_count = _apply(runtime, _manifests(tmp_path / "many", range(6, 36)))

    assert [str(c) for c in many.changes][:2] == [
        "Tenant t006 created: +model bge-small; +model llama-3.1-8b; +project main; "
        "+member admin-6@t.example (tenant_admin); +member dev-6@t.example (developer)",
        "Tenant t007 created: +model bge-small; +model llama-3.1-8b; +project main; "
        "+member admin-7@t.example (tenant_admin); +member dev-7@t.example (developer); "
        "quota overrides set",
    ]
    assert len(few.changes) == 6 + 10 and len(many.changes) == 30  # tiers, catalog at first
    assert many_count <= few_count  # 30 new tenants: no more round trips than 6


def test_a_reapply_finds_what_changed_in_as_many_statements(
    runtime: Runtime, tmp_path: Path
) -> None:
    _apply(runtime, _manifests(tmp_path / "all", range(40)))
    _unchanged, few_count = _apply(runtime, _manifests(tmp_path / "few", range(4)))
    unchanged, many_count = _apply(runtime, _manifests(tmp_path / "again", range(40)))
    renamed, renamed_count = _apply(
        runtime, _manifests(tmp_path / "renamed", range(40), frozenset({3, 17}))
    )

    assert unchanged.lines() == ["no changes"]
    assert renamed.lines() == [
        "Tenant t003 updated: name 'Tenant 3' -> 'Tenant 3 renamed'",
        "Tenant t017 updated: name 'Tenant 17' -> 'Tenant 17 renamed'",
    ]
    assert many_count == few_count  # 40 tenants read in the statements 4 take
    assert renamed_count <= few_count + 4  # the two updates, the counter, its hold


OLD_SQLITE_CAP = 300
"""Bind parameters per statement, as a SQLite library built with a lower cap than 32,766 has
it (999 before 3.32.0: Ubuntu 20.04's 3.31, RHEL 8's 3.26), lower still to need fewer rows."""


def test_an_apply_fits_an_older_sqlite_s_cap_on_bind_parameters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url)
    engine = make_engine(url)

    @event.listens_for(engine, "connect", insert=True)  # first, as the library's own cap
    def cap(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, OLD_SQLITE_CAP)

    factory = make_sessionmaker(engine)
    count_config_changes(factory)
    path = _manifests(tmp_path / "m", range(400))
    try:
        first = apply_manifests(factory, path)
        again = apply_manifests(factory, path)
        renamed = apply_manifests(factory, _manifests(tmp_path / "r", range(400), frozenset({7})))
    finally:
        engine.dispose()

    assert len(first.changes) == 400 + 10  # tiers, catalog
    assert again.lines() == ["no changes"]
    assert renamed.lines() == ["Tenant t007 updated: name 'Tenant 7' -> 'Tenant 7 renamed'"]
