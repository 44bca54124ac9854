"""Tenants as code: the shipped manifests, their schema, validation errors, idempotent apply."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from cp_support import TENANTS_DIR, make_settings, snapshot
from sqlalchemy import select

from trunkline.apps.embedded import run_embedded
from trunkline.apps.runtime import Runtime
from trunkline.errors import ConfigurationError, Conflict
from trunkline.kit.yamlfile import DuplicateKeyError, load_strict
from trunkline.models import Pool, Project, Tenant
from trunkline.tenancy.changes import mark_config_changed
from trunkline.tenancy.manifests import (
    ManifestError,
    apply_manifests,
    load_manifests,
    manifest_json_schema,
    manifest_json_schema_text,
)


def test_the_committed_schema_is_the_generated_one() -> None:
    committed = (TENANTS_DIR / "schema.json").read_text()
    assert committed == manifest_json_schema_text(), (
        "run: trunkline tenants schema > tenants/schema.json"
    )


def test_the_shipped_manifests_are_valid_under_both_checks() -> None:
    manifests = load_manifests(TENANTS_DIR)

    assert [t.name for t in manifests.tiers] == ["gold", "silver", "bronze"]
    assert {p.name: (p.simulated and p.simulated.replicas) for p in manifests.pools} == {
        "h100-eu-west": 2, "l40s-us-east": 2, "embed-eu-west": 1,
    }  # fmt: skip
    assert {t.slug: t.tier for t in manifests.tenants} == {
        "acme": "gold", "globex": "silver", "initech": "bronze",
    }  # fmt: skip
    schema = manifest_json_schema()
    for file in sorted(TENANTS_DIR.glob("*.yaml")):
        for document in yaml.safe_load_all(file.read_text()):
            jsonschema.validate(document, schema)


BROKEN = """\
kind: Tier
name: gold
priority: 100
ttft_slo_ms: fast
---
kind: Tenant
slug: acme
name: Acme
tier: gold
colour: red
members:
  - email: dev@acme.example
    role: owner
  - role: developer
---
kind: Pool
name: p1
model: missing-model
flavor: h100
region: eu-west
---
kind: Gizmo
name: g
"""


def issues_of(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "broken.yaml").write_text(text)
    with pytest.raises(ManifestError) as caught:
        load_manifests(tmp_path)
    return [str(issue) for issue in caught.value.issues]


def test_every_problem_names_file_line_and_field(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    assert issues_of(tmp_path, BROKEN) == [
        f"{file}:4: Tier gold: ttft_slo_ms: 'fast' is not of type 'integer'",
        f"{file}:10: Tenant acme: colour: unknown field",
        f"{file}:13: Tenant acme: members[0].role: "
        "'owner' is not one of ['developer', 'tenant_admin']",
        f"{file}:14: Tenant acme: members[1].email: is required",
        f"{file}:18: Pool p1: model: unknown model 'missing-model'",
        f"{file}:19: Pool p1: flavor: unknown flavor 'h100'",
        f"{file}:22: Gizmo g: kind: "
        "unknown kind 'Gizmo', expected one of Cascade, Flavor, Model, Pool, Tenant, Tier",
    ]


def test_a_tier_name_longer_than_the_database_keeps_is_an_issue(tmp_path: Path) -> None:
    """Tier names are stored in 32 characters: on PostgreSQL a longer one failed the apply
    with a traceback."""
    name = "t" * 33
    issues = issues_of(tmp_path, f"kind: Tier\nname: {name}\npriority: 1\nttft_slo_ms: 100\n")
    assert len(issues) == 1 and f"Tier {name}: name: " in issues[0]


def test_references_and_duplicates_are_checked_across_files(tmp_path: Path) -> None:
    shutil.copy(TENANTS_DIR / "tiers.yaml", tmp_path / "tiers.yaml")
    extra = "kind: Tier\nname: gold\npriority: 1\nttft_slo_ms: 1\n---\n" + (
        "kind: Tenant\nslug: t\nname: T\ntier: platinum\nmodels: [nope]\n"
    )
    broken, tiers = tmp_path / "broken.yaml", tmp_path / "tiers.yaml"

    assert issues_of(tmp_path, extra) == [
        f"{broken}:9: Tenant t: tier: unknown tier 'platinum'",
        f"{broken}:10: Tenant t: models[0]: unknown model alias 'nope'",
        f"{tiers}:4: Tier gold: name: defined twice (first at {broken}:1)",
    ]


def test_yaml_syntax_errors_point_at_their_line(tmp_path: Path) -> None:
    issues = issues_of(tmp_path, "kind: Tier\nname: gold\n  oops: [\n")
    assert len(issues) == 1
    assert issues[0].startswith(f"{tmp_path / 'broken.yaml'}:3: (document): YAML syntax:")


def test_a_key_given_twice_is_an_issue_not_a_silent_override(tmp_path: Path) -> None:
    text = (
        "kind: Tier\nname: gold\npriority: 100\nttft_slo_ms: 500\npriority: 1\n"
        "quota:\n  tenant: {requests_per_minute: 5, requests_per_minute: 50}\n"
        "---\nkind: Tenant\nslug: acme\nname: Acme\ntier: gold\n"
    )
    # Only the repeats: the tier is still read, so the tenant on it finds it.
    assert issues_of(tmp_path, text) == [
        f"{tmp_path / 'broken.yaml'}:5: Tier gold: priority: given twice (first at line 3)",
        f"{tmp_path / 'broken.yaml'}:7: Tier gold: quota.tenant.requests_per_minute: "
        "given twice (first at line 7)",
    ]


def test_a_file_that_is_not_utf8_is_an_issue_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"kind: Tier\nname: caf\xe9\n")
    with pytest.raises(ManifestError) as caught:
        load_manifests(tmp_path)
    assert [str(i) for i in caught.value.issues] == [
        f"{tmp_path / 'latin1.yaml'}:2: (document): not UTF-8 text: invalid continuation byte"
    ]


def test_apply_twice_changes_nothing_the_second_time(runtime: Runtime) -> None:
    first = apply_manifests(runtime.session_factory, TENANTS_DIR, publish=runtime.publish)
    version = snapshot(runtime).version

    second = apply_manifests(runtime.session_factory, TENANTS_DIR, publish=runtime.publish)

    assert first.changed
    assert (
        "Tenant acme created: +model bge-small; +model llama-3.1-8b; +project demo; "
        in "\n".join(first.lines())
    )
    assert not second.changed
    assert second.lines() == ["no changes"]
    assert snapshot(runtime).version == version, "nothing changed, nothing published"


@pytest.fixture
def applied_copy(runtime: Runtime, tmp_path: Path) -> Path:
    """A copy of the bundled manifests, applied: edit a file there and apply again."""
    for file in TENANTS_DIR.glob("*.yaml"):
        shutil.copy(file, tmp_path / file.name)
    apply_manifests(runtime.session_factory, tmp_path, publish=runtime.publish)
    return tmp_path


def test_apply_reports_updates_and_makes_models_the_entitlement_list(
    runtime: Runtime, applied_copy: Path
) -> None:
    examples = applied_copy / "examples.yaml"
    examples.write_text(
        examples.read_text()
        .replace("tier: silver", "tier: gold", 1)
        .replace("models: [llama-3.1-8b, bge-small]\nprojects:\n  - name: support-bot",
                 "models: [llama-3.1-8b]\nprojects:\n  - name: support-bot")
        .replace("role: developer", "role: tenant_admin")
    )  # fmt: skip

    report = apply_manifests(runtime.session_factory, applied_copy, publish=runtime.publish)

    assert report.lines() == [
        "Tenant acme updated: member dev@acme.example developer -> tenant_admin",
        "Tenant globex updated: tier silver -> gold; -model bge-small",
    ]
    globex = next(t for t in snapshot(runtime).tenants.values() if t.slug == "globex")
    assert (globex.tier, globex.aliases) == ("gold", frozenset({"llama-3.1-8b"}))


def test_apply_keeps_a_tenants_last_tenant_admin_like_the_api(
    runtime: Runtime, applied_copy: Path
) -> None:
    before = snapshot(runtime).version
    examples = applied_copy / "examples.yaml"
    examples.write_text(examples.read_text().replace("role: tenant_admin", "role: developer", 1))

    with pytest.raises(Conflict, match="at least one tenant_admin") as refused:
        apply_manifests(runtime.session_factory, applied_copy, publish=runtime.publish)
    assert snapshot(runtime).version == before  # nothing applied, nothing published
    # Only the database can tell (validate passes): still said at file, line and document.
    assert refused.value.message.startswith(f"{examples}:4: Tenant acme: "), refused.value


def test_project_names_differing_only_in_case_are_one_name(
    runtime: Runtime, applied_copy: Path
) -> None:
    """Listed together, an issue at validation; beside a project the tenant holds, refused at
    apply at the project's line. Each had made a project of its own."""
    tenant = "kind: Tenant\nslug: t\nname: T\ntier: gold\nprojects:\n  - name: a\n  - name: A\n"
    (applied_copy / "more.yaml").write_text(tenant)
    with pytest.raises(ManifestError) as caught:
        load_manifests(applied_copy)
    assert [str(i) for i in caught.value.issues] == [
        f"{applied_copy / 'more.yaml'}:7: Tenant t: projects[1]: project 'A' listed twice"
    ]
    (applied_copy / "more.yaml").unlink()

    examples = applied_copy / "examples.yaml"
    examples.write_text(examples.read_text().replace("  - name: demo\n", "  - name: Demo\n", 1))
    before = snapshot(runtime).version
    with pytest.raises(Conflict, match="'demo'") as refused:
        apply_manifests(runtime.session_factory, applied_copy, publish=runtime.publish)
    assert refused.value.message.startswith(f"{examples}:10: Tenant acme: "), refused.value
    assert snapshot(runtime).version == before


def test_projects_named_alike_before_the_rule_still_apply_by_their_exact_names(
    runtime: Runtime, applied_copy: Path
) -> None:
    """A database holding demo and Demo from before keeps applying the manifests naming one."""
    with runtime.session_factory() as session, session.begin():
        acme = session.scalars(select(Tenant).where(Tenant.slug == "acme")).one()
        session.add(Project(tenant_id=acme.id, name="Demo", description=""))
    report = apply_manifests(runtime.session_factory, applied_copy, publish=runtime.publish)
    assert report.lines() == ["no changes"]


def test_a_manifest_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(manifest_json_schema_text()))


def test_a_merge_key_is_not_a_repeat_and_the_strict_loader_keeps_yaml_merging() -> None:
    text = "base: &b {x: 1, y: 2}\nderived: {<<: *b, y: 3}\n"
    assert load_strict(text) == {"base": {"x": 1, "y": 2}, "derived": {"x": 1, "y": 3}}
    with pytest.raises(DuplicateKeyError, match=r"line 3: key 'y' given twice \(first at line 2\)"):
        load_strict("derived:\n  y: 3\n  y: 4\n")


def test_scalars_read_as_yaml_1_2_reads_them_as_the_schemas_editors_do() -> None:
    """PyYAML's YAML 1.1 read 1e-7 as a string (refused as a budget the CLI takes), `on` and
    `no` as booleans (a slug `on` refused, `cache_isolated: off` taken) and 010 as eight."""
    text = "a: 1e-7\nb: on\nc: no\nd: true\ne: 010\nf: 0x1F\ng: .inf\nh: ~\n"
    assert load_strict(text) == {
        "a": 1e-7, "b": "on", "c": "no", "d": True, "e": 10, "f": 31, "g": float("inf"), "h": None,
    }  # fmt: skip


def test_a_manifest_budget_in_exponent_form_is_a_number_and_off_is_no_boolean(
    tmp_path: Path,
) -> None:
    file = tmp_path / "broken.yaml"
    issues = issues_of(
        tmp_path,
        "kind: Tenant\nslug: t1\nname: T\ntier: gold\ncache_isolated: off\n"
        "quota: {tenant: {cost_per_month_usd: 1e-7}}\n",
    )
    assert issues == [f"{file}:5: Tenant t1: cache_isolated: 'off' is not of type 'boolean'"]


def test_a_field_a_manifest_leaves_out_keeps_what_the_api_set(
    runtime: Runtime, applied_copy: Path
) -> None:
    """Re-applying tenants/ (as `trunkline up` does at every start) reset acme's regions, set
    through the API, to "anywhere", and reopened a pool kept for gold to every tier."""
    with runtime.session_factory() as session, session.begin():
        acme = session.scalars(select(Tenant).where(Tenant.slug == "acme")).one()
        acme.regions, acme.cache_isolated = ["eu-west"], False
        pool = session.scalars(select(Pool).where(Pool.name == "h100-eu-west")).one()
        pool.tiers, pool.max_prompt_tokens = ["gold"], 4096
        bot = session.scalars(select(Project).where(Project.name == "support-bot")).one()
        bot.description = "set through the API"  # globex's manifest lists it without one
        mark_config_changed(session)  # as the API's services do
    runtime.publish()

    again = apply_manifests(runtime.session_factory, applied_copy, publish=runtime.publish)

    assert again.lines() == ["no changes"]
    published = snapshot(runtime)
    (acme_entry,) = (t for t in published.tenants.values() if t.slug == "acme")
    assert acme_entry.regions == ("eu-west",) and acme_entry.cache_salt is None
    assert published.pools["h100-eu-west"].tiers == ("gold",)
    assert published.pools["h100-eu-west"].max_prompt_tokens == 4096
    with runtime.session_factory() as session:
        bot = session.scalars(select(Project).where(Project.name == "support-bot")).one()
        assert bot.description == "set through the API"

    # Written out, a field resets: `regions: []` is anywhere again, `tiers: null` every tier.
    examples, catalog = applied_copy / "examples.yaml", applied_copy / "catalog.yaml"
    examples.write_text(
        examples.read_text().replace("tier: gold\n", "tier: gold\nregions: []\n", 1)
    )
    text = catalog.read_text()
    start = text.index("name: h100-eu-west")
    catalog.write_text(text[:start] + text[start:].replace("region:", "tiers: null\nregion:", 1))
    report = apply_manifests(runtime.session_factory, applied_copy, publish=runtime.publish)
    assert report.lines() == [
        "Pool h100-eu-west updated: tiers ['gold'] -> None",
        "Tenant acme updated: regions ['eu-west'] -> []",
    ]
    # `models` left out keeps the entitlements (granted through the API, perhaps); written
    # out, it is the complete list.
    examples.write_text(examples.read_text().replace("models: [llama-3.1-8b, bge-small]\n", "", 1))
    assert apply_manifests(runtime.session_factory, applied_copy).lines() == ["no changes"]


def test_up_refuses_a_bad_routing_profile_before_it_changes_the_database(tmp_path: Path) -> None:
    """It migrated and applied tenants/ first, then died on the profile."""
    profile = tmp_path / "bad.yaml"
    profile.write_text("name: bad\nfilters: [healthy]\nscorers: [{name: nope, weight: 1}]\n")
    database = tmp_path / "trunkline.db"
    settings = make_settings(f"sqlite:///{database}", tmp_path)
    settings.gateway.routing_policy = str(profile)
    with pytest.raises(ConfigurationError, match="unknown scorer 'nope'"):
        asyncio.run(run_embedded(settings, TENANTS_DIR))
    assert not database.exists()


def test_a_model_name_the_api_cannot_address_is_an_issue(tmp_path: Path) -> None:
    """``org/model/`` was applied, and no URL of the API could then reach the model."""
    issues = issues_of(tmp_path, "kind: Model\nname: org/model/\naliases: [fine, org//model]\n")
    assert [issue.split(": ")[1:3] for issue in issues] == [
        ["Model org/model/", "name"],
        ["Model org/model/", "aliases[1]"],
    ]
