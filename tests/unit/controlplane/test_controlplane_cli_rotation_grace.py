"""``trunkline keys rotate --grace-s N``: the operator's rotation can leave the old key working
beside its successor, as the API's ``?grace_s=`` does. Before, the CLI always revoked it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cp_support import TENANTS_DIR, cli_environment, run_cli


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return cli_environment(tmp_path, monkeypatch)


def test_a_rotation_with_a_grace_leaves_the_old_key_active(
    capsys: pytest.CaptureFixture[str], configured: str
) -> None:
    run_cli(capsys, "tenants", "apply", str(TENANTS_DIR))
    _, secret, _ = run_cli(
        capsys, "keys", "create", "--tenant", "acme", "--project", "demo", "--name", "ci"
    )
    old = secret.split("_")[1]

    code, new_secret, _ = run_cli(capsys, "keys", "rotate", old, "--grace-s", "3600")

    assert code == 0
    new = new_secret.split("_")[1]
    _, listing, _ = run_cli(capsys, "keys", "list", "--tenant", "acme")
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert "active" in rows[old] and "active" in rows[new]
    assert "revoked" not in listing
    refused = run_cli(capsys, "keys", "rotate", old)
    assert refused[0] == 2 and "rotated already" in refused[2]
