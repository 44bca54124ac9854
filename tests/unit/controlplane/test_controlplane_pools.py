"""Pools as catalog objects, aliases with their own pools or a cascade, and tenant cache
isolation, through the control-plane API and into the gateway snapshot."""

from __future__ import annotations

import pytest
from cp_support import CATALOG, POOL, SERVER_SECRET, World, snapshot

from trunkline.gateway.routing import eligible
from trunkline.snapshot import TenantEntry
from trunkline.snapshot.builder import build_snapshot, tenant_cache_salt


def test_a_pool_carries_cost_capacity_rate_and_kv_event_addresses(world: World) -> None:
    admin = world.admin
    pool = admin.post(CATALOG + "/pools", {**POOL, "capacity": 4, "tokens_per_s": 2400.0})
    assert (pool["cost_per_hour"], pool["own_cost_per_hour"]) == (3.5, None)  # the flavor's
    endpoints = [
        {
            "url": "http://10.0.0.7:8000",
            "kv_events": "tcp://10.0.0.7:5557",
            "kv_replay": "tcp://10.0.0.7:5558",
        },
        "http://10.0.0.8:8000",
    ]
    pool = admin.put(CATALOG + "/pools/a100-eu/endpoints", {"urls": endpoints})
    assert [(e["url"], e["kv_events"], e["kv_replay"]) for e in pool["endpoints"]] == [
        ("http://10.0.0.7:8000", "tcp://10.0.0.7:5557", "tcp://10.0.0.7:5558"),
        ("http://10.0.0.8:8000", None, None),
    ]

    entry = snapshot(world.runtime).pools["a100-eu"]
    assert (entry.cost_per_hour, entry.capacity, entry.tokens_per_s) == (3.5, 4, 2400.0)
    assert [(e.kv_events, e.kv_replay) for e in entry.endpoints] == [
        ("tcp://10.0.0.7:5557", "tcp://10.0.0.7:5558"),
        (None, None),
    ]
    # A replay address alone replays nothing: refused, and the endpoints stay as they were.
    lone = [{"url": "http://10.0.0.9:8000", "kv_replay": "tcp://10.0.0.9:5558"}]
    problem = admin.put(CATALOG + "/pools/a100-eu/endpoints", {"urls": lone}, expect=400)
    [error] = problem["errors"]
    assert error["field"] == "urls[0]" and "`kv_replay` needs `kv_events`" in error["message"]
    same = [{"url": "http://10.0.0.9:8000", "kv_events": "tcp://h:1", "kv_replay": "tcp://h:1"}]
    problem = admin.put(CATALOG + "/pools/a100-eu/endpoints", {"urls": same}, expect=400)
    assert "must differ from `kv_events`" in problem["errors"][0]["message"]
    for address in ("tcp://*:5557", "tcp://10.0.0.9"):  # vLLM's bind form; no port
        wrong = [{"url": "http://10.0.0.9:8000", "kv_events": address}]
        problem = admin.put(CATALOG + "/pools/a100-eu/endpoints", {"urls": wrong}, expect=400)
        assert problem["errors"][0]["field"] == "urls[0].kv_events"
    assert len(snapshot(world.runtime).pools["a100-eu"].endpoints) == 2

    assert admin.patch(CATALOG + "/pools/a100-eu", {"cost_per_hour": 2.9})["cost_per_hour"] == 2.9
    assert snapshot(world.runtime).pools["a100-eu"].cost_per_hour == 2.9
    back = admin.patch(CATALOG + "/pools/a100-eu", {"cost_per_hour": None})
    assert (back["cost_per_hour"], back["own_cost_per_hour"]) == (3.5, None)
    assert snapshot(world.runtime).pools["a100-eu"].cost_per_hour == 3.5

    # The engines' prefill chunk, for the gateway's TTFT prediction.
    assert snapshot(world.runtime).pools["a100-eu"].max_num_batched_tokens is None
    admin.patch(CATALOG + "/pools/a100-eu", {"max_num_batched_tokens": 1024})
    assert snapshot(world.runtime).pools["a100-eu"].max_num_batched_tokens == 1024
    admin.patch(CATALOG + "/pools/a100-eu", {"max_num_batched_tokens": None})
    assert snapshot(world.runtime).pools["a100-eu"].max_num_batched_tokens is None


def test_a_pool_placed_for_long_prompts_reaches_the_snapshot(world: World) -> None:
    admin = world.admin
    pool = admin.post(CATALOG + "/pools", {**POOL, "min_prompt_tokens": 2048})
    assert (pool["min_prompt_tokens"], pool["max_prompt_tokens"]) == (2048, None)
    entry = snapshot(world.runtime).pools["a100-eu"]
    assert (entry.min_prompt_tokens, entry.max_prompt_tokens) == (2048, None)

    short = admin.patch(CATALOG + "/pools/h100-eu-west", {"max_prompt_tokens": 2048})
    assert (short["min_prompt_tokens"], short["max_prompt_tokens"]) == (0, 2048)
    assert snapshot(world.runtime).pools["h100-eu-west"].max_prompt_tokens == 2048
    admin.patch(CATALOG + "/pools/h100-eu-west", {"max_prompt_tokens": None})
    assert snapshot(world.runtime).pools["h100-eu-west"].max_prompt_tokens is None


def test_a_pool_placed_for_gold_reaches_the_snapshot_and_only_gold_is_routed_there(
    world: World,
) -> None:
    admin = world.admin
    pool = admin.post(CATALOG + "/pools", {**POOL, "tiers": ["gold"]})
    assert pool["tiers"] == ["gold"]
    admin.put(CATALOG + "/pools/a100-eu/endpoints", {"urls": ["http://10.0.0.9:8000"]})
    placed = snapshot(world.runtime)
    assert placed.pools["a100-eu"].tiers == ("gold",)
    assert placed.pools["h100-eu-west"].tiers is None  # every tier
    alias = placed.aliases["llama-3.1-8b"]
    gold, silver = (
        {c.pool.name for c in eligible(placed, alias, _tenant(tier), placed.tiers[tier])}
        for tier in ("gold", "silver")
    )
    assert "a100-eu" in gold and "a100-eu" not in silver

    admin.patch(CATALOG + "/pools/a100-eu", {"tiers": None})
    assert snapshot(world.runtime).pools["a100-eu"].tiers is None


@pytest.mark.parametrize(
    ("tiers", "field"),
    [
        (["gold", "platinum"], "tiers[1]"),
        (["silver", "gold", "silver"], "tiers[2]"),
        ([], "tiers"),
        ("gold", "tiers"),
    ],
)
def test_a_pool_placed_for_an_unknown_repeated_or_no_tier_is_refused_and_changes_nothing(
    world: World, tiers: object, field: str
) -> None:
    admin = world.admin
    problem = admin.patch(CATALOG + "/pools/h100-eu-west", {"tiers": tiers}, expect=400)
    assert problem["errors"][0]["field"] == field
    assert snapshot(world.runtime).pools["h100-eu-west"].tiers is None


def _tenant(tier: str) -> TenantEntry:
    return TenantEntry("t", "t", tier, (), frozenset({"llama-3.1-8b"}))


def test_an_empty_prompt_range_is_refused_and_changes_nothing(world: World) -> None:
    admin = world.admin
    problem = admin.post(
        CATALOG + "/pools", {**POOL, "min_prompt_tokens": 4096, "max_prompt_tokens": 4096}, 400
    )
    assert problem["errors"][0]["field"] == "max_prompt_tokens"
    admin.get(CATALOG + "/pools/a100-eu", expect=404)
    admin.patch(CATALOG + "/pools/h100-eu-west", {"min_prompt_tokens": 1024})
    problem = admin.patch(CATALOG + "/pools/h100-eu-west", {"max_prompt_tokens": 512}, expect=400)
    assert "must exceed" in problem["detail"]
    entry = snapshot(world.runtime).pools["h100-eu-west"]
    assert (entry.min_prompt_tokens, entry.max_prompt_tokens) == (1024, None)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"capacity": -1}, "capacity"),
        ({"min_prompt_tokens": -1}, "min_prompt_tokens"),
        ({"max_prompt_tokens": "long"}, "max_prompt_tokens"),
        ({"tokens_per_s": 0}, "tokens_per_s"),
        ({"max_num_batched_tokens": 0}, "max_num_batched_tokens"),
        ({"cost_per_hour": -2}, "cost_per_hour"),
        ({"flavor": "tpu"}, "flavor"),
    ],
)
def test_bad_pool_fields_are_named_in_the_problem(
    world: World, change: dict[str, object], field: str
) -> None:
    problem = world.admin.post(CATALOG + "/pools", {**POOL, **change}, expect=400)
    assert problem["errors"][0]["field"] == field


def test_a_bad_kv_event_address_is_refused(world: World) -> None:
    body = {"urls": [{"url": "http://a:1", "kv_events": "http://not-zmq"}]}
    problem = world.admin.put(CATALOG + "/pools/h100-eu-west/endpoints", body, expect=400)
    assert "kv_events" in problem["errors"][0]["field"]


def test_pools_aliases_and_cache_isolation_are_platform_admin_only(world: World) -> None:
    acme = world.tenant("acme")
    for who in ("acme-admin", "acme-dev", "globex-admin"):
        api = world.api(who)
        api.get(CATALOG + "/aliases", expect=403)
        api.get(CATALOG + "/aliases/llama-3.1-8b", expect=403)
        api.patch(CATALOG + "/aliases/llama-3.1-8b", {"pools": ["h100-eu-west"]}, expect=403)
        api.post(CATALOG + "/pools", POOL, expect=403)
        api.patch(CATALOG + "/pools/h100-eu-west", {"capacity": 9}, expect=403)
        hidden = 403 if who.startswith("acme") else 404  # another tenant reads as missing
        api.patch(f"/api/v1/tenants/{acme}", {"cache_isolated": False}, expect=hidden)
    world.api(None).get(CATALOG + "/aliases", expect=401)
    assert snapshot(world.runtime).pools["h100-eu-west"].capacity == 0
    assert snapshot(world.runtime).tenants[acme].cache_salt is not None


def test_an_alias_can_be_limited_to_some_pools_of_its_model(world: World) -> None:
    admin = world.admin
    view = admin.patch(CATALOG + "/aliases/llama-3.1-8b", {"pools": ["h100-eu-west"]})
    assert view == {
        "alias": "llama-3.1-8b",
        "model": "llama-3.1-8b-instruct",
        "pools": ["h100-eu-west"],
        "cascade": None,
    }
    assert snapshot(world.runtime).aliases["llama-3.1-8b"].pools == ("h100-eu-west",)

    wrong = admin.patch(CATALOG + "/aliases/llama-3.1-8b", {"pools": ["embed-eu-west"]}, 400)
    assert wrong["errors"][0]["field"] == "pools[0]"
    # An empty list would route the alias nowhere: every tenant would get 503s.
    empty = admin.patch(CATALOG + "/aliases/llama-3.1-8b", {"pools": []}, 400)
    assert empty["errors"][0]["field"] == "pools"
    assert snapshot(world.runtime).aliases["llama-3.1-8b"].pools == ("h100-eu-west",)
    admin.patch(CATALOG + "/aliases/llama-3.1-8b", {"pools": None})
    assert snapshot(world.runtime).aliases["llama-3.1-8b"].pools == ("h100-eu-west", "l40s-us-east")


def test_a_pool_an_alias_lists_is_neither_moved_to_another_model_nor_deleted(
    world: World,
) -> None:
    """Either would leave the alias routing to none of its pools (what an empty list does),
    and every later PATCH of the alias failing on pools the caller did not send."""
    admin = world.admin
    admin.patch(CATALOG + "/aliases/llama-3.1-8b", {"pools": ["h100-eu-west"]})
    before = snapshot(world.runtime).version

    moved = admin.patch(CATALOG + "/pools/h100-eu-west", {"model": "bge-small-en"}, 409)
    assert moved["errors"][0]["field"] == "model"
    assert "llama-3.1-8b" in moved["detail"]
    deleted = admin.delete(CATALOG + "/pools/h100-eu-west", 409)
    assert "llama-3.1-8b" in deleted["detail"]
    assert admin.get(CATALOG + "/pools/h100-eu-west")["model"] == "llama-3.1-8b-instruct"
    assert snapshot(world.runtime).version == before
    assert snapshot(world.runtime).aliases["llama-3.1-8b"].pools == ("h100-eu-west",)

    admin.patch(CATALOG + "/pools/h100-eu-west", {"model": "llama-3.1-8b-instruct"})  # unmoved
    admin.delete(CATALOG + "/pools/l40s-us-east")  # a pool no alias lists
    admin.patch(CATALOG + "/aliases/llama-3.1-8b", {"pools": None})
    admin.delete(CATALOG + "/pools/h100-eu-west")


def test_a_model_in_a_cascade_keeps_a_kind_that_fits_it(world: World) -> None:
    """A cascade needs two generative models of one kind; changing a model's kind under it
    escalated a chat to an embedding model, and made every later PATCH of the alias a 400."""
    admin = world.admin
    admin.post(CATALOG + "/models", {"name": "small-one"})
    admin.post(CATALOG + "/models", {"name": "large-one"})
    cascade = {"escalate_to": "large-one"}
    admin.post(CATALOG + "/aliases", {"alias": "auto", "model": "small-one", "cascade": cascade})
    before = snapshot(world.runtime).version

    for name in ("large-one", "small-one"):
        refused = admin.patch(CATALOG + f"/models/{name}", {"kind": "embedding"}, 409)
        assert refused["errors"][0]["field"] == "kind"
        assert "cascade of alias 'auto'" in refused["detail"]
    assert admin.get(CATALOG + "/models/large-one")["kind"] == "chat"
    assert snapshot(world.runtime).version == before
    admin.patch(CATALOG + "/models/large-one", {"context_length": 4096})  # kind unchanged: fine
    admin.patch(CATALOG + "/aliases/auto", {"cascade": None})
    assert admin.patch(CATALOG + "/models/large-one", {"kind": "embedding"})["kind"] == "embedding"


def test_a_cascading_alias_reaches_the_snapshot_and_can_be_entitled(world: World) -> None:
    admin = world.admin
    admin.post(CATALOG + "/models", {"name": "llama-3.2-1b-instruct", "context_length": 4096})
    admin.post(CATALOG + "/pools", {**POOL, "name": "small-eu", "model": "llama-3.2-1b-instruct"})
    cascade = {"escalate_to": "llama-3.1-8b-instruct", "checks": {"min_mean_logprob": -1.5}}
    admin.post(
        CATALOG + "/aliases",
        {"alias": "llama-auto", "model": "llama-3.2-1b-instruct", "cascade": cascade},
    )
    acme = world.tenant("acme")
    admin.put(f"/api/v1/tenants/{acme}/entitlements/llama-auto")

    published = snapshot(world.runtime)
    entry = published.aliases["llama-auto"]
    assert (entry.model, entry.pools) == ("llama-3.2-1b-instruct", ("small-eu",))
    assert entry.cascade is not None
    assert (entry.cascade.model, entry.cascade.pools) == (
        "llama-3.1-8b-instruct",
        ("h100-eu-west", "l40s-us-east"),
    )
    assert (entry.cascade.on_truncation, entry.cascade.on_refusal) == (True, True)
    assert entry.cascade.min_mean_logprob == -1.5
    # The gateway bounds answers by each model's window (its max_tokens 400, its reservations).
    large_window = admin.get(CATALOG + "/models/llama-3.1-8b-instruct")["context_length"]
    assert (entry.context_length, entry.cascade.context_length) == (4096, large_window)
    assert "llama-auto" in published.tenants[acme].aliases
    shown = admin.get(CATALOG + "/aliases/llama-auto")["cascade"]
    assert shown["checks"]["min_mean_logprob"] == -1.5

    admin.patch(CATALOG + "/aliases/llama-auto", {"cascade": None})
    assert snapshot(world.runtime).aliases["llama-auto"].cascade is None


@pytest.mark.parametrize(
    ("escalate_to", "model"),
    [("llama-3.1-8b-instruct", "llama-3.1-8b-instruct"), ("bge-small-en", "llama-3.1-8b-instruct")],
)
def test_a_cascade_needs_two_generative_models(world: World, escalate_to: str, model: str) -> None:
    body = {"alias": "auto", "model": model, "cascade": {"escalate_to": escalate_to}}
    problem = world.admin.post(CATALOG + "/aliases", body, expect=400)
    assert problem["errors"][0]["field"] == "cascade.escalate_to"
    world.admin.get(CATALOG + "/aliases/auto", expect=404)


def test_tenants_get_distinct_cache_salts_until_they_opt_out(world: World) -> None:
    acme, globex = world.tenant("acme"), world.tenant("globex")
    published = snapshot(world.runtime)
    salts = {published.tenants[t].cache_salt for t in (acme, globex)}
    assert None not in salts and len(salts) == 2

    tenant = world.admin.patch(f"/api/v1/tenants/{acme}", {"cache_isolated": False})
    assert tenant["cache_isolated"] is False
    assert snapshot(world.runtime).tenants[acme].cache_salt is None
    assert snapshot(world.runtime).tenants[globex].cache_salt in salts
    created = world.admin.post(
        "/api/v1/tenants", {"slug": "shared", "name": "Shared", "tier": "bronze",
                            "cache_isolated": False},
    )  # fmt: skip
    assert created["cache_isolated"] is False
    assert snapshot(world.runtime).tenants[created["id"]].cache_salt is None


def test_cache_salts_are_keyed_by_the_server_secret(world: World) -> None:
    acme = world.tenant("acme")
    with world.runtime.session_factory() as session:
        one = build_snapshot(session, 1, cache_secret=SERVER_SECRET.encode())
        two = build_snapshot(session, 2, cache_secret=b"another-secret-after-rotation-xxxxxxxx")
    salt = one.tenants[acme].cache_salt
    assert salt == tenant_cache_salt(SERVER_SECRET.encode(), acme)
    assert salt != two.tenants[acme].cache_salt
    assert SERVER_SECRET not in (salt or "") and acme not in (salt or "")


def test_an_alias_may_not_take_the_name_another_model_answers_with(world: World) -> None:
    """Answers carry the served model name and clients call it back (docs/gateway.md): an
    alias or cascade under another model's name would send those calls to the wrong model."""
    admin = world.admin
    admin.post(CATALOG + "/models", {"name": "small-one"})
    before = snapshot(world.runtime).version

    plain = {"alias": "llama-3.1-8b-instruct", "model": "small-one"}
    problem = admin.post(CATALOG + "/aliases", plain, expect=409)
    assert problem["errors"][0]["field"] == "alias"
    assert "'llama-3.1-8b-instruct' is the name model" in problem["detail"]
    cascade = {**plain, "cascade": {"escalate_to": "llama-3.1-8b-instruct"}}
    assert admin.post(CATALOG + "/aliases", cascade, expect=409)["errors"][0]["field"] == "alias"
    named_small = {"alias": "small-one", "model": "small-one", "cascade": cascade["cascade"]}
    assert admin.post(CATALOG + "/aliases", named_small, expect=409)["errors"][0]["field"] == (
        "alias"
    )
    admin.post(CATALOG + "/models", {"name": "other-one", "aliases": ["small-one"]}, 409)
    admin.get(CATALOG + "/models/other-one", expect=404)
    # A model may not take an alias's name either, nor may an alias move to another model.
    refused = admin.post(CATALOG + "/models", {"name": "llama-3.1-8b"}, expect=409)
    assert refused["errors"][0]["field"] == "name"
    admin.post(CATALOG + "/aliases", {"alias": "small-one", "model": "small-one"})  # its own
    admin.patch(CATALOG + "/aliases/small-one", {"model": "llama-3.1-8b-instruct"}, 409)
    published = snapshot(world.runtime)
    assert "llama-3.1-8b-instruct" not in published.aliases
    assert published.aliases["small-one"].model == "small-one"
    assert published.version == before + 1  # the one alias that was allowed


def test_deleting_a_model_names_what_still_needs_it(world: World) -> None:
    admin = world.admin
    admin.post(CATALOG + "/models", {"name": "small-one"})
    admin.post(CATALOG + "/models", {"name": "large-one"})
    cascade = {"escalate_to": "large-one"}
    admin.post(CATALOG + "/aliases", {"alias": "auto", "model": "small-one", "cascade": cascade})

    refused = admin.delete(CATALOG + "/models/large-one", expect=409)
    assert "cascade 'auto' escalates to" in refused["detail"]
    refused = admin.delete(CATALOG + "/models/llama-3.1-8b-instruct", expect=409)
    assert "served by pools h100-eu-west, l40s-us-east" in refused["detail"]
    admin.delete(CATALOG + "/models/small-one")  # its cascading alias goes with it
    admin.get(CATALOG + "/aliases/auto", expect=404)
    admin.delete(CATALOG + "/models/large-one")


def test_a_refused_alias_is_named_by_the_field_the_caller_sent(world: World) -> None:
    """``POST /catalog/aliases`` named ``aliases``, a field its body does not have; a model
    created with an alias listed twice was a 409 saying the alias already existed."""
    admin = world.admin
    for alias in ("llama-3.1-8b", "bge-small-en"):  # an alias already; another model's name
        body = {"alias": alias, "model": "llama-3.1-8b-instruct"}
        problem = admin.post(CATALOG + "/aliases", body, expect=409)
        assert [e["field"] for e in problem["errors"]] == ["alias"], problem

    body = {"name": "new-chat", "aliases": ["fresh", "llama-3.1-8b"]}
    problem = admin.post(CATALOG + "/models", body, expect=409)
    assert [e["field"] for e in problem["errors"]] == ["aliases[1]"], problem
    body = {"name": "new-chat", "aliases": ["fresh", "bge-small-en"]}
    problem = admin.post(CATALOG + "/models", body, expect=409)
    assert [e["field"] for e in problem["errors"]] == ["aliases[1]"], problem
    body = {"name": "new-chat", "aliases": ["fresh", "fresh"]}
    problem = admin.post(CATALOG + "/models", body, expect=400)
    [error] = problem["errors"]
    assert error["field"] == "aliases[1]" and "listed twice" in error["message"]
    admin.get(CATALOG + "/models/new-chat", expect=404)


def test_moving_an_alias_limited_to_its_models_pools_names_the_model_sent(world: World) -> None:
    """The refusal named ``pools[0]``, a field the caller had not sent, as a 400 about the
    body; as moving a listed pool is, it is a 409 naming ``model``, saying what to send."""
    admin = world.admin
    admin.patch(CATALOG + "/aliases/llama-3.1-8b", {"pools": ["h100-eu-west"]})
    before = snapshot(world.runtime).version

    moved = admin.patch(CATALOG + "/aliases/llama-3.1-8b", {"model": "small-one"}, 400)
    assert moved["errors"][0]["field"] == "model"  # unknown: the body's own field, as before
    admin.post(CATALOG + "/models", {"name": "small-one"})
    moved = admin.patch(CATALOG + "/aliases/llama-3.1-8b", {"model": "small-one"}, 409)
    assert [e["field"] for e in moved["errors"]] == ["model"]
    assert "h100-eu-west" in moved["detail"] and "pools" in moved["detail"]
    assert snapshot(world.runtime).version == before + 1  # the model created, nothing else

    view = admin.patch(CATALOG + "/aliases/llama-3.1-8b", {"model": "small-one", "pools": None})
    assert (view["model"], view["pools"]) == ("small-one", None)


@pytest.mark.parametrize("name", ["org/model/", "org//model", "org/../model", "org/./model"])
def test_a_model_or_alias_name_its_own_url_cannot_reach_is_refused(world: World, name: str) -> None:
    """``/catalog/models/{name}`` and ``/catalog/aliases/{alias}`` lose a trailing or doubled
    ``/`` and ``.`` or ``..`` segments (the router, or the client normalising the URL, even
    as ``%2F``): such a name was taken, and the model or alias could then never be read,
    changed nor deleted, nor an alias granted or revoked."""
    admin = world.admin
    problem = admin.post(CATALOG + "/models", {"name": name}, expect=400)
    assert [e["field"] for e in problem["errors"]] == ["name"]
    body = {"alias": name, "model": "llama-3.1-8b-instruct"}
    problem = admin.post(CATALOG + "/aliases", body, expect=400)
    assert [e["field"] for e in problem["errors"]] == ["alias"]
    body = {"name": "org/model-1.5", "aliases": ["fine", name]}
    problem = admin.post(CATALOG + "/models", body, expect=400)
    assert [e["field"] for e in problem["errors"]] == ["aliases[1]"]


def test_a_model_named_by_organisation_is_reached_at_its_url(world: World) -> None:
    admin = world.admin
    admin.post(CATALOG + "/models", {"name": "org/model-1.5", "aliases": ["org/model"]})
    assert admin.get(CATALOG + "/models/org/model-1.5")["aliases"] == ["org/model"]
    assert admin.get(CATALOG + "/aliases/org/model")["model"] == "org/model-1.5"
    admin.delete(CATALOG + "/aliases/org/model")
    admin.delete(CATALOG + "/models/org/model-1.5")


def test_every_catalog_delete_refused_names_what_it_was_asked_to_delete(world: World) -> None:
    """A pool's refusal named its ``name`` (source ``path``); a model's and a flavor's named no
    field at all."""
    admin = world.admin
    admin.patch(CATALOG + "/aliases/llama-3.1-8b", {"pools": ["h100-eu-west"]})
    admin.post(CATALOG + "/models", {"name": "small-one"})
    admin.post(CATALOG + "/models", {"name": "large-one"})
    cascade = {"escalate_to": "large-one"}
    admin.post(CATALOG + "/aliases", {"alias": "auto", "model": "small-one", "cascade": cascade})
    for path in (
        "/pools/h100-eu-west",  # an alias lists it
        "/models/llama-3.1-8b-instruct",  # pools serve it
        "/models/large-one",  # a cascade escalates to it
        "/flavors/h100",  # pools run on it
    ):
        problem = admin.delete(CATALOG + path, expect=409)
        assert problem.get("errors") == [
            {"field": "name", "message": problem["detail"], "source": "path"}
        ], path


def test_moving_a_cascade_onto_the_model_it_escalates_to_names_the_model_sent(
    world: World,
) -> None:
    """The refusal named ``cascade.escalate_to``, which the caller had not sent."""
    admin = world.admin
    admin.post(CATALOG + "/models", {"name": "small-one"})
    cascade = {"escalate_to": "llama-3.1-8b-instruct"}
    admin.post(CATALOG + "/aliases", {"alias": "auto", "model": "small-one", "cascade": cascade})
    body = {"model": "llama-3.1-8b-instruct"}
    problem = admin.patch(CATALOG + "/aliases/auto", body, expect=400)
    assert [e["field"] for e in problem["errors"]] == ["model"]
    problem = admin.patch(CATALOG + "/aliases/auto", {**body, "cascade": cascade}, expect=400)
    assert [e["field"] for e in problem["errors"]] == ["cascade.escalate_to"]
    assert admin.get(CATALOG + "/aliases/auto")["model"] == "small-one"
