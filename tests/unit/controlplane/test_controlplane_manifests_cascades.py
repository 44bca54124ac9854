"""Cascade manifests against what the API set: checks kept when left out and reset by `{}`, a
model listing its own cascade, a cascade named like a model applied from other files."""

from __future__ import annotations

from pathlib import Path

import pytest
from cp_support import EXTRA, snapshot

from trunkline.apps.runtime import Runtime
from trunkline.errors import Conflict
from trunkline.pools.aliases import alias_row, configure_alias, stored_cascade
from trunkline.pools.lookups import model_row
from trunkline.pools.schemas import Cascade, CascadeChecks
from trunkline.tenancy.manifests import apply_manifests


def test_a_model_listing_its_own_cascade_as_a_plain_alias_is_refused_not_ignored(
    runtime: Runtime, manifests_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Listed by another model, the cascade's name was refused; listed by the model the
    cascade tries first, the apply said "no changes" and the name went on cascading."""
    apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    before = snapshot(runtime)
    alone = tmp_path_factory.mktemp("alone")
    (alone / "model.yaml").write_text(
        "kind: Model\nname: llama-3.2-1b-instruct\ncontext_length: 131072\n"
        "aliases:\n  - llama-3.2-1b\n  - llama-auto\n"
    )
    with pytest.raises(Conflict, match="alias 'llama-auto' is a cascade") as caught:
        apply_manifests(runtime.session_factory, alone, publish=runtime.publish)
    assert caught.value.message.startswith(f"{alone / 'model.yaml'}:6: ")
    after = snapshot(runtime)
    assert after.version == before.version and "llama-3.2-1b" not in after.aliases
    assert after.aliases["llama-auto"].cascade is not None


def test_a_cascade_left_without_checks_keeps_the_checks_the_api_set(
    runtime: Runtime, manifests_dir: Path
) -> None:
    """A field a document leaves out keeps what the database holds: re-applying (as `trunkline
    up` does at every start) set a cascade's checks, tuned through the API, back to the
    defaults."""
    extra = manifests_dir / "extra.yaml"
    extra.write_text(
        EXTRA.replace("checks: {truncation: true, refusal: false, min_mean_logprob: -1.2}\n", "")
    )
    apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    tuned = Cascade(
        escalate_to="llama-3.1-8b-instruct",
        checks=CascadeChecks(refusal=False, min_confidence=0.7),
    )
    with runtime.session_factory() as session, session.begin():
        row = alias_row(session, "llama-auto")
        small = model_row(session, "llama-3.2-1b-instruct")
        configure_alias(session, row, small, None, tuned)

    again = apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)

    assert again.lines() == ["no changes"]
    with runtime.session_factory() as session:
        assert stored_cascade(session, alias_row(session, "llama-auto")) == tuned
    # Written out, the checks are the document's.
    extra.write_text(EXTRA)
    report = apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    assert report.lines() == [
        "Cascade llama-auto updated: checks.min_confidence 0.7 -> None; "
        "checks.min_mean_logprob None -> -1.2"
    ]
    cascade = snapshot(runtime).aliases["llama-auto"].cascade
    assert cascade is not None and (cascade.on_refusal, cascade.min_confidence) == (False, None)


def test_a_cascade_written_with_empty_checks_goes_back_to_the_default_checks(
    runtime: Runtime, manifests_dir: Path
) -> None:
    """Left out, ``checks`` keeps what the database holds; ``checks: null`` is refused (not an
    object), so ``checks: {}`` is how a document resets them, as docs/cascading.md says; and
    ``checks`` written is whole: a check it leaves out takes its default."""
    extra = manifests_dir / "extra.yaml"
    extra.write_text(EXTRA)
    apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)

    extra.write_text(EXTRA.replace("min_mean_logprob: -1.2}", "min_confidence: 0.6}"))
    report = apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    assert report.lines() == [
        "Cascade llama-auto updated: checks.min_confidence None -> 0.6; "
        "checks.min_mean_logprob -1.2 -> None"
    ]
    extra.write_text(
        EXTRA.replace("{truncation: true, refusal: false, min_mean_logprob: -1.2}", "{}")
    )
    report = apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    assert report.lines() == [
        "Cascade llama-auto updated: checks.min_confidence 0.6 -> None; "
        "checks.refusal False -> True"
    ]
    with runtime.session_factory() as session:
        held = stored_cascade(session, alias_row(session, "llama-auto"))
    assert held is not None and held.checks == CascadeChecks()
    again = apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    assert again.lines() == ["no changes"]


def test_a_cascade_named_like_a_model_applied_from_other_files_is_named_at_its_name(
    runtime: Runtime, manifests_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The refusal named the API's field ``alias``, which a Cascade document does not have,
    and so pointed at the document's first line instead of its ``name``."""
    apply_manifests(runtime.session_factory, manifests_dir, publish=runtime.publish)
    alone = tmp_path_factory.mktemp("alone")
    (alone / "cascade.yaml").write_text(
        "kind: Model\nname: llama-3.2-1b-instruct\ncontext_length: 131072\n---\n"
        "kind: Model\nname: llama-3.1-8b-instruct\ncontext_length: 131072\n---\n"
        "kind: Cascade\nmodel: llama-3.2-1b-instruct\nescalate_to: llama-3.1-8b-instruct\n"
        "name: bge-small-en\n"
    )
    with pytest.raises(Conflict, match="'bge-small-en' is the name model") as caught:
        apply_manifests(runtime.session_factory, alone, publish=runtime.publish)
    assert caught.value.message.startswith(f"{alone / 'cascade.yaml'}:12: Cascade bge-small-en: ")
    assert caught.value.param == "name"
