"""What ``trunkline up`` says when it cannot start: one line naming the cause and what to do."""

from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path

import pytest

from trunkline.apps.embedded_lock import only_instance
from trunkline.bench.processes import free_loopback_ports
from trunkline.cli.main import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _logging_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """`up` logs to the stderr capsys closes after the test: the next tests' lines would not."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)


def test_a_second_up_in_the_same_directory_names_the_first_not_its_ports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said the ports were taken and to set TRUNKLINE_GATEWAY__PORT: doing so started a
    second platform on the first one's database, which took over the first one's pools."""
    url = f"sqlite:///{tmp_path / 'trunkline.db'}"
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", url)
    with socket.socket() as taken, only_instance(url):  # the first `up`: its lock, its port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("TRUNKLINE_GATEWAY__PORT", str(taken.getsockname()[1]))
        code = main(["up", "--tenants", str(REPO / "tenants")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: another `trunkline up` (pid ")
    assert f"is serving the database {tmp_path / 'trunkline.db'}: stop it first" in err
    assert "cannot listen" not in err
    assert not (tmp_path / "trunkline.db").exists()


def test_up_with_a_broken_manifest_says_so_before_it_makes_a_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It migrated a new database first (twenty lines of migrations), then named the mistake,
    leaving the database behind."""
    manifests = tmp_path / "tenants"
    shutil.copytree(REPO / "tenants", manifests)
    examples = manifests / "examples.yaml"
    examples.write_text(examples.read_text().replace("tier: gold", "tier: platinum", 1))
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", f"sqlite:///{tmp_path / 'trunkline.db'}")
    gateway, controlplane = free_loopback_ports(2)  # were it to start: nobody's ports
    monkeypatch.setenv("TRUNKLINE_GATEWAY__PORT", str(gateway))
    monkeypatch.setenv("TRUNKLINE_CONTROLPLANE__PORT", str(controlplane))
    assert main(["up", "--tenants", str(manifests)]) == 2
    assert "tier: unknown tier 'platinum'" in capsys.readouterr().err
    assert not (tmp_path / "trunkline.db").exists()
