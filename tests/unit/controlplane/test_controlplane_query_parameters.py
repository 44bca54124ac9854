"""A query parameter that takes one value, given more than once, is a 400 naming it: the control
plane kept the last value and answered as if the caller had asked for that alone. Checked on
every route of the app as the tests build it, so a new route is covered too."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from cp_support import World, problem_of
from litestar import Litestar, get
from litestar.params import FromQuery
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from trunkline.apps.problems import HANDLERS
from trunkline.apps.request_parameters import ParameterCheck, scalar_query_parameters

PATH_VALUES = {"period": "2026-11"}
"""A path parameter's value, by name (``tenant_id``: acme's)."""
QUERY_VALUES = {
    "entitled_to": ("chat", "embed"),
    "limit": ("5", "500"),
    "after": ("WyJhIl0", "WyJiIl0"),
    "project_id": ("6f0c1d4e-0000-4000-8000-000000000001", "6f0c1d4e-0000-4000-8000-000000000002"),
    "tenant_id": ("6f0c1d4e-0000-4000-8000-000000000003", "6f0c1d4e-0000-4000-8000-000000000004"),
    "group_by": ("model", "day"),
    "key_id": ("k1", "k2"),
    "model": ("chat", "embed"),
    "period": ("2026-11", "2026-10"),
    "format": ("focus-csv", "focus-parquet"),
}
"""Two values a query parameter takes, by name; a route's required ones are given the first."""


def _given_twice(name: str, required: set[str]) -> str:
    """A query string giving ``name`` its two values, and each other required parameter one."""
    assert name in QUERY_VALUES, f"add two values of the query parameter {name!r} to QUERY_VALUES"
    query = [(other, QUERY_VALUES[other][0]) for other in sorted(required - {name})]
    return urlencode([*query, *((name, value) for value in QUERY_VALUES[name])])


def _scalar_gets(world: World) -> list[tuple[str, str, set[str]]]:
    """Every GET route of the app taking single-valued query parameters: its URL (path
    parameters filled in), a parameter and the route's required parameters."""
    app = world.client.app
    assert isinstance(app, Litestar)
    scalars = scalar_query_parameters(app)
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "GET" not in route.route_handler_map:
            continue
        handler, kwargs_model = route.route_handler_map["GET"]
        if handler not in scalars:
            continue
        required = {p.field_alias for p in kwargs_model.expected_query_params if p.is_required}
        values = PATH_VALUES | {"tenant_id": world.tenant("acme")}
        missing = set(route.path_parameters) - set(values)
        assert not missing, f"add a value of the path parameters {missing} to PATH_VALUES"
        url = route.path_format.format(**values)
        found += [(url, name, required) for name in sorted(scalars[handler])]
    return found


def test_every_single_valued_query_parameter_given_twice_is_refused_naming_it(
    world: World,
) -> None:
    checked = _scalar_gets(world)
    assert {name for _, name, _ in checked} >= {"format", "limit", "entitled_to", "period"}
    wrong = []
    for url, name, required in checked:
        response = world.admin.client.get(
            f"{url}?{_given_twice(name, required)}", headers=world.admin.headers
        )
        if response.status_code != 400:
            wrong.append((url, name, response.status_code))
            continue
        problem = problem_of(response, 400)
        expected = [{"field": name, "message": "given 2 times; give it once", "source": "query"}]
        if problem["errors"] != expected or problem["detail"] != f"invalid value for {name}":
            wrong.append((url, name, problem))
    assert not wrong, wrong


def test_an_export_in_two_formats_is_refused_and_in_either_one_answered(world: World) -> None:
    """The case that was answered in the last format given, as if only it had been asked."""
    url = f"/api/v1/tenants/{world.tenant('acme')}/billing/exports/2026-11"
    headers = world.admin.headers
    for one in ("focus-csv", "focus-parquet"):
        assert world.client.get(url, params={"format": one}, headers=headers).status_code == 200
    both = world.client.get(f"{url}?format=focus-csv&format=focus-parquet", headers=headers)
    assert [e["field"] for e in problem_of(both, 400)["errors"]] == ["format"]


def test_each_repeated_parameter_is_named_and_those_given_once_are_not(world: World) -> None:
    url = "/api/v1/tenants?limit=5&entitled_to=a&limit=500&entitled_to=b&after=x&after=y"
    problem = problem_of(world.client.get(url, headers=world.admin.headers), 400)
    assert [e["field"] for e in problem["errors"]] == ["after", "entitled_to", "limit"]
    fine = world.client.get(
        "/api/v1/tenants?limit=5&unknown=a&unknown=b", headers=world.admin.headers
    )
    assert fine.status_code == 200, fine.text  # a parameter no route reads is left alone


@get("/tagged", sync_to_thread=False)
def _tagged(tag: FromQuery[list[str]], order: FromQuery[str] = "asc") -> dict[str, Any]:
    return {"tag": tag, "order": order}


def test_a_parameter_declared_as_a_list_keeps_taking_repeats() -> None:
    """No control-plane route declares one today; one that does must not be refused."""
    app = Litestar([_tagged], before_request=ParameterCheck(), exception_handlers=dict(HANDLERS))
    with TestClient(app) as client:
        answered = client.get("/tagged?tag=a&tag=b&order=desc")
        assert answered.json() == {"tag": ["a", "b"], "order": "desc"}
        refused = problem_of(client.get("/tagged?tag=a&order=asc&order=desc"), 400)
        assert [(e["field"], e["source"]) for e in refused["errors"]] == [("order", "query")]
