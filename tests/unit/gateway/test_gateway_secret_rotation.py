"""Rotating the server secret at the gateway: keys hashed under a secret the operator lists in
``TRUNKLINE_SECURITY__PREVIOUS_KEY_HASH_SECRETS`` keep working beside those under the new one.
Before, changing ``TRUNKLINE_SECURITY__KEY_HASH_SECRET`` made every key answer 401; and a gateway
given another secret than the control plane's refused every key with nothing in its log."""

from __future__ import annotations

import logging

import msgspec
import pytest
from tests.unit.gateway.conftest import PROJECT_A, SECRET, TENANT_A, Harness
from tests.unit.gateway.test_gateway import _wait_for_version, assert_openai_error, auth
from tests.unit.gateway.upstreams import chat_any

from trunkline.auth.secrets import API_KEY_PREFIX, issue, tenant_cache_salt
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


def _salted_under(gw: Harness, secret: bytes) -> None:
    tenant = gw.world.tenants[TENANT_A]
    salt = tenant_cache_salt(secret, TENANT_A)
    gw.world.tenants[TENANT_A] = msgspec.structs.replace(tenant, cache_salt=salt)


def _secret_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "KEY_HASH_SECRET" in r.getMessage()]


def test_a_gateway_given_another_secret_than_the_control_plane_s_says_so_once(
    make_gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw: Harness = make_gateway(chat_any)
    _salted_under(gw, OLD)  # the control plane published under OLD; this gateway has SECRET
    key = _key_under(gw, OLD)
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            refused = gw.client.get("/v1/models", headers=auth(key))
            assert_openai_error(refused, 401, "invalid_api_key")
    lines = _secret_lines(caplog)
    assert len(lines) == 1 and "every API key is refused" in lines[0]
    assert OLD.decode() not in lines[0] and SECRET.decode() not in lines[0]


@pytest.mark.parametrize("previous", [(), (OLD,)])
def test_a_gateway_with_the_control_plane_s_secret_says_nothing_of_it(
    make_gateway, caplog: pytest.LogCaptureFixture, previous: tuple[bytes, ...]
) -> None:
    gw: Harness = make_gateway(chat_any, previous_secrets=previous)
    _salted_under(gw, previous[0] if previous else SECRET)
    _key_under(gw, SECRET)
    with caplog.at_level(logging.ERROR):
        wrong = "tlk_AAAAAAAAAAAA_" + "B" * 40
        assert_openai_error(
            gw.client.get("/v1/models", headers=auth(wrong)), 401, "invalid_api_key"
        )
    assert _secret_lines(caplog) == []
