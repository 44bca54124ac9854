"""Which models a key sees and may call: its tenant's entitlements narrowed by the key, placement
by tier and region, served names called back, and refusals that reveal no other tenant's models."""

from __future__ import annotations

import json

import msgspec
import pytest
from tests.unit.gateway.conftest import TENANT_A, TENANT_B, Harness
from tests.unit.gateway.test_gateway import (
    CHAT,
    _ready,
    _wait_for_version,
    assert_openai_error,
    auth,
)
from tests.unit.gateway.upstreams import chat_any

from trunkline.snapshot import AliasEntry, CascadeEntry


def test_models_lists_only_what_the_key_may_use(make_gateway) -> None:
    gw: Harness = make_gateway(chat_any)
    key = gw.world.add_key()
    narrow = gw.world.add_key(allowed=frozenset({"bge"}))
    gw.world.publish()
    _wait_for_version(gw)
    ids = [m["id"] for m in gw.client.get("/v1/models", headers=auth(key)).json()["data"]]
    assert ids == ["bge", "llama"]
    ids = [m["id"] for m in gw.client.get("/v1/models", headers=auth(narrow)).json()["data"]]
    assert ids == ["bge"]


def test_a_models_created_is_its_alias_and_not_the_last_configuration_change(
    make_gateway,
) -> None:  # type: ignore[no-untyped-def]
    """It was the snapshot's publication time: it changed whenever any tenant made a key, and
    told every tenant when that was."""
    gw: Harness = make_gateway(chat_any)
    gw.world.aliases["llama"] = msgspec.structs.replace(
        gw.world.aliases["llama"], created=1_700_000_000
    )
    key = gw.world.add_key()
    gw.world.publish()
    _wait_for_version(gw)
    before = gw.client.get("/v1/models/llama", headers=auth(key)).json()["created"]
    gw.world.add_key(TENANT_B)
    gw.world.publish()
    _wait_for_version(gw)
    listed = gw.client.get("/v1/models", headers=auth(key)).json()["data"]
    assert before == 1_700_000_000
    assert [m["created"] for m in listed if m["id"] == "llama"] == [before]


def test_a_model_says_how_many_tokens_fit_its_context_as_vllm_does(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """Clients size prompts by vLLM's ``max_model_len``; the gateway's entries had none. A
    cascade fits what its large model fits (a prompt over the small one's goes there)."""
    gw: Harness = make_gateway(chat_any)
    aliases = gw.world.aliases
    aliases["llama"] = msgspec.structs.replace(aliases["llama"], context_length=8192)
    small = msgspec.structs.replace(aliases["llama"], alias="auto", context_length=4096)
    aliases["auto"] = msgspec.structs.replace(
        small, cascade=CascadeEntry("big-served", aliases["llama"].pools, context_length=131072)
    )
    gw.world.tenants[TENANT_A] = msgspec.structs.replace(
        gw.world.tenants[TENANT_A], aliases=gw.world.tenants[TENANT_A].aliases | {"auto"}
    )
    key = gw.world.add_key()
    gw.world.publish()
    _wait_for_version(gw)
    listed = gw.client.get("/v1/models", headers=auth(key)).json()["data"]
    fits = {m["id"]: m.get("max_model_len") for m in listed}
    assert fits == {"auto": 131072, "bge": None, "llama": 8192}  # bge: its context not known
    assert gw.client.get("/v1/models/llama", headers=auth(key)).json()["max_model_len"] == 8192


def test_a_cascade_whose_large_context_is_unknown_lists_no_max_model_len(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """A prompt over the small model's context goes to the large one, whose context is not
    known: the small one's length, listed as the alias's, made clients cut prompts the alias
    takes."""
    gw: Harness = make_gateway(chat_any)
    aliases = gw.world.aliases
    small = msgspec.structs.replace(aliases["llama"], alias="auto", context_length=4096)
    aliases["auto"] = msgspec.structs.replace(
        small, cascade=CascadeEntry("big-served", aliases["llama"].pools, context_length=None)
    )
    gw.world.tenants[TENANT_A] = msgspec.structs.replace(
        gw.world.tenants[TENANT_A], aliases=gw.world.tenants[TENANT_A].aliases | {"auto"}
    )
    key = gw.world.add_key()
    gw.world.publish()
    _wait_for_version(gw)
    assert "max_model_len" not in gw.client.get("/v1/models/auto", headers=auth(key)).json()


def test_unknown_and_unentitled_models_are_alike_404_and_a_key_narrowing_is_403(
    make_gateway,
) -> None:
    gw, key = _ready(make_gateway)
    r = gw.client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"}, headers=auth(key))
    unknown = assert_openai_error(r, 404, "model_not_found")
    assert unknown["param"] == "model"
    r = gw.client.post(
        "/v1/chat/completions", json={**CHAT, "model": "secret-model"}, headers=auth(key)
    )
    # another tenant's alias is refused as if it did not exist: the refusal does not reveal it
    unentitled = assert_openai_error(r, 404, "model_not_found")
    assert unentitled["message"] == unknown["message"].replace("gpt-9", "secret-model")
    narrow = gw.world.add_key(allowed=frozenset({"bge"}))
    gw.world.publish()
    _wait_for_version(gw)
    assert_openai_error(
        gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(narrow)),
        403,
        "model_not_allowed",
    )
    r = gw.client.post("/v1/embeddings", json={"model": "llama", "input": "x"}, headers=auth(key))
    assert_openai_error(r, 400, "model_not_supported")
    assert gw.upstream == []


def test_a_model_placed_only_for_other_tiers_or_regions_is_403_and_not_listed(
    make_gateway,
) -> None:
    gw, key = _ready(make_gateway)
    for name in ("h100-eu", "l40s-us"):  # every pool of llama kept for another tier
        gw.world.pools[name] = msgspec.structs.replace(gw.world.pools[name], tiers=("platinum",))
    gw.world.publish()
    _wait_for_version(gw)
    r = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    error = assert_openai_error(r, 403, "no_pool_for_tenant")
    assert "retry-after" not in r.headers  # not a condition that clears by waiting
    assert (error["param"], "gold" in error["message"]) == ("model", True)
    ids = [m["id"] for m in gw.client.get("/v1/models", headers=auth(key)).json()["data"]]
    assert ids == ["bge"]

    # One pool open to gold again, but empty: that may clear (scaled to zero), so 503.
    gw.world.pools["l40s-us"] = msgspec.structs.replace(
        gw.world.pools["l40s-us"], tiers=("gold",), endpoints=()
    )
    gw.world.publish()
    _wait_for_version(gw)
    r = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert_openai_error(r, 503, "no_endpoint")
    assert gw.upstream == []


def test_a_model_s_served_name_from_its_answers_can_be_called_back(make_gateway) -> None:
    gw, key = _ready(make_gateway)
    answered = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    served = answered.json()["model"]
    assert served == "llama-8b-served"  # answers carry the served name (the engine's)
    again = gw.client.post(
        "/v1/chat/completions", json={**CHAT, "model": served}, headers=auth(key)
    )
    assert again.status_code == 200, again.text
    assert json.loads(gw.upstream[-1].content)["model"] == served
    assert [record.alias for record in gw.drain_usage()] == ["llama", "llama"]  # metered alike
    # another tenant's alias bearing that name changes nothing for this one
    gw.world.aliases[served] = AliasEntry(served, "other-served", "chat", ("h100-eu",))
    gw.world.publish()
    _wait_for_version(gw)
    still = gw.client.post(
        "/v1/chat/completions", json={**CHAT, "model": served}, headers=auth(key)
    )
    assert still.status_code == 200 and json.loads(gw.upstream[-1].content)["model"] == served
    narrow = gw.world.add_key(allowed=frozenset({"bge"}))  # the tenant's, but not this key's
    gw.world.publish()
    _wait_for_version(gw)
    narrowed = gw.client.post(
        "/v1/chat/completions", json={**CHAT, "model": served}, headers=auth(narrow)
    )
    assert_openai_error(narrowed, 403, "model_not_allowed")


@pytest.mark.parametrize("model", ["small-served", "big-served"])
def test_a_cascade_s_models_are_not_called_by_served_name_through_the_cascade(
    make_gateway, model
) -> None:
    gw, key = _ready(make_gateway)
    gw.world.aliases["auto"] = AliasEntry(
        "auto", "small-served", "chat", ("h100-eu",), CascadeEntry("big-served", ("h100-eu",))
    )
    gw.world.tenants[TENANT_A] = msgspec.structs.replace(
        gw.world.tenants[TENANT_A], aliases=frozenset({"llama", "bge", "auto"})
    )
    gw.world.publish()
    _wait_for_version(gw)
    # entitled to the cascade alone: its models are reached only through its checks
    r = gw.client.post("/v1/chat/completions", json={**CHAT, "model": model}, headers=auth(key))
    assert_openai_error(r, 404, "model_not_found")


def test_a_model_is_retrieved_only_by_a_key_that_may_use_it(make_gateway) -> None:
    gw: Harness = make_gateway(chat_any)
    key = gw.world.add_key()
    narrow = gw.world.add_key(allowed=frozenset({"bge"}))
    globex = gw.world.add_key(TENANT_B)
    gw.world.publish()
    _wait_for_version(gw)
    listed = gw.client.get("/v1/models", headers=auth(key)).json()["data"]
    one = gw.client.get("/v1/models/llama", headers=auth(key))
    assert one.status_code == 200
    assert one.json() == next(m for m in listed if m["id"] == "llama")
    # Another tenant's model, a model the key may not use and no model at all look the same.
    for caller, model in ((key, "secret-model"), (narrow, "llama"), (key, "nope/x")):
        error = assert_openai_error(
            gw.client.get(f"/v1/models/{model}", headers=auth(caller)), 404, "model_not_found"
        )
        assert error["param"] == "model" and model in error["message"]
    assert gw.client.get("/v1/models/secret-model", headers=auth(globex)).status_code == 200
    assert_openai_error(gw.client.get("/v1/models/llama"), 401, "invalid_api_key")


def test_refusals_of_keys_models_and_paths_carry_openais_error_type(make_gateway) -> None:
    """OpenAI types a bad key (401), a model refused (403) or unknown (404) and a wrong path or
    method ``invalid_request_error``; clients and proxies that sort errors by type took
    ``authentication_error`` / ``permission_error`` / ``not_found_error`` for a foreign API's."""
    gw, key = _ready(make_gateway)
    narrow = gw.world.add_key(allowed=frozenset({"bge"}))
    gw.world.publish()
    _wait_for_version(gw)
    post = gw.client.post
    refusals = [
        (post("/v1/chat/completions", json=CHAT), 401, "invalid_api_key"),
        (post("/v1/chat/completions", json=CHAT, headers=auth("tlk_x")), 401, "invalid_api_key"),
        (post("/v1/chat/completions", json=CHAT, headers=auth(narrow)), 403, "model_not_allowed"),
        (
            post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"}, headers=auth(key)),
            404,
            "model_not_found",
        ),
        (gw.client.get("/v1/models/gpt-9", headers=auth(key)), 404, "model_not_found"),
        (gw.client.get("/v1/nope", headers=auth(key)), 404, "unknown_url"),
        (gw.client.get("/v1/chat/completions", headers=auth(key)), 405, "method_not_allowed"),
    ]
    for response, status, code in refusals:
        assert assert_openai_error(response, status, code)["type"] == "invalid_request_error"
