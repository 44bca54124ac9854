"""`tenants apply` beside an API change of the same tenants (PostgreSQL, READ COMMITTED): the
apply reads what every tenant holds at once, before going through the documents, so what it
decides must not rest on a read made before the API's change committed.

Each test holds an API change open (written, not committed), starts the apply in a thread,
lets the API's transaction commit once the apply waits on a lock or has ended, and looks at
what both did.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from support.held_transaction import beside_a_held_transaction
from support.platform import REPO
from trunkline.apps.runtime import Runtime
from trunkline.errors import Conflict
from trunkline.kit.db import transaction
from trunkline.models import Membership, Role, Tenant, User
from trunkline.quota.repository import TenantQuotaRepository
from trunkline.quota.schemas import QuotaLimits, ScopeLimits
from trunkline.quota.service import set_tenant_quota
from trunkline.tenancy.changes import changing
from trunkline.tenancy.manifests import ApplyReport, apply_manifests
from trunkline.tenancy.schemas import MemberAdd, MemberUpdate, TenantUpdate
from trunkline.tenancy.service import add_member, update_member, update_tenant
from unit.controlplane.cp_support import make_runtime


@pytest.fixture
def pg_runtime(postgres_url: str, tmp_path: Path) -> Iterator[Runtime]:
    runtime = make_runtime(postgres_url, tmp_path / "state")
    yield runtime
    runtime.close()


def _manifests(directory: Path, tenants: str, tiers: str | None = None) -> Path:
    directory.mkdir()
    for name in ("tiers.yaml", "catalog.yaml"):
        (directory / name).write_text((REPO / "tenants" / name).read_text())
    if tiers is not None:
        (directory / "tiers.yaml").write_text(tiers)
    (directory / "tenants.yaml").write_text(tenants)
    return directory


def _tenant(slug: str, members: dict[str, str], extra: str = "") -> str:
    lines = "".join(f"  - {{email: {e}, role: {r}}}\n" for e, r in members.items())
    return f"kind: Tenant\nslug: {slug}\nname: {slug.upper()}\ntier: gold\nmembers:\n{lines}{extra}"


def _ids(runtime: Runtime, slug: str, email: str) -> tuple[uuid.UUID, uuid.UUID]:
    with runtime.session_factory() as session:
        tenant = session.scalars(select(Tenant.id).where(Tenant.slug == slug)).one()
        user = session.scalars(select(User.id).where(User.email == email)).one()
    return tenant, user


def _apply_beside(
    runtime: Runtime,
    path: Path,
    change: Callable[[Session], object],
    within: Callable[[sessionmaker[Session]], AbstractContextManager[Session]] = transaction,
) -> tuple[Future[ApplyReport], Future[object]]:
    """Apply ``path`` while ``change`` (the API's) is written but not committed; it commits
    once the apply waits on a lock or has ended. Returns the apply's and the change's outcome.

    ``within``: the change's transaction. A plain one by default, as a writer that does not
    take the configuration's lock first would make it (a control plane of an earlier release
    during an upgrade); ``changing`` as the API's requests make it."""
    factory = runtime.session_factory
    return beside_a_held_transaction(
        factory, change, lambda: apply_manifests(factory, path), within
    )


def _admins(runtime: Runtime, tenant_id: uuid.UUID) -> int:
    with runtime.session_factory() as session:
        statement = select(func.count(Membership.id)).where(
            Membership.tenant_id == tenant_id, Membership.role == Role.TENANT_ADMIN
        )
        return int(session.scalar(statement) or 0)


def test_an_api_demotion_meanwhile_leaves_the_tenant_an_admin(
    pg_runtime: Runtime, tmp_path: Path
) -> None:
    admins = {"a@t.example": "tenant_admin", "b@t.example": "tenant_admin"}
    apply_manifests(pg_runtime.session_factory, _manifests(tmp_path / "one", _tenant("t2", admins)))
    tenant_id, a_id = _ids(pg_runtime, "t2", "a@t.example")
    b_demoted = _manifests(tmp_path / "two", _tenant("t2", {"b@t.example": "developer"}))

    def demote_a(session: Session) -> object:  # allowed: b is still an admin
        return update_member(session, tenant_id, a_id, MemberUpdate(role=Role.DEVELOPER))

    applied, demoted = _apply_beside(pg_runtime, b_demoted, demote_a)

    assert demoted.exception() is None
    refused = applied.exception()
    assert isinstance(refused, Conflict), f"apply went through: {applied.result().lines()}"
    assert (
        "tenants.yaml:" in refused.message and "keeps at least one tenant_admin" in refused.message
    )
    assert _admins(pg_runtime, tenant_id) == 1


def test_a_member_the_api_adds_meanwhile_is_found_by_the_apply(
    pg_runtime: Runtime, tmp_path: Path
) -> None:
    first = _tenant("t1", {"c@t.example": "tenant_admin"}) + "---\n"
    t2 = {"a@t.example": "tenant_admin"}
    path = _manifests(tmp_path / "one", first + _tenant("t2", t2))
    apply_manifests(pg_runtime.session_factory, path)
    tenant_id, _c = _ids(pg_runtime, "t2", "c@t.example")
    with_c = _manifests(tmp_path / "two", first + _tenant("t2", {**t2, "c@t.example": "developer"}))

    def add_c(session: Session) -> object:
        return add_member(session, tenant_id, MemberAdd(email="c@t.example", role=Role.DEVELOPER))

    applied, added = _apply_beside(pg_runtime, with_c, add_c)

    assert added.exception() is None
    assert applied.result().lines() == ["no changes"]
    with pg_runtime.session_factory() as session:
        count = session.scalar(
            select(func.count(Membership.id)).where(Membership.tenant_id == tenant_id)
        )
    assert count == 2


def test_a_user_the_api_creates_meanwhile_refuses_the_apply_whole(
    pg_runtime: Runtime, tmp_path: Path
) -> None:
    """A new user is no tenant's yet: no lock covers its e-mail. The apply is refused as a
    conflict, writes nothing, and applying again goes through."""
    t1 = _tenant("t1", {"a@t.example": "tenant_admin"})
    other = _tenant("t3", {"o@t.example": "tenant_admin"})
    apply_manifests(pg_runtime.session_factory, _manifests(tmp_path / "one", t1 + "---\n" + other))
    other_id, _o = _ids(pg_runtime, "t3", "o@t.example")
    renamed = t1.replace("name: T1", "name: Renamed")
    with_d = renamed.replace("members:\n", "members:\n  - {email: d@t.example, role: developer}\n")
    path = _manifests(tmp_path / "two", with_d)

    def add_d_elsewhere(session: Session) -> object:
        return add_member(session, other_id, MemberAdd(email="d@t.example", role=Role.DEVELOPER))

    applied, added = _apply_beside(pg_runtime, path, add_d_elsewhere)

    assert added.exception() is None
    refused = applied.exception()
    assert isinstance(refused, Conflict), f"not a Conflict: {refused!r}"
    assert "changed while applying; apply again" in refused.message
    assert 'unique constraint "uq_users_email"' in refused.message  # which row came first
    with pg_runtime.session_factory() as session:
        assert session.scalars(select(Tenant.name).where(Tenant.slug == "t1")).one() == "T1"
    again = apply_manifests(pg_runtime.session_factory, path)
    assert any("+member d@t.example" in line for line in again.lines())


TIERS_WITHOUT_QUOTA = "---\n".join(
    f"kind: Tier\nname: {name}\npriority: {p}\nttft_slo_ms: 500\n"
    for name, p in (("gold", 100), ("silver", 50), ("bronze", 10))
)


def test_a_tenant_quota_the_api_sets_before_the_apply_reads_is_set_back(
    pg_runtime: Runtime, tmp_path: Path
) -> None:
    """Tiers without a quota: nothing took the configuration's lock before the tenants."""
    t2 = _tenant(
        "t2", {"a@t.example": "tenant_admin"}, "quota: {tenant: {requests_per_minute: 100}}\n"
    )
    apply_manifests(
        pg_runtime.session_factory, _manifests(tmp_path / "one", t2, TIERS_WITHOUT_QUOTA)
    )
    tenant_id, _a = _ids(pg_runtime, "t2", "a@t.example")

    def api_sets_7(session: Session) -> object:
        doc = QuotaLimits(tenant=ScopeLimits(requests_per_minute=7))
        return set_tenant_quota(session, tenant_id, doc)

    path = _manifests(tmp_path / "two", t2, TIERS_WITHOUT_QUOTA)
    applied, set_7 = _apply_beside(pg_runtime, path, api_sets_7)

    assert set_7.exception() is None
    report = applied.result()
    with pg_runtime.session_factory() as session:
        doc = TenantQuotaRepository(session, tenant_id).doc()
    assert doc is not None and doc.tenant.requests_per_minute == 100, report.lines()
    assert report.lines() == ["Tenant t2 updated: quota overrides set"]


def test_an_api_tenant_update_meanwhile_is_no_deadlock(pg_runtime: Runtime, tmp_path: Path) -> None:
    """The API's update of a tenant's row marks a config change; an apply holds the
    configuration, then its tenants' rows. Both end, one after the other: the API's request
    holds the configuration first too (``changing``)."""
    t1 = _tenant("t1", {"a@t.example": "tenant_admin"})
    apply_manifests(pg_runtime.session_factory, _manifests(tmp_path / "one", t1))
    tenant_id, _a = _ids(pg_runtime, "t1", "a@t.example")
    path = _manifests(tmp_path / "two", t1.replace("name: T1", "name: From the manifest"))

    def rename(session: Session) -> object:
        return update_tenant(session, tenant_id, TenantUpdate(name="From the API"))

    applied, renamed = _apply_beside(pg_runtime, path, rename, changing)

    assert renamed.exception() is None
    assert applied.result().lines() == [
        "Tenant t1 updated: name 'From the API' -> 'From the manifest'"
    ]
    with pg_runtime.session_factory() as session:
        name = session.scalars(select(Tenant.name).where(Tenant.slug == "t1")).one()
    assert name == "From the manifest"
