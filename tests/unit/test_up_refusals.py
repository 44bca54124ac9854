"""What ``trunkline up`` says when it cannot start: one line naming the cause and what to do."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from trunkline.apps.embedded_lock import only_instance
from trunkline.cli.main import main

REPO = Path(__file__).resolve().parents[2]


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
