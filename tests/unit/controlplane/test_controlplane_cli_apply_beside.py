"""``trunkline tenants apply`` beside other control planes storing newer snapshots: what it
says once its change is committed, whether the gateways have it or may not yet."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from cp_support import TENANTS_DIR, cli_environment, make_runtime, run_cli

from trunkline.apps.change_publisher import PUBLISH_TRIES
from trunkline.apps.runtime import Runtime
from trunkline.cli import tenants as cli_tenants
from trunkline.snapshot import InMemorySnapshotStore
from trunkline.snapshot.builder import publish_snapshot
from trunkline.tenancy.manifests import load_manifests

run = run_cli


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return cli_environment(tmp_path, monkeypatch)


class OtherControlPlanes:
    """The store, where another control plane stores a newer version (``theirs``) just before
    each whole publish of this process, which is then refused."""

    def __init__(self, store: InMemorySnapshotStore, theirs: Callable[[], object]) -> None:
        self.store, self.theirs, self.refused = store, theirs, 0

    def publish(self, version: int, parts: Mapping[str, bytes], **kwargs: Any) -> bool:
        self.theirs()
        stored = self.store.publish(version, parts, **kwargs)
        self.refused += not stored
        return stored

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


Theirs = Callable[[Runtime, InMemorySnapshotStore], Callable[[], object]]


def _whole_build(runtime: Runtime, store: InMemorySnapshotStore) -> Callable[[], object]:
    """Theirs is a whole build, read after the apply committed: it holds the change."""
    secret = runtime.server_secret
    return lambda: publish_snapshot(runtime.session_factory, store, cache_secret=secret)


def _older_parts(_runtime: Runtime, store: InMemorySnapshotStore) -> Callable[[], object]:
    """Theirs holds the parts from before the apply (its keys patched over the older core)."""
    held = asyncio.run(store.load())
    assert held is not None
    return lambda: store.publish(store.next_version(), held.blobs, published_at=0.0)


def _apply_beside(
    theirs: Theirs, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> OtherControlPlanes:
    """Apply the bundled manifests, then with a tenant moved to another tier (which the
    gateways must learn) beside ``theirs``; it succeeds."""
    assert run(capsys, "tenants", "apply", str(TENANTS_DIR))[0] == 0
    moved = tmp_path / "moved"
    shutil.copytree(TENANTS_DIR, moved)
    examples = moved / "examples.yaml"
    examples.write_text(examples.read_text().replace("tier: gold", "tier: silver", 1))
    runtime = make_runtime(url, tmp_path / "state")  # as the CLI builds it, its settings given
    assert runtime.memory_store is not None
    runtime.publish_now()  # what the gateways held before the apply
    others = OtherControlPlanes(runtime.memory_store, theirs(runtime, runtime.memory_store))
    runtime.publisher = others  # type: ignore[assignment]
    try:
        code = cli_tenants.apply_over(runtime, load_manifests(moved))
    finally:
        runtime.close()
    assert (code, capsys.readouterr().out) == (0, "Tenant acme updated: tier gold -> silver\n")
    return others


@pytest.fixture
def shown(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """What was logged at WARNING or above: what a terminal shows of a command's log."""
    caplog.set_level(logging.INFO, logger="trunkline")
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_apply_whose_change_another_control_plane_stored_says_nothing_alarming(
    capsys: pytest.CaptureFixture[str],
    configured: str,
    tmp_path: Path,
    shown: Callable[[], list[str]],
) -> None:
    others = _apply_beside(_whole_build, configured, tmp_path, capsys)
    assert others.refused == PUBLISH_TRIES
    # before: "other control planes kept publishing newer versions; the check will look"
    assert shown() == []


def test_an_apply_whose_change_the_store_may_lack_says_what_publishes_it(
    capsys: pytest.CaptureFixture[str],
    configured: str,
    tmp_path: Path,
    shown: Callable[[], list[str]],
) -> None:
    others = _apply_beside(_older_parts, configured, tmp_path, capsys)
    assert others.refused == PUBLISH_TRIES
    [warning] = shown()
    assert "the gateways may not have the latest configuration yet" in warning
    assert "it is saved, and the control plane's check publishes it" in warning
