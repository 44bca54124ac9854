"""``trunkline sim``: one simulated vLLM engine, started from a shell."""

from __future__ import annotations

import socket

import pytest

from trunkline.cli.main import main


def test_sim_on_a_port_in_use_says_which_option_moves_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It was uvicorn's "ERROR: [Errno 98] error while attempting to bind on address", exit 3."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["sim", "--model", "m", "--port", str(port)])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: the simulated engine cannot listen on 127.0.0.1:{port} (Address already in "
        "use): stop what uses it or set --port\n"
    )
