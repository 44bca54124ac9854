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


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://trunkline:hunter2@db:hunter2/trunkline",
        "postgresql+psycopg://trunkline:hunter2@db:/trunkline",
        "sqlite://:hunter2/x.db",
    ],
)
@pytest.mark.parametrize("argv", [("keys", "list", "--tenant", "acme"), ("migrate",)])
def test_a_database_url_whose_port_is_no_number_is_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    argv: tuple[str, ...],
) -> None:
    """SQLAlchemy's ValueError traceback ended with "invalid literal for int() with base 10:
    'hunter2'": what followed the host, a password's characters when the URL was mistyped."""
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", url)
    monkeypatch.setenv("TRUNKLINE_SECURITY__KEY_HASH_SECRET", SERVER_SECRET)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)

    code, _, err = run_cli(capsys, *argv)

    assert code == 2
    assert err.startswith("error: TRUNKLINE_DATABASE__URL") and err.count("\n") == 1
    assert "hunter2" not in err
