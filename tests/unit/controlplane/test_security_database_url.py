"""A database URL's password never reaches a message, however the URL gives it: in its user
information (``user:password@``) or as libpq's ``password`` / ``sslpassword`` parameters."""

from __future__ import annotations

import logging

import pytest
from cp_support import SERVER_SECRET, run_cli


@pytest.mark.parametrize(
    "query", ["?password=hunter2", "?sslmode=require&password=hunter2", "?sslpassword=hunter2"]
)
def test_an_unreachable_database_is_named_without_a_password_given_as_a_parameter(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    url = f"postgresql+psycopg://trunkline@127.0.0.1:1/trunkline{query}"
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", url)
    monkeypatch.setenv("TRUNKLINE_SECURITY__KEY_HASH_SECRET", SERVER_SECRET)
    root = logging.getLogger()  # `migrate` logs to the stderr capsys closes after the test
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)

    code, _, err = run_cli(capsys, "migrate")

    assert code == 2
    assert err.startswith("error: cannot reach the database postgresql+psycopg://trunkline@")
    assert "hunter2" not in err
    assert "password=***" in err
