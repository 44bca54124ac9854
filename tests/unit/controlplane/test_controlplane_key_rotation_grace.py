"""Rotating a key with a grace (``POST …/rotate?grace_s=N``): the old key keeps working beside
its successor for N seconds, so its clients move over without an outage. Before, rotation
revoked the old key at once: every client still holding it got 401 from the next snapshot on."""

from __future__ import annotations

from datetime import datetime, timedelta

from cp_support import World, problem_of, snapshot

from trunkline.kit.ids import utcnow


def _keys(world: World) -> str:
    return f"/api/v1/tenants/{world.tenant('acme')}/keys"


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_old_key_works_until_its_grace_ends_beside_its_successor(world: World) -> None:
    old = world.create_key("acme-dev", "acme", "demo")["key"]["key_id"]
    before = utcnow()
    rotated = world.api("acme-dev").post(f"{_keys(world)}/{old}/rotate?grace_s=3600")
    after = utcnow()
    new = rotated["key"]["key_id"]

    kept = world.api("acme-dev").get(f"{_keys(world)}/{old}")
    assert (kept["status"], kept["revoked_at"]) == ("active", None)
    ends = _when(kept["expires_at"])
    assert before + timedelta(hours=1) <= ends <= after + timedelta(hours=1)
    assert rotated["key"]["expires_at"] is None  # the successor keeps the old key's own expiry
    gateways = snapshot(world.runtime).keys
    assert gateways[old].expires_at == ends.timestamp()  # a gateway refuses it from then on
    assert new in gateways

    again = world.client.post(f"{_keys(world)}/{old}/rotate", headers=world.api("acme-dev").headers)
    assert "rotated already" in problem_of(again, 409)["detail"]
    world.api("acme-dev").post(f"{_keys(world)}/{old}/revoke", expect=200)
    assert old not in snapshot(world.runtime).keys


def test_a_grace_never_makes_a_key_live_longer_than_it_was_to(world: World) -> None:
    soon = (utcnow() + timedelta(minutes=5)).isoformat()
    old = world.create_key("acme-dev", "acme", "demo", expires_at=soon)["key"]
    rotated = world.api("acme-dev").post(f"{_keys(world)}/{old['key_id']}/rotate?grace_s=86400")

    kept = world.api("acme-dev").get(f"{_keys(world)}/{old['key_id']}")
    assert _when(kept["expires_at"]) == _when(old["expires_at"])
    assert _when(rotated["key"]["expires_at"]) == _when(old["expires_at"])


def test_a_grace_past_seven_days_or_below_zero_is_refused_and_rotates_nothing(
    world: World,
) -> None:
    old = world.create_key("acme-dev", "acme", "demo")["key"]["key_id"]
    for grace in (-1, 7 * 24 * 3600 + 1):
        refused = world.client.post(
            f"{_keys(world)}/{old}/rotate?grace_s={grace}", headers=world.api("acme-dev").headers
        )
        assert "grace_s" in problem_of(refused, 400)["detail"]
    assert [k["key_id"] for k in world.api("acme-dev").get(_keys(world))] == [old]
