"""Manifests of pools (cost, capacity, rate, KV-event endpoints), cascades and tenant cache
isolation: checked with file, line and field, applied idempotently."""

from __future__ import annotations

from pathlib import Path

import pytest
from cp_support import EXTRA, TENANTS_DIR, snapshot
from sqlalchemy import select

from trunkline.apps.runtime import Runtime
from trunkline.errors import Conflict, InvalidRequest
from trunkline.models import Endpoint, Pool
from trunkline.pools.aliases import alias_row, configure_alias, stored_cascade
from trunkline.pools.lookups import model_row
from trunkline.tenancy.manifests import ManifestError, apply_manifests, load_manifests


def test_pools_cascades_and_cache_isolation_apply_once(
    runtime: Runtime, manifests_dir: Path
) -> None:
    first = apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    version = snapshot(runtime).version

    second = apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)

    assert any(line.startswith("Cascade llama-auto created") for line in first.lines())
    assert second.lines() == ["no changes"]
    assert snapshot(runtime).version == version
    published = snapshot(runtime)
    pool = published.pools["small-eu"]
    assert (pool.cost_per_hour, pool.capacity, pool.tokens_per_s) == (0.55, 6, 5200.0)
    assert (pool.min_prompt_tokens, pool.max_prompt_tokens) == (0, 4096)
    assert [(e.kv_events, e.kv_replay) for e in pool.endpoints] == [
        ("tcp://10.0.0.7:5557", "tcp://10.0.0.7:5558"),
        (None, None),
    ]
    assert published.pools["h100-eu-west"].cost_per_hour == 3.5  # the flavor's price
    alias = published.aliases["llama-auto"]
    assert alias.model == "llama-3.2-1b-instruct" and alias.cascade is not None
    assert (alias.cascade.model, alias.cascade.on_refusal) == ("llama-3.1-8b-instruct", False)
    assert alias.cascade.min_mean_logprob == -1.2
    shared = next(t for t in published.tenants.values() if t.slug == "shared-co")
    acme = next(t for t in published.tenants.values() if t.slug == "acme")
    assert shared.cache_salt is None and acme.cache_salt is not None
    assert shared.aliases == frozenset({"llama-auto"})


def test_changing_a_cascade_or_an_endpoint_address_is_reported(
    runtime: Runtime, manifests_dir: Path
) -> None:
    apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    extra = manifests_dir / "extra.yaml"
    extra.write_text(
        EXTRA.replace("min_mean_logprob: -1.2", "min_mean_logprob: -0.8")
        .replace("tcp://10.0.0.7:5557", "tcp://10.0.0.7:6000")
        .replace("cache_isolated: false", "cache_isolated: true")
    )

    report = apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)

    assert report.lines() == [
        "Pool small-eu updated: http://10.0.0.7:8000 kv_events tcp://10.0.0.7:6000",
        "Cascade llama-auto updated: checks.min_mean_logprob -1.2 -> -0.8",
        "Tenant shared-co updated: cache_isolated False -> True",
    ]
    published = snapshot(runtime)
    assert published.aliases["llama-auto"].cascade.min_mean_logprob == -0.8  # type: ignore[union-attr]
    shared = next(t for t in published.tenants.values() if t.slug == "shared-co")
    assert shared.cache_salt is not None


def test_bad_pools_and_cascades_name_file_line_and_field(manifests_dir: Path) -> None:
    extra = manifests_dir / "extra.yaml"
    extra.write_text(
        EXTRA.replace("capacity: 6", "capacity: -6")
        .replace('kv_events: "tcp://10.0.0.7:5557"', 'kv_events: "http://x"')
        .replace("escalate_to: llama-3.1-8b-instruct", "escalate_to: bge-small-en")
        .replace("min_mean_logprob: -1.2", "min_mean_logprob: 3")
    )
    with pytest.raises(ManifestError) as caught:
        load_manifests(manifests_dir)

    issues = [str(i) for i in caught.value.issues if i.file == str(extra)]
    assert issues == [
        f"{extra}:11: Pool small-eu: capacity: -6 is less than the minimum of 0",
        f"{extra}:15: Pool small-eu: endpoints[0].kv_events: 'http://x' is not tcp://HOST:PORT "
        "with a port from 1 to 65535, or ipc://PATH, without spaces, ',', '=' or '*'",
        f"{extra}:22: Cascade llama-auto: checks.min_mean_logprob: "
        "3 is greater than the maximum of 0",
        f"{extra}:29: Tenant shared-co: models[0]: unknown model alias 'llama-auto'",
    ]
    extra.write_text(
        EXTRA.replace("escalate_to: llama-3.1-8b-instruct", "escalate_to: bge-small-en").replace(
            "max_prompt_tokens: 4096", "max_prompt_tokens: 0"
        )
    )
    with pytest.raises(ManifestError) as caught:
        load_manifests(manifests_dir)
    assert [str(i) for i in caught.value.issues] == [
        f"{extra}:13: Pool small-eu: max_prompt_tokens: must exceed min_prompt_tokens (0)",
        f"{extra}:21: Cascade llama-auto: escalate_to: model 'bge-small-en' serves embeddings, "
        "not text",
    ]


def test_a_pool_endpoint_listed_twice_is_an_issue_at_its_line(manifests_dir: Path) -> None:
    """Applied, one of the two was kept without a word (the last: the KV-event address given
    with the first was dropped)."""
    extra = manifests_dir / "extra.yaml"
    extra.write_text(EXTRA.replace("- http://10.0.0.8:8000", "- http://10.0.0.7:8000"))
    with pytest.raises(ManifestError) as caught:
        load_manifests(manifests_dir)
    assert [str(i) for i in caught.value.issues] == [
        f"{extra}:16: Pool small-eu: endpoints[1]: endpoint 'http://10.0.0.7:8000' listed twice",
    ]


def test_a_cascade_may_not_reuse_a_model_alias(manifests_dir: Path) -> None:
    extra = manifests_dir / "extra.yaml"
    extra.write_text(
        EXTRA.replace("name: llama-auto", "name: llama-3.1-8b").replace("[llama-auto]", "[]")
    )
    with pytest.raises(ManifestError) as caught:
        load_manifests(manifests_dir)
    assert [str(i) for i in caught.value.issues] == [
        f"{extra}:19: Cascade llama-3.1-8b: name: alias 'llama-3.1-8b' already names "
        "'llama-3.1-8b-instruct'",
    ]


def test_a_cascade_may_not_take_over_a_model_alias_applied_from_other_files(
    runtime: Runtime, tmp_path_factory: pytest.TempPathFactory
) -> None:
    apply_manifests(runtime.session_factory, TENANTS_DIR, publish=runtime.publish)
    alone = tmp_path_factory.mktemp("alone")  # the cascade without the model that owns its name
    (alone / "cascade.yaml").write_text(
        "kind: Model\nname: small-one\ncontext_length: 8192\n---\n"
        "kind: Model\nname: big-one\ncontext_length: 8192\n---\n"
        "kind: Cascade\nname: llama-3.1-8b\nmodel: small-one\nescalate_to: big-one\n"
    )
    before = snapshot(runtime)
    with pytest.raises(Conflict, match="already names a model"):
        apply_manifests(runtime.session_factory, alone, publish=runtime.publish)
    after = snapshot(runtime)
    assert after.version == before.version
    assert after.aliases["llama-3.1-8b"].cascade is None


def test_a_pool_placed_for_tiers_applies_and_an_unknown_tier_is_named(
    runtime: Runtime, manifests_dir: Path
) -> None:
    extra = manifests_dir / "extra.yaml"
    extra.write_text(
        EXTRA.replace(
            "max_prompt_tokens: 4096", "tiers: [silver, bronze]\nmax_num_batched_tokens: 1024"
        )
    )
    apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    assert snapshot(runtime).pools["small-eu"].tiers == ("bronze", "silver")
    assert snapshot(runtime).pools["small-eu"].max_num_batched_tokens == 1024

    extra.write_text(
        EXTRA.replace("max_prompt_tokens: 4096", "tiers: [gold, platinum, gold]").replace(
            "tier: bronze", "tier: bronze\nregions: [eu-west, eu-west]"
        )
    )
    with pytest.raises(ManifestError) as caught:
        load_manifests(manifests_dir)
    assert [str(i) for i in caught.value.issues] == [
        f"{extra}:13: Pool small-eu: tiers[1]: unknown tier 'platinum'",
        f"{extra}:13: Pool small-eu: tiers[2]: tier 'gold' listed twice",
        f"{extra}:28: Tenant shared-co: regions[1]: region 'eu-west' listed twice",
    ]
    assert snapshot(runtime).pools["small-eu"].tiers == ("bronze", "silver")


def test_a_pool_an_alias_lists_is_not_moved_to_another_model_by_a_manifest(
    runtime: Runtime, manifests_dir: Path
) -> None:
    apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    _limit_llama_to_h100_eu_west(runtime)
    catalog = manifests_dir / "catalog.yaml"
    text = catalog.read_text()
    start = text.index("name: h100-eu-west")
    moved = text[start:].replace("model: llama-3.1-8b-instruct", "model: llama-3.2-1b-instruct", 1)
    catalog.write_text(text[:start] + moved)

    with pytest.raises(Conflict, match=r"listed in the pools of alias llama-3\.1-8b"):
        apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    assert snapshot(runtime).pools["h100-eu-west"].model == "llama-3.1-8b-instruct"


def test_a_model_manifest_does_not_take_over_a_cascade_or_a_pinned_alias(
    runtime: Runtime, manifests_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """It moved either without a word: the cascade then tried another small model; the alias
    listed pools of its old model and routed nowhere."""
    apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    _limit_llama_to_h100_eu_west(runtime)
    before = snapshot(runtime)
    for alias, refusal in (
        ("llama-auto", "is a cascade"),
        ("llama-3.1-8b", r"limited to pools of its current model \(h100-eu-west\)"),
    ):
        other = tmp_path_factory.mktemp("other")
        (other / "model.yaml").write_text(
            f"kind: Model\nname: other-chat\ncontext_length: 8192\naliases: [{alias}]\n"
        )
        with pytest.raises(Conflict, match=refusal):
            apply_manifests(runtime.session_factory, other, publish=runtime.publish)
    after = snapshot(runtime)
    assert after.version == before.version
    assert (after.aliases["llama-auto"].model, after.aliases["llama-3.1-8b"].model) == (
        "llama-3.2-1b-instruct",
        "llama-3.1-8b-instruct",
    )


def _limit_llama_to_h100_eu_west(runtime: Runtime) -> None:
    """Limit alias llama-3.1-8b to one pool of its model, as the alias API can."""
    with runtime.session_factory() as session, session.begin():
        configure_alias(
            session,
            alias_row(session, "llama-3.1-8b"),
            model_row(session, "llama-3.1-8b-instruct"),
            ["h100-eu-west"],
            None,
        )


def test_an_alias_or_cascade_may_not_take_another_models_name(manifests_dir: Path) -> None:
    extra = manifests_dir / "extra.yaml"
    extra.write_text(
        EXTRA.replace("name: llama-auto", "name: llama-3.2-1b-instruct")
        .replace("[llama-auto]", "[]")
        .replace("131072", "131072\naliases: [llama-3.1-8b-instruct]")
    )
    with pytest.raises(ManifestError) as caught:
        load_manifests(manifests_dir)
    assert [str(i) for i in caught.value.issues] == [
        f"{extra}:4: Model llama-3.2-1b-instruct: aliases[0]: 'llama-3.1-8b-instruct' is the "
        "name model 'llama-3.1-8b-instruct' answers with: clients calling it back must reach that "
        "model alone",
        f"{extra}:20: Cascade llama-3.2-1b-instruct: name: 'llama-3.2-1b-instruct' is the name "
        "model 'llama-3.2-1b-instruct' answers with: clients calling it back must reach that "
        "model alone",
    ]


def test_a_model_may_not_take_the_name_of_an_alias_applied_from_other_files(
    runtime: Runtime, tmp_path_factory: pytest.TempPathFactory
) -> None:
    apply_manifests(runtime.session_factory, TENANTS_DIR, publish=runtime.publish)
    alone = tmp_path_factory.mktemp("alone")
    (alone / "model.yaml").write_text("kind: Model\nname: llama-3.1-8b\ncontext_length: 8192\n")
    before = snapshot(runtime)
    with pytest.raises(Conflict, match=r"'llama-3\.1-8b' is already an alias"):
        apply_manifests(runtime.session_factory, alone, publish=runtime.publish)
    assert snapshot(runtime).version == before.version


def test_an_endpoints_password_is_not_written_in_the_report(
    runtime: Runtime, manifests_dir: Path
) -> None:
    extra = manifests_dir / "extra.yaml"
    extra.write_text(EXTRA.replace("- http://10.0.0.8:8000", "- http://proxy:s3cret@10.0.0.8:8000"))

    report = apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)

    assert "s3cret" not in "\n".join(report.lines())
    assert any("+http://proxy:…@10.0.0.8:8000" in line for line in report.lines())
    urls = [e.url for e in snapshot(runtime).pools["small-eu"].endpoints]
    assert "http://proxy:s3cret@10.0.0.8:8000" in urls  # the gateway still has it whole


def test_an_endpoint_copied_from_the_report_with_its_password_masked_is_named_at_its_line(
    runtime: Runtime, manifests_dir: Path
) -> None:
    """The refusal named the API's field (``urls[1]``), which no manifest has, and so the
    document's first line: the reader had to find the endpoint themselves."""
    extra = manifests_dir / "extra.yaml"
    extra.write_text(EXTRA.replace("- http://10.0.0.8:8000", "- http://proxy:…@10.0.0.8:8000"))

    with pytest.raises(InvalidRequest) as caught:
        apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)

    assert caught.value.message.startswith(f"{extra}:16: Pool small-eu: endpoint ")
    assert caught.value.param == "endpoints[1]"


def test_the_report_names_models_and_flavors_and_shows_prices_as_written(
    runtime: Runtime, manifests_dir: Path
) -> None:
    """It showed the rows' ids and Python's reprs: ``model_id UUID('6f1c…') -> UUID('3c7f…')``,
    ``cost_per_hour Decimal('3.5000') -> Decimal('3.7500')``."""
    first = apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    assert "Cascade llama-auto created" in first.lines()  # not the columns it set
    extra = manifests_dir / "extra.yaml"
    extra.write_text(
        EXTRA.replace(
            "model: llama-3.2-1b-instruct\nflavor: l40s", "model: small-two\nflavor: h100"
        )
        .replace("cost_per_hour: 0.55", "cost_per_hour: 0.6")
        .replace("model: llama-3.2-1b-instruct\nescalate_to", "model: small-two\nescalate_to")
        .replace("escalate_to: llama-3.1-8b-instruct", "escalate_to: llama-3.2-1b-instruct")
        + "---\nkind: Model\nname: small-two\ncontext_length: 8192\n"
    )
    catalog = manifests_dir / "catalog.yaml"
    catalog.write_text(
        catalog.read_text()
        .replace("cost_per_hour: 3.50", "cost_per_hour: 3.75")
        .replace("type: chat", "type: completion", 1)  # llama-3.1-8b-instruct, no cascade's now
    )

    report = apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)

    assert report.lines() == [
        "Flavor h100 updated: cost_per_hour 3.5 -> 3.75",
        "Model llama-3.1-8b-instruct updated: type 'chat' -> 'completion'",  # not the column
        "Model small-two created",
        "Pool small-eu updated: model 'llama-3.2-1b-instruct' -> 'small-two'; "
        "flavor 'l40s' -> 'h100'; cost_per_hour 0.55 -> 0.6",
        "Cascade llama-auto updated: model 'llama-3.2-1b-instruct' -> 'small-two'; "
        "escalate_to 'llama-3.1-8b-instruct' -> 'llama-3.2-1b-instruct'",
    ]


def test_a_cascade_limited_to_pools_is_not_moved_to_another_model_and_the_model_is_named(
    runtime: Runtime, manifests_dir: Path
) -> None:
    """Refused, as a model's alias limited to pools is, but as an invalid ``pools[0]``, a field
    a Cascade document does not have, at the document's first line."""
    apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    with runtime.session_factory() as session, session.begin():
        row = alias_row(session, "llama-auto")
        small = model_row(session, "llama-3.2-1b-instruct")
        configure_alias(session, row, small, ["small-eu"], stored_cascade(session, row))
    extra = manifests_dir / "extra.yaml"
    extra.write_text(
        EXTRA.replace("model: llama-3.2-1b-instruct\nescalate_to", "model: small-two\nescalate_to")
        + "---\nkind: Model\nname: small-two\ncontext_length: 8192\n"
    )
    before = snapshot(runtime)

    with pytest.raises(Conflict, match=r"limited to pools of its current model \(small-eu\)") as c:
        apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)

    assert c.value.message.startswith(f"{extra}:20: Cascade llama-auto: ")
    assert c.value.param == "model"
    assert snapshot(runtime).version == before.version


def test_an_endpoint_stored_with_a_trailing_slash_keeps_its_id_when_applied_again(
    runtime: Runtime, manifests_dir: Path
) -> None:
    """Rows stored before URLs were kept without trailing slashes: applying the same list (as
    `trunkline up` does at every start) removed each and added it anew under another id, so
    the gateways' state of the engine (its load, requests in flight) started over, and one
    engine stored with and without its slash stayed two rows until then."""
    apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    with runtime.session_factory() as session, session.begin():
        [pool] = session.scalars(select(Pool).where(Pool.name == "small-eu"))
        rows = {
            e.url: e for e in session.scalars(select(Endpoint).where(Endpoint.pool_id == pool.id))
        }
        rows["http://10.0.0.7:8000"].url = "http://10.0.0.7:8000/"
        session.add(Endpoint(pool_id=pool.id, url="http://10.0.0.8:8000//", enabled=True))
        ids = {url.rstrip("/") + "/": row.id for url, row in rows.items()}
    extra = manifests_dir / "extra.yaml"
    extra.write_text(EXTRA.replace("http://10.0.0.8:8000\n", "http://10.0.0.8:8000/\n"))

    report = apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)

    assert report.lines() == [
        "Pool small-eu updated: -http://10.0.0.8:8000//; "
        "http://10.0.0.7:8000/ -> http://10.0.0.7:8000"
    ]
    served = snapshot(runtime).pools["small-eu"].endpoints
    assert [(e.id, e.url, e.kv_events) for e in served] == [
        (str(ids["http://10.0.0.7:8000/"]), "http://10.0.0.7:8000", "tcp://10.0.0.7:5557"),
        (str(ids["http://10.0.0.8:8000/"]), "http://10.0.0.8:8000", None),
    ]
    again = apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    assert again.lines() == ["no changes"]
