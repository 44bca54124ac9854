"""A statement that fails is logged (``log.exception``: the control plane's unhandled errors,
its configuration check, the jobs) with the database error's text: that text must not carry
the statement's parameters (e-mail addresses, names, hashes of keys and tokens)."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from trunkline.kit.db import make_engine
from trunkline.kit.logging import JsonFormatter, KeyValueFormatter

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


@pytest.mark.parametrize(
    "detail",
    [
        f"Key (email)=({EMAIL}) already exists.",
        f"Failing row contains ({EMAIL}, null).",
        f'Key (email, note)=({EMAIL}, a note\non two lines) is not present in table "people".',
        f"Failing row contains (null, a note\n\non two lines, {EMAIL}).",  # a blank line in it
    ],
)
@pytest.mark.parametrize("formatter", [JsonFormatter, KeyValueFormatter])
def test_postgresqls_detail_is_logged_without_the_rows_values(
    detail: str, formatter: Callable[[], logging.Formatter]
) -> None:
    """What PostgreSQL says of a refused row (its DETAIL, as tests/integration/
    test_logged_database_errors.py gets it from a real one) names the row's values, which
    ``hide_parameters`` leaves in; a log line keeps the columns and drops the values."""
    said = 'duplicate key value violates unique constraint "people_email_key"'
    sql = "[SQL: INSERT INTO people (email) VALUES (%s)]"
    error = RuntimeError(f"{said}\nDETAIL:  {detail}\n{sql}")
    try:
        raise error
    except RuntimeError:
        record = logging.LogRecord(
            "trunkline.jobs", logging.ERROR, __file__, 1, "job failed: %s", (error,),
            sys.exc_info(),
        )  # fmt: skip
    logged = formatter().format(record)
    assert EMAIL not in logged and "on two lines" not in logged
    assert "people_email_key" in logged and "[SQL: INSERT INTO people" in logged
    if detail.startswith("Key"):
        assert "Key (email" in logged


@pytest.mark.parametrize("formatter", [JsonFormatter, KeyValueFormatter])
def test_a_job_failing_on_a_refused_row_is_logged_without_its_values(
    formatter: Callable[[], logging.Formatter],
) -> None:
    """Celery logs a failed job (``trunkline jobs``) with the error's ``repr`` in the message,
    its newlines escaped, and the error and traceback again in an extra dict (``data``): the
    DETAIL's values went out whole there, though not in the traceback."""
    jobs = Celery("trunkline", set_as_current=False)
    detail = f"Key (email)=({EMAIL}) already exists."

    @jobs.task(name="metering.rollup_usage", shared=False)
    def rollup_usage() -> None:
        said = 'duplicate key value violates unique constraint "people_email_key"'
        raise RuntimeError(f"{said}\nDETAIL:  {detail}")

    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(formatter())
    log = logging.getLogger("celery.app.trace")
    log.addHandler(handler)
    try:
        rollup_usage.apply()
    finally:
        log.removeHandler(handler)

    logged = written.getvalue()
    assert "raised unexpected" in logged and "people_email_key" in logged
    assert EMAIL not in logged
    assert logged.count("Key (email)=") >= 3  # the message, its data, the traceback


@pytest.mark.parametrize("formatter", [JsonFormatter, KeyValueFormatter])
def test_what_follows_a_detail_in_a_log_line_is_kept(
    formatter: Callable[[], logging.Formatter],
) -> None:
    """A DETAIL was taken to run to SQLAlchemy's ``[SQL: …]`` or a blank line: where an error's
    text ends with it (psycopg's own error, logged as the message), the traceback after it
    went too, and on a key=value line so did the fields after it (``request_id=…``)."""
    said = 'duplicate key value violates unique constraint "people_email_key"'
    error = RuntimeError(f"{said}\nDETAIL:  Key (email)=({EMAIL}) already exists.")
    try:
        raise error
    except RuntimeError:
        record = logging.LogRecord(
            "trunkline.jobs", logging.ERROR, __file__, 1, "job failed: %s", (error,),
            sys.exc_info(),
        )  # fmt: skip
    record.request_id = "req-0042"
    logged = formatter().format(record)
    assert EMAIL not in logged and "Key (email)=" in logged
    assert "req-0042" in logged
    assert "test_what_follows_a_detail_in_a_log_line_is_kept" in logged  # the traceback's frame
