"""``tenants apply`` refused by the database for a reason that is no concurrent writer's (a
constraint the manifests do not meet): said as the database's refusal, naming the constraint,
not as a race to apply again, which would be refused the same way (SQLite and PostgreSQL).
The race, a unique constraint refusing a row another writer added first, stays a ``Conflict``
to apply again (``test_manifests_concurrency``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from support.platform import REPO
from trunkline.apps.runtime import Runtime
from trunkline.cli.main import main
from trunkline.kit.db import transaction
from trunkline.models import Project, Tenant
from trunkline.tenancy.manifests import apply_manifests
from unit.controlplane.cp_support import SERVER_SECRET

TENANT = """kind: Tenant
slug: t1
name: {name}
tier: gold
projects:
  - name: {project}
members:
  - {{email: a@t.example, role: tenant_admin}}
"""

REFUSE_PROJECT = {
    # A constraint the schema of this release does not have: an operator's, or a newer one's.
    "postgresql": [
        "ALTER TABLE projects ADD CONSTRAINT projects_not_refused CHECK (name <> 'refused')"
    ],
    "sqlite": [
        "CREATE TRIGGER projects_not_refused BEFORE INSERT ON projects WHEN NEW.name = 'refused' "
        "BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: projects_not_refused'); END"
    ],
}


def _manifests(directory: Path, *, name: str, project: str) -> Path:
    directory.mkdir()
    for file in ("tiers.yaml", "catalog.yaml"):
        shutil.copy(REPO / "tenants" / file, directory / file)
    (directory / "tenants.yaml").write_text(TENANT.format(name=name, project=project))
    return directory


@pytest.fixture
def refusing(runtime: Runtime, tmp_path: Path) -> Path:
    """Tenant t1 applied, then a constraint refusing a project named ``refused``: manifests
    renaming t1 and adding that project to it."""
    apply_manifests(runtime.session_factory, _manifests(tmp_path / "one", name="T1", project="a"))
    with transaction(runtime.session_factory) as session:
        for statement in REFUSE_PROJECT[session.get_bind().dialect.name]:
            session.execute(text(statement))
    return _manifests(tmp_path / "two", name="Renamed", project="refused")


def _unchanged(runtime: Runtime) -> None:
    with runtime.session_factory() as session:
        assert session.scalars(select(Tenant.name).where(Tenant.slug == "t1")).one() == "T1"
        assert session.scalars(select(Project.name)).all() == ["a"]


def test_a_constraint_the_manifests_do_not_meet_is_no_race_to_apply_again(
    runtime: Runtime, refusing: Path
) -> None:
    with pytest.raises(IntegrityError) as refused:  # before: Conflict("... apply again")
        apply_manifests(runtime.session_factory, refusing)
    assert "projects_not_refused" in str(refused.value.orig)
    _unchanged(runtime)


def test_the_cli_says_what_the_database_refused_on_one_line(
    runtime: Runtime,
    refusing: Path,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", database_url)
    monkeypatch.setenv("TRUNKLINE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TRUNKLINE_SECURITY__KEY_HASH_SECRET", SERVER_SECRET)
    code = main(["tenants", "apply", str(refusing)])
    _out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: the database refused it: ") and err.count("\n") == 1, err
    assert "projects_not_refused" in err and "apply again" not in err
    _unchanged(runtime)
