"""API keys: the secret is shown once, scope is checked, and the gateway snapshot follows."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from cp_support import World, random_id, snapshot
from sqlalchemy import update

from trunkline.auth.secrets import verify
from trunkline.kit.db import transaction
from trunkline.kit.ids import utcnow
from trunkline.models import ApiKey
from trunkline.tenancy.changes import mark_config_changed


def keys_path(world: World, slug: str = "acme") -> str:
    return f"/api/v1/tenants/{world.tenant(slug)}/keys"


def test_creating_a_key_returns_its_secret_once_and_lists_never_show_it(world: World) -> None:
    created = world.create_key("acme-dev", "acme", "demo", allowed_models=["llama-3.1-8b"])
    secret, key = created["secret"], created["key"]

    assert secret.startswith(f"tlk_{key['key_id']}_")
    assert key["prefix"] == f"tlk_{key['key_id']}_"
    assert (key["project"], key["status"], key["allowed_models"]) == (
        "demo",
        "active",
        ["llama-3.1-8b"],
    )
    listed = world.client.get(keys_path(world), headers=world.api("acme-dev").headers).text
    fetched = world.client.get(
        f"{keys_path(world)}/{key['key_id']}", headers=world.api("acme-dev").headers
    ).text
    entry = snapshot(world.runtime).keys[key["key_id"]]
    for body in (listed, fetched):
        assert key["key_id"] in body
        assert secret not in body
        assert secret.split("_")[2] not in body
        assert entry.secret_hash not in body
        assert "hash" not in body
    assert verify(world.runtime.server_secret, secret, entry.secret_hash)
    assert entry.allowed_aliases == frozenset({"llama-3.1-8b"})


def test_a_key_without_allowed_models_may_use_every_entitled_alias(world: World) -> None:
    key = world.create_key("acme-dev", "acme", "demo", ttl_days=7)["key"]

    entry = snapshot(world.runtime).keys[key["key_id"]]
    assert entry.allowed_aliases is None
    assert entry.expires_at is not None
    assert 6.9 * 86400 < entry.expires_at - utcnow().timestamp() <= 7 * 86400


def test_allowed_models_must_be_entitled_to_the_tenant(world: World) -> None:
    project = world.project("initech", "tps-reports")
    problem = world.api("root").post(
        keys_path(world, "initech"),
        {"project_id": project, "name": "k", "allowed_models": ["bge-small"]},
        expect=400,
    )
    assert problem["errors"] == [
        {
            "field": "allowed_models",
            "message": "the tenant is not entitled to bge-small",
            "source": "body",
        }
    ]


def test_a_key_may_only_be_pinned_to_a_tier_no_higher_than_its_tenants(world: World) -> None:
    globex_project = world.project("globex", "support-bot")
    path = keys_path(world, "globex")

    pinned = world.api("globex-admin").post(
        path, {"project_id": globex_project, "name": "k", "tier": "bronze"}
    )
    assert snapshot(world.runtime).keys[pinned["key"]["key_id"]].tier == "bronze"
    world.api("globex-admin").post(
        path, {"project_id": globex_project, "name": "k", "tier": "silver"}
    )
    problem = world.api("globex-admin").post(
        path, {"project_id": globex_project, "name": "k", "tier": "gold"}, expect=400
    )
    assert problem["errors"][0]["field"] == "tier"
    # Another tier of the same priority is not "below": its pools may be kept for it.
    world.admin.post(
        "/api/v1/tiers", {"name": "silver-eu", "priority": 50, "ttft_slo_ms": 2000}, expect=201
    )
    problem = world.api("globex-admin").post(
        path, {"project_id": globex_project, "name": "k", "tier": "silver-eu"}, expect=400
    )
    assert problem["errors"][0]["field"] == "tier"


def test_expiry_is_given_once_and_in_the_future(world: World) -> None:
    body = {"project_id": world.project("acme", "demo"), "name": "k"}
    api = world.api("acme-dev")
    past = (utcnow() - timedelta(days=1)).isoformat()
    future = (utcnow() + timedelta(days=1)).isoformat()

    assert (
        api.post(keys_path(world), {**body, "expires_at": past}, 400)["errors"][0]["field"]
        == "expires_at"
    )
    both = api.post(keys_path(world), {**body, "expires_at": future, "ttl_days": 1}, 400)
    assert both["errors"][0]["field"] == "ttl_days"
    assert (
        api.post(keys_path(world), {**body, "ttl_days": 0}, 400)["errors"][0]["field"] == "ttl_days"
    )
    naive = api.post(keys_path(world), {**body, "expires_at": "2999-01-01T00:00:00"}, 400)
    assert naive["errors"][0]["field"] == "expires_at"
    assert api.post(keys_path(world), {**body, "expires_at": future})["key"]["expires_at"]


def test_an_expiry_past_the_last_representable_day_in_utc_is_refused(world: World) -> None:
    """9999-12-31T23:59:59-12:00 is a valid time that UTC cannot hold: it was a 500."""
    body = {"project_id": world.project("acme", "demo"), "name": "k"}
    api = world.api("acme-dev")
    late = api.post(keys_path(world), {**body, "expires_at": "9999-12-31T23:59:59-12:00"}, 400)
    assert late["errors"] == [
        {"field": "expires_at", "message": "expires_at is out of range", "source": "body"}
    ]
    year = utcnow().year + 2
    east = api.post(keys_path(world), {**body, "expires_at": f"{year}-01-01T09:00:00+09:00"})
    assert east["key"]["expires_at"] == f"{year}-01-01T00:00:00Z"  # kept, and shown, in UTC


def test_an_expiry_is_at_most_as_far_as_the_longest_ttl(world: World) -> None:
    """``ttl_days`` stops at 3,650; ``expires_at`` let a key live until 9999."""
    body = {"project_id": world.project("acme", "demo"), "name": "k"}
    api = world.api("acme-dev")
    too_far = (utcnow() + timedelta(days=3651)).isoformat()
    refused = api.post(keys_path(world), {**body, "expires_at": too_far}, 400)
    assert refused["errors"][0]["field"] == "expires_at"
    assert "within 3650 days" in refused["errors"][0]["message"]
    just = (utcnow() + timedelta(days=3649)).isoformat()
    assert api.post(keys_path(world), {**body, "expires_at": just})["key"]["expires_at"]


def test_revoked_keys_disappear_from_the_snapshot(world: World) -> None:
    key = world.create_key("acme-dev", "acme", "demo")["key"]["key_id"]
    assert key in snapshot(world.runtime).keys

    revoked = world.api("acme-dev").post(f"{keys_path(world)}/{key}/revoke", expect=200)

    assert revoked["status"] == "revoked"
    assert revoked["revoked_at"] is not None
    assert key not in snapshot(world.runtime).keys
    again = world.api("acme-dev").post(f"{keys_path(world)}/{key}/revoke", expect=200)
    assert again["revoked_at"] == revoked["revoked_at"]
    listed = world.api("acme-dev").get(keys_path(world))
    assert [(k["key_id"], k["status"]) for k in listed] == [(key, "revoked")]


def test_removing_a_member_revokes_the_keys_they_created_and_no_one_elses(world: World) -> None:
    theirs = world.create_key("acme-dev", "acme", "demo")["key"]["key_id"]
    admins = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
    developer = world.user_id("acme", "dev@acme.example")

    world.api("acme-admin").delete(f"/api/v1/tenants/{world.tenant('acme')}/members/{developer}")

    keys = snapshot(world.runtime).keys
    assert theirs not in keys and admins in keys
    listed = world.api("acme-admin").get(keys_path(world))
    assert {k["key_id"]: k["status"] for k in listed} == {theirs: "revoked", admins: "active"}


def test_expired_keys_disappear_from_the_next_snapshot(world: World) -> None:
    key = world.create_key("acme-dev", "acme", "demo", ttl_days=1)["key"]["key_id"]
    with transaction(world.runtime.session_factory) as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.key_id == key)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        mark_config_changed(session)  # the next change, whatever it is, builds the next snapshot
    world.runtime.publish()

    assert key not in snapshot(world.runtime).keys
    assert world.api("acme-dev").get(f"{keys_path(world)}/{key}")["status"] == "expired"
    world.api("acme-dev").post(f"{keys_path(world)}/{key}/rotate", expect=409)


def test_rotating_a_key_issues_a_new_secret_with_the_same_scope(world: World) -> None:
    old = world.create_key("acme-dev", "acme", "demo", allowed_models=["bge-small"], tier="silver")

    rotated = world.api("acme-dev").post(f"{keys_path(world)}/{old['key']['key_id']}/rotate")

    new = rotated["key"]
    assert rotated["secret"] != old["secret"]
    assert new["key_id"] != old["key"]["key_id"]
    for same in ("name", "project_id", "allowed_models", "tier", "created_by"):
        assert new[same] == old["key"][same], same
    keys = snapshot(world.runtime).keys
    assert new["key_id"] in keys
    assert old["key"]["key_id"] not in keys
    assert (
        world.api("acme-dev").get(f"{keys_path(world)}/{old['key']['key_id']}")["status"]
        == "revoked"
    )
    world.api("acme-dev").post(f"{keys_path(world)}/{old['key']['key_id']}/rotate", expect=409)


def test_developers_manage_their_own_keys_and_tenant_admins_all_of_them(world: World) -> None:
    world.api("acme-admin").post(
        f"/api/v1/tenants/{world.tenant('acme')}/members",
        {"email": "dev2@acme.example", "role": "developer"},
    )
    world.tokens["acme-dev2"] = world.api(None).post(
        "/api/v1/auth/dev-login", {"email": "dev2@acme.example"}
    )["access_token"]
    mine = world.create_key("acme-dev", "acme", "demo", name="mine")["key"]["key_id"]
    theirs = world.create_key("acme-dev2", "acme", "demo", name="theirs")["key"]["key_id"]

    assert [k["key_id"] for k in world.api("acme-dev").get(keys_path(world))] == [mine]
    for action in ("", "/revoke", "/rotate"):
        method = "GET" if not action else "POST"
        world.api("acme-dev").call(method, f"{keys_path(world)}/{theirs}{action}", 404)
    assert {k["key_id"] for k in world.api("acme-admin").get(keys_path(world))} == {mine, theirs}
    world.api("acme-admin").post(f"{keys_path(world)}/{theirs}/revoke", expect=200)


def test_keys_are_filtered_by_project(world: World) -> None:
    acme = world.tenant("acme")
    other = world.api("acme-admin").post(f"/api/v1/tenants/{acme}/projects", {"name": "other"})
    world.create_key("acme-admin", "acme", "demo")
    in_other = world.create_key("acme-admin", "acme", "other")["key"]["key_id"]

    listed = world.api("acme-admin").get(keys_path(world), params={"project_id": other["id"]})
    assert [k["key_id"] for k in listed] == [in_other]


def test_keys_created_in_a_batch_are_all_or_none_and_published_once(world: World) -> None:
    """Provisioning many keys a call at a time rebuilt the configuration for every key."""
    project = world.project("acme", "demo")
    dev = world.api("acme-dev")
    published = snapshot(world.runtime).version
    body = {"keys": [{"project_id": project, "name": f"bulk-{i}"} for i in range(3)]}
    created = dev.post(f"{keys_path(world)}/batch", body)

    assert [c["key"]["name"] for c in created] == ["bulk-0", "bulk-1", "bulk-2"]
    keys = snapshot(world.runtime).keys
    for c in created:
        assert verify(
            world.runtime.server_secret, c["secret"], keys[c["key"]["key_id"]].secret_hash
        )
    assert snapshot(world.runtime).version == published + 1  # one publish for the three

    listed = len(dev.get(keys_path(world)))
    bad = {
        "keys": [{"project_id": project, "name": "fine"}, {"project_id": random_id(), "name": "x"}]
    }
    problem = dev.post(f"{keys_path(world)}/batch", bad, expect=404)
    assert problem["errors"][0]["field"] == "keys[1].project_id"
    assert len(dev.get(keys_path(world))) == listed  # the first was not kept either
    too_many = {"keys": [{"project_id": project, "name": "k"}] * 1001}
    dev.post(f"{keys_path(world)}/batch", too_many, expect=400)
    world.api("globex-admin").post(f"{keys_path(world)}/batch", body, expect=404)  # not theirs


def test_a_whole_key_pasted_for_its_id_is_echoed_neither_in_the_answer_nor_in_the_log(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer said to treat the secret as exposed, and the access log line and the
    problem's ``instance`` wrote it out whole. Its public id stays: it names the key."""
    created = world.create_key("acme-admin", "acme", "demo")
    secret, key_id = created["secret"], created["key"]["key_id"]
    token = world.tokens["acme-admin"]
    caplog.set_level(logging.INFO, logger="trunkline.controlplane")
    headers = world.api("acme-admin").headers
    for method, suffix in (
        ("GET", ""),
        ("POST", "/revoke"),
        ("POST", "/rotate"),
        ("GET", "/quota"),
    ):
        url = f"{keys_path(world)}/{secret}{suffix}"
        response = world.client.request(method, url, headers=headers)
        assert response.status_code == 404, response.text
        assert secret not in response.text and f"tlk_{key_id}_" in response.json()["instance"]
    world.client.get(f"/api/v1/auth/{token}", headers=headers)  # a token pasted in a path
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"tlk_{key_id}_" in logged
    assert secret.split("_")[2] not in logged and token.split("_")[2] not in logged


def test_an_access_token_pasted_for_a_key_id_is_not_echoed_in_the_answer(world: World) -> None:
    """The caller's own access token (tlu_…), pasted where a key id goes, came back whole in the
    problem's ``detail`` and ``errors``, with no word that it is exposed."""
    token = world.tokens["acme-admin"]
    for method, suffix in (("GET", ""), ("POST", "/revoke"), ("GET", "/quota")):
        response = world.client.request(
            method, f"{keys_path(world)}/{token}{suffix}", headers=world.api("acme-admin").headers
        )
        assert response.status_code == 404, response.text
        assert token.split("_")[2] not in response.text
        assert "treat the secret as exposed" in response.json()["detail"]
