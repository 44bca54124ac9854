"""Each PostgreSQL connection's libpq parameters: the defaults, unless the URL sets them (a
real connection's socket: integration/controlplane/test_controlplane_database_outage.py)."""

from __future__ import annotations

import pytest

from trunkline.kit.db import LIBPQ_DEFAULTS, libpq_defaults

BASE = "postgresql+psycopg://trunkline@db/trunkline"


@pytest.mark.parametrize(
    ("query", "kept"),
    [
        ("", {}),
        ("?connect_timeout=2", {"connect_timeout"}),
        ("?tcp_user_timeout=0&keepalives_idle=600", {"tcp_user_timeout", "keepalives_idle"}),
        ("?sslmode=require", {}),
    ],
)
def test_the_urls_own_parameters_win_and_the_rest_get_the_defaults(
    query: str, kept: set[str]
) -> None:
    assert libpq_defaults(BASE + query) == {
        name: value for name, value in LIBPQ_DEFAULTS.items() if name not in kept
    }
