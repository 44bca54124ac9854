"""Tenant A's members can neither see nor touch tenant B, on SQLite and on PostgreSQL.

For every control-plane endpoint that takes an id, a member of ``acme`` (A) aiming
at an object of ``globex`` (B) gets exactly the answer a made-up id gets: 404 when
the caller holds the role the endpoint needs, 403 when it does not — either way
nothing about B leaks and nothing of B changes. Lists never include B's objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

from unit.controlplane.cp_support import World, random_id

T = "/api/v1/tenants"
PERIOD = "2026-12"


@dataclass(frozen=True)
class Ids:
    a: str
    b: str
    project: str
    key: str
    user: str


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: dict[str, Any] | None = None
    role: str = "member"
    """What the endpoint needs of an ``acme`` caller when the path names acme itself."""
    foreign_tenant: bool = True
    """The path names globex (else: acme, with a globex object id in path or body)."""


def cases(ids: Ids) -> list[Case]:
    a, b, p, k, u = ids.a, ids.b, ids.project, ids.key, ids.user
    member = {"email": "spy@acme.example", "role": "developer"}
    return [
        Case("GET", f"{T}/{b}"),
        Case("PATCH", f"{T}/{b}", {"name": "Pwned"}),
        Case("GET", f"{T}/{b}/members"),
        Case("POST", f"{T}/{b}/members", member),
        Case("PATCH", f"{T}/{b}/members/{u}", {"role": "developer"}),
        Case("DELETE", f"{T}/{b}/members/{u}"),
        Case("GET", f"{T}/{b}/projects"),
        Case("GET", f"{T}/{b}/projects/{p}"),
        Case("POST", f"{T}/{b}/projects", {"name": "spy"}),
        Case("DELETE", f"{T}/{b}/projects/{p}"),
        Case("GET", f"{T}/{b}/keys"),
        Case("POST", f"{T}/{b}/keys", {"project_id": p, "name": "spy"}),
        Case("GET", f"{T}/{b}/keys/{k}"),
        Case("POST", f"{T}/{b}/keys/{k}/revoke"),
        Case("POST", f"{T}/{b}/keys/{k}/rotate"),
        Case("GET", f"{T}/{b}/entitlements"),
        Case("PUT", f"{T}/{b}/entitlements/llama-3.1-8b"),
        Case("DELETE", f"{T}/{b}/entitlements/bge-small"),
        Case("GET", f"/api/v1/models?tenant_id={b}"),
        Case("POST", f"{T}/{b}/keys/batch", {"keys": [{"project_id": p, "name": "spy"}]}),
        Case("GET", f"{T}/{b}/keys/{k}/quota"),
        Case("PUT", f"{T}/{b}/keys/{k}/quota", {}),
        Case("GET", f"{T}/{b}/quota"),
        Case("PUT", f"{T}/{b}/quota", {}),
        Case("GET", f"{T}/{b}/usage?period={PERIOD}"),
        Case("GET", f"{T}/{b}/billing/exports/{PERIOD}"),
        Case("GET", f"{T}/{a}/projects/{p}", foreign_tenant=False),
        Case("DELETE", f"{T}/{a}/projects/{p}", role="tenant_admin", foreign_tenant=False),
        Case("PATCH", f"{T}/{a}/members/{u}", {"role": "developer"}, "tenant_admin", False),
        Case("DELETE", f"{T}/{a}/members/{u}", role="tenant_admin", foreign_tenant=False),
        Case("GET", f"{T}/{a}/keys/{k}", foreign_tenant=False),
        Case("POST", f"{T}/{a}/keys/{k}/revoke", foreign_tenant=False),
        Case("POST", f"{T}/{a}/keys/{k}/rotate", foreign_tenant=False),
        Case("POST", f"{T}/{a}/keys", {"project_id": p, "name": "spy"}, foreign_tenant=False),
        Case("GET", f"{T}/{a}/keys/{k}/quota", foreign_tenant=False),
        Case("PUT", f"{T}/{a}/keys/{k}/quota", {}, "tenant_admin", False),
    ]


def test_the_cases_reach_every_route_under_a_tenant(world: World) -> None:
    """A route added under ``/tenants/{tenant_id}`` without a case here would go unchecked."""
    ids = Ids(
        a=random_id(), b=random_id(), project=random_id(), key="NoSuchKey123", user=random_id()
    )
    reached = {(c.method, c.path.split("?")[0]) for c in cases(ids) if c.foreign_tenant}
    missing = []
    for route in world.client.app.routes:
        if not route.path.startswith(T + "/{tenant_id"):
            continue
        pattern = re.compile(re.sub(r"\\{[^}]*\\}", "[^/]+", re.escape(route.path)) + "/?")
        for method in sorted(set(route.methods) - {"HEAD", "OPTIONS"}):
            if not any(m == method and pattern.fullmatch(path) for m, path in reached):
                missing.append(f"{method} {route.path}")
    assert not missing, "no isolation case for:\n" + "\n".join(missing)


def globex_ids(world: World) -> Ids:
    key = world.create_key("globex-dev", "globex", "support-bot", name="globex key")
    return Ids(
        a=world.tenant("acme"),
        b=world.tenant("globex"),
        project=world.project("globex", "support-bot"),
        key=key["key"]["key_id"],
        user=world.user_id("globex", "dev@globex.example"),
    )


def made_up(case: Case, ids: Ids) -> Case:
    """The same request with every globex id replaced by one that exists nowhere."""
    replace = {
        ids.b: random_id(),
        ids.project: random_id(),
        ids.key: "NoSuchKey123",
        ids.user: random_id(),
    }
    path, body = case.path, dict(case.body or {})
    for real, fake in replace.items():
        path = path.replace(real, fake)
        body = {k: fake if v == real else v for k, v in body.items()}
    return Case(
        case.method, path, None if case.body is None else body, case.role, case.foreign_tenant
    )


def answer(world: World, who: str, case: Case) -> tuple[int, str]:
    response = world.client.request(
        case.method, case.path, json=case.body, headers=world.api(who).headers
    )
    code = response.json().get("code", "") if response.content else ""
    return response.status_code, code


def state_of_globex(world: World, ids: Ids) -> Any:
    admin = world.admin
    return (
        admin.get(f"{T}/{ids.b}"),
        admin.get(f"{T}/{ids.b}/members"),
        admin.get(f"{T}/{ids.b}/projects"),
        admin.get(f"{T}/{ids.b}/keys"),
        admin.get(f"{T}/{ids.b}/entitlements"),
    )


@pytest.mark.parametrize("who", ["acme-admin", "acme-dev"])
def test_acme_members_cannot_see_or_touch_globex_objects(world: World, who: str) -> None:
    ids = globex_ids(world)
    before = state_of_globex(world, ids)
    failures = []
    for case in cases(ids):
        holds_role = case.role == "member" or who == "acme-admin"
        expected = 404 if case.foreign_tenant or holds_role else 403
        got = answer(world, who, case)
        control = answer(world, who, made_up(case, ids))
        if got[0] != expected or got != control:
            failures.append(
                f"{case.method} {case.path}: {got}, made-up id {control}, want {expected}"
            )

    assert not failures, "\n".join(failures)
    assert state_of_globex(world, ids) == before, "globex changed"


@pytest.mark.parametrize("who", ["acme-admin", "acme-dev"])
def test_acme_lists_never_include_globex_objects(world: World, who: str) -> None:
    ids = globex_ids(world)
    api = world.api(who)
    acme_key = world.create_key(who, "acme", "demo")["key"]["key_id"]

    assert [t["slug"] for t in api.get(T)] == ["acme"]
    assert [p["name"] for p in api.get(f"{T}/{ids.a}/projects")] == ["demo"]
    assert [k["key_id"] for k in api.get(f"{T}/{ids.a}/keys")] == [acme_key]
    assert api.get(f"{T}/{ids.a}/keys", params={"project_id": ids.project}) == []
    assert {e["tenant_id"] for e in api.get(f"{T}/{ids.a}/entitlements")} == {ids.a}
    assert {m["tenant_count"] for m in api.get("/api/v1/models")} == {1}  # globex's not counted
    for alias in ("llama-3.1-8b", "bge-small"):  # globex is entitled to both too
        entitled = api.get(T, params={"entitled_to": alias})
        assert [t["id"] for t in entitled] == [ids.a], alias
    assert [m["tenant_id"] for m in api.get("/api/v1/auth/me")["memberships"]] == [ids.a]
    if who == "acme-admin":
        emails = {m["email"] for m in api.get(f"{T}/{ids.a}/members")}
        assert emails == {"admin@acme.example", "dev@acme.example"}


def test_globex_members_cannot_reach_acme_either(world: World) -> None:
    acme = world.tenant("acme")
    acme_key = world.create_key("acme-dev", "acme", "demo")["key"]["key_id"]
    for who in ("globex-admin", "globex-dev"):
        api = world.api(who)
        api.get(f"{T}/{acme}", expect=404)
        api.get(f"{T}/{acme}/keys/{acme_key}", expect=404)
        api.post(f"{T}/{acme}/keys/{acme_key}/revoke", expect=404)
    assert world.api("acme-dev").get(f"{T}/{acme}/keys/{acme_key}")["status"] == "active"
