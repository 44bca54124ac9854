"""A statement that fails is logged (``log.exception``: the control plane's unhandled errors,
its configuration check, the jobs) with the database error's text: that text must not carry
the statement's parameters (e-mail addresses, names, hashes of keys and tokens)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from trunkline.kit.db import make_engine

EMAIL = "someone.private@example.com"


def test_a_failed_statement_is_logged_without_its_parameters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    log = logging.getLogger("trunkline.test")
    with engine.connect() as connection, caplog.at_level(logging.ERROR):
        try:
            connection.execute(text("SELECT * FROM no_such_table WHERE email = :e"), {"e": EMAIL})
        except DBAPIError:
            log.exception("request failed")
    engine.dispose()

    (record,) = caplog.records
    logged = caplog.text
    assert record.exc_info is not None
    assert "no_such_table" in logged  # what failed is still said
    assert EMAIL not in logged


def test_echo_still_shows_the_parameters_to_whoever_asked_for_it(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", echo=True)
    with engine.connect() as connection, pytest.raises(DBAPIError) as failed:
        connection.execute(text("SELECT * FROM no_such_table WHERE email = :e"), {"e": EMAIL})
    engine.dispose()
    assert EMAIL in str(failed.value)
