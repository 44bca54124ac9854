"""An API request that may change something holds the configuration's lock before anything
else in its transaction (``tenancy.changes.changing``; why: test_config_lock_order.py), and a
request that changes nothing takes no lock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from unit.controlplane.cp_support import World


@pytest.fixture
def statements(world: World) -> Iterator[list[str]]:
    """The statements the API's database connections run, in order, from now on."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()).upper())

    engine = world.runtime.engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def _first(statements: list[str], prefix: str) -> int:
    return next(i for i, s in enumerate(statements) if s.startswith(prefix))


def test_a_request_writing_holds_the_configuration_first(
    world: World, statements: list[str]
) -> None:
    acme = world.tenant("acme")
    world.api("acme-admin").post(f"/api/v1/tenants/{acme}/projects", {"name": "locked-first"})
    held = _first(statements, "UPDATE CONFIG_GENERATION")
    assert held < _first(statements, "INSERT INTO PROJECTS")
    # nothing of the request's own transaction before it: only the token's look-up, which
    # runs in a session of its own
    assert all(not s.startswith(("INSERT", "UPDATE", "DELETE")) for s in statements[:held])


def test_a_request_reading_takes_no_lock(world: World, statements: list[str]) -> None:
    world.api("acme-admin").get(f"/api/v1/tenants/{world.tenant('acme')}/projects")
    assert statements and not [s for s in statements if s.startswith("UPDATE CONFIG_GENERATION")]
