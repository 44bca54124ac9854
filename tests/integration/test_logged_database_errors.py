"""PostgreSQL's own error text names the values of the row it refused (``DETAIL:  Key
(email)=(…) already exists.``, ``Failing row contains (…)``): ``hide_parameters`` hides the
statement's parameters, not that. The control plane's unhandled errors, its configuration
check and the jobs log errors whole, so the log lines must leave the values out."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from trunkline.kit.db import make_engine
from trunkline.kit.logging import JsonFormatter, KeyValueFormatter

pytestmark = pytest.mark.integration

EMAIL = "someone.private@example.com"
REFUSED = {
    "unique": "INSERT INTO people (email, name) VALUES (:email, 'Ann')",
    "not null": "INSERT INTO people (email, name) VALUES (:email, NULL)",
    "foreign key": "INSERT INTO badges (owner) VALUES (:email)",
}


@pytest.mark.parametrize("refusal", sorted(REFUSED))
@pytest.mark.parametrize("formatter", [JsonFormatter, KeyValueFormatter])
def test_a_refused_row_is_logged_without_its_values(
    postgres_url: str, refusal: str, formatter: Callable[[], logging.Formatter]
) -> None:
    engine = make_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE people (email text UNIQUE, name text NOT NULL)"))
        connection.execute(text("CREATE TABLE badges (owner text REFERENCES people (email))"))
        connection.execute(text("INSERT INTO people VALUES ('other@example.com', 'Bo')"))
        if refusal == "unique":
            connection.execute(text(REFUSED["unique"]), {"email": EMAIL})
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(formatter())
    log = logging.getLogger("trunkline.test.refused_rows")
    log.addHandler(handler)
    try:
        with engine.begin() as connection:
            connection.execute(text(REFUSED[refusal]), {"email": EMAIL})
    except DBAPIError as exc:
        said = str(exc)
        log.error("job failed: %s", exc.orig, exc_info=True)
    finally:
        log.removeHandler(handler)
        engine.dispose()

    assert EMAIL in said and "DETAIL" in said  # PostgreSQL's text carries the row's values
    logged = written.getvalue()
    assert "DETAIL" in logged and EMAIL not in logged
    assert "people" in logged or "badges" in logged  # what was refused is still said
