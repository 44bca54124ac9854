"""Rotating the server secret at the gateway: keys hashed under a secret the operator lists in
``TRUNKLINE_SECURITY__PREVIOUS_KEY_HASH_SECRETS`` keep working beside those under the new one.
Before, changing ``TRUNKLINE_SECURITY__KEY_HASH_SECRET`` made every key answer 401."""

from __future__ import annotations

from tests.unit.gateway.conftest import PROJECT_A, SECRET, TENANT_A, Harness
from tests.unit.gateway.test_gateway import _wait_for_version, assert_openai_error, auth
from tests.unit.gateway.upstreams import chat_any

from trunkline.auth.secrets import API_KEY_PREFIX, issue
from trunkline.snapshot import KeyEntry

OLD = b"the-secret-this-platform-used-until-today-0123"


def _key_under(gw: Harness, secret: bytes) -> str:
    issued = issue(secret, API_KEY_PREFIX)
    gw.world.keys[issued.public_id] = KeyEntry(
        issued.public_id, issued.digest, TENANT_A, PROJECT_A, None, None, None
    )
    gw.world.publish()
    _wait_for_version(gw)
    return issued.plaintext


def test_a_gateway_accepts_keys_hashed_under_a_previous_secret_it_is_given(make_gateway) -> None:
    gw: Harness = make_gateway(chat_any, previous_secrets=(OLD,))
    before, after = _key_under(gw, OLD), _key_under(gw, SECRET)
    assert gw.client.get("/v1/models", headers=auth(before)).status_code == 200
    assert gw.client.get("/v1/models", headers=auth(after)).status_code == 200
    stranger = _key_under(gw, b"a-secret-this-platform-never-had-000000000")
    assert_openai_error(gw.client.get("/v1/models", headers=auth(stranger)), 401, "invalid_api_key")


def test_once_the_previous_secret_is_dropped_its_keys_are_refused(make_gateway) -> None:
    gw: Harness = make_gateway(chat_any)
    before = _key_under(gw, OLD)
    assert_openai_error(gw.client.get("/v1/models", headers=auth(before)), 401, "invalid_api_key")
