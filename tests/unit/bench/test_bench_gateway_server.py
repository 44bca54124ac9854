"""The benchmark gateway's world: one key that may call one alias on one engine."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from trunkline.bench._gateway_server import build_snapshot, parse_engine, write_secret_file
from trunkline.errors import Unauthenticated
from trunkline.gateway.authn import authenticate
from trunkline.gateway.routing import eligible

SECRET = b"bench-test-server-secret"


def test_the_written_key_authenticates_and_reaches_the_engine() -> None:
    world = build_snapshot(
        engines=[parse_engine("http://127.0.0.1:9", 0)],
        model="llama-served",
        alias="bench-chat",
        accelerator="h100",
        block_size=16,
        server_secret=SECRET,
    )

    principal = authenticate(world.snapshot, f"Bearer {world.api_key}", SECRET, time.time())

    assert "bench-chat" in principal.tenant.aliases
    alias = world.snapshot.aliases["bench-chat"]
    assert alias.model == "llama-served"
    candidates = eligible(world.snapshot, alias, principal.tenant, principal.tier)
    assert [c.endpoint.url for c in candidates] == ["http://127.0.0.1:9"]


def test_the_key_is_useless_with_another_server_secret() -> None:
    world = build_snapshot(
        engines=[parse_engine("http://127.0.0.1:9", 0)],
        model="m",
        alias="a",
        accelerator="h100",
        block_size=16,
        server_secret=SECRET,
    )

    with pytest.raises(Unauthenticated):
        authenticate(world.snapshot, f"Bearer {world.api_key}", b"other", time.time())


def test_the_key_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("old contents that were longer")
    path.chmod(0o644)

    write_secret_file(path, "tlk_abc_def")

    assert path.read_text() == "tlk_abc_def"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
