"""Bad input on every control-plane route: a problem detail with a 4xx status, never a 500, and
nothing stored. The routes are read from the app as the tests build it, so a new route is walked
too (and its test fails until its path parameters and body have a value here). On SQLite and
on PostgreSQL, whose refusals differ (a NUL, a number or text too large for its column)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar
from litestar.routes import HTTPRoute
from sqlalchemy import select

from trunkline.models.base import Base
from unit.controlplane.cp_support import World, problem_of

JSON = "application/json"
PROBLEM_STATUSES = {400, 404, 409, 413, 415, 422}
BAD_VALUES: list[Any] = [
    None, True, -1, 1.5, 1e308, -1e308, 2**70, "", "x" * 20_000, "a\x00b", "\u202e", "1",
    "2026-01-01T00:00:00", "not-a-uuid", [], [None], {}, {"a": 1},
]  # fmt: skip
"""Values given to each field of a body in turn: of the wrong JSON type, out of range, empty,
huge, with control characters, a date without a time zone, an id that is none."""
MALFORMED = [
    b"", b"{", b"not json", b"NaN", b'{"a": Infinity}', b"1e999", b"null", b'"text"', b"123",
    b"[]", b"\xff\xfe", b"[" * 200 + b"]" * 200,
]  # fmt: skip
"""Bodies that are no JSON object: malformed, JSON's non-numbers, another JSON type."""


@dataclass(frozen=True)
class Route:
    method: str
    url: str
    body: type[msgspec.Struct] | None = None
    query: frozenset[str] = frozenset()
    """The query parameters the route reads."""


def path_values(world: World) -> dict[str, str]:
    """A value of each path parameter, by name, for a route's path to reach its handler."""
    acme = world.tenant("acme")
    key = world.create_key("root", "acme", "demo")["key"]["key_id"]
    return {
        "tenant_id": acme, "user_id": world.user_id("acme", "dev@acme.example"),
        "project_id": world.project("acme", "demo"), "key_id": key, "alias": "chat",
        "period": "2026-11", "path": "openapi.json",
    }  # fmt: skip


NAMES = {"tiers": "gold", "flavors": "h100", "models": "llama-3.1-8b-instruct",
         "pools": "h100-eu-west"}  # fmt: skip
"""The ``name`` path parameter's value, by the collection it names one of."""


def valid_bodies(world: World) -> dict[str, dict[str, Any]]:
    """A body each body type takes, by type name, that the bad values are then put into."""
    project = world.project("acme", "demo")
    return {
        "TierCreate": {"name": "new-tier", "priority": 1, "ttft_slo_ms": 100},
        "TierUpdate": {"priority": 5},
        "TenantCreate": {"slug": "newco", "name": "New Co", "tier": "gold"},
        "TenantUpdate": {"name": "Acme Renamed"},
        "MemberAdd": {"email": "new@acme.example", "role": "developer"},
        "MemberUpdate": {"role": "admin"},
        "ProjectCreate": {"name": "new-project"},
        "ApiKeyCreate": {"project_id": project, "name": "k"},
        "ApiKeyBatch": {"keys": [{"project_id": project, "name": "k"}]},
        "FlavorCreate": {"name": "new-flavor"},
        "FlavorUpdate": {"memory_gb": 10},
        "AliasCreate": {"alias": "new-alias", "model": "llama-3.1-8b-instruct"},
        "AliasUpdate": {"model": "llama-3.1-8b-instruct"},
        "ModelCreate": {"name": "new-model"},
        "ModelUpdate": {"context_length": 4096},
        "PoolCreate": {"name": "new-pool", "model": "llama-3.1-8b-instruct", "flavor": "h100",
                       "region": "us-east"},
        "PoolUpdate": {"capacity": 3},
        "PoolEndpoints": {"urls": ["http://10.0.0.1:8000"]},
        "QuotaLimits": {"tenant": {"tokens_per_minute": 1000}},
        "ScopeLimits": {"tokens_per_minute": 1000},
        "DevLogin": {"email": "new@acme.example"},
    }  # fmt: skip


def routes(world: World, values: dict[str, str]) -> list[Route]:
    """Every route and method of the app (but HEAD and OPTIONS), its path filled in with
    ``values`` (:func:`path_values`)."""
    app = world.client.app
    assert isinstance(app, Litestar)
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        missing = set(route.path_parameters) - set(values) - {"name"}
        assert not missing, f"add a value of the path parameters {missing} to path_values"
        url = _filled(route.path_format, values)
        for method, (handler, kwargs) in route.route_handler_map.items():
            if method in ("HEAD", "OPTIONS"):
                continue
            data = handler.parsed_fn_signature.parameters.get("data")
            query = frozenset(p.field_alias for p in kwargs.expected_query_params)
            found.append(Route(method, url, None if data is None else data.annotation, query))
    return found


def _filled(path: str, values: dict[str, str]) -> str:
    """``path`` with its parameters given ``values`` (``name`` the collection's, from NAMES)."""
    for parameter, value in ({"name": _name_in(path)} | values).items():
        path = path.replace(f"{{{parameter}}}", value)
    return path


def _name_in(path: str) -> str:
    named = [name for collection, name in NAMES.items() if f"/{collection}/{{name}}" in path]
    assert len(named) <= 1, path
    return named[0] if named else "{name}"


def contents(world: World) -> dict[str, list[str]]:
    """Every row of every table, as text: what a failed request must leave as it was."""
    with world.runtime.session_factory() as session:
        return {
            table.name: sorted(repr(tuple(row)) for row in session.execute(select(table)))
            for table in Base.metadata.sorted_tables
        }


class Walk:
    """Requests as the platform admin, each answer checked: a success, or a problem detail
    with a 4xx status after which every row is as it was."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.rows = contents(world)
        self.wrong: list[str] = []

    def check(self, route: Route, **request: Any) -> int:
        """Send ``request`` to ``route``, note what is wrong with its answer; its status."""
        world, headers = self.world, self.world.admin.headers | request.pop("headers", {})
        response = world.client.request(route.method, route.url, headers=headers, **request)
        status, rows = response.status_code, contents(world)
        said = f"{route.method} {route.url[:120]}: {status} {response.text[:200]}"
        if status >= 400 and status not in PROBLEM_STATUSES:
            self.wrong.append(said)
        elif status >= 400 and (
            not response.headers["content-type"].startswith("application/problem+json")
            or response.json()["status"] != status
        ):
            self.wrong.append(f"not a problem: {said}")
        elif status >= 400 and rows != self.rows:
            changed = [name for name, kept in rows.items() if kept != self.rows[name]]
            self.wrong.append(f"changed {changed}: {said}")
        self.rows = rows
        return status


def test_every_body_that_is_not_a_json_object_is_refused_as_a_problem_changing_nothing(
    world: World,
) -> None:
    found = routes(world, path_values(world))
    walk, headers = Walk(world), {"content-type": "application/json"}
    for route in found:
        for body in MALFORMED if route.body else ():
            if (status := walk.check(route, content=body, headers=headers)) != 400:
                walk.wrong.append(f"{route.method} {route.url} {body[:20]!r}: {status}")
    assert not walk.wrong, walk.wrong


def test_every_field_of_every_body_given_a_bad_value_is_a_problem_or_taken_never_a_500(
    world: World,
) -> None:
    """Each field in turn, the others valid: a value of no kind the field takes is refused, and
    a failed request changes nothing; one it happens to take (an empty description) is stored."""
    found, bodies = routes(world, path_values(world)), valid_bodies(world)
    walk = Walk(world)
    for route in found:
        if route.body is None:
            continue
        name = route.body.__name__
        assert name in bodies, f"add a body of {name} ({route.method} {route.url}) to valid_bodies"
        for field in (f.name for f in msgspec.structs.fields(route.body)):
            for value in BAD_VALUES:
                walk.check(route, json={**bodies[name], field: value})
        if (status := walk.check(route, json={**bodies[name], "colour": "red"})) != 400:
            walk.wrong.append(f"{route.method} {route.url} took an unknown field: {status}")
    assert not walk.wrong, walk.wrong


def test_path_and_query_parameters_out_of_range_are_problems_never_500s(world: World) -> None:
    """Ids that are no UUID, the nil UUID, names too long or of other scripts; a page's limit
    of 0, -1 or 10**9 and cursors that decode to something else."""
    acme = world.tenant("acme")
    queries = ("0", "-1", "1000000000", "1" + "0" * 30, "1e3", "NaN", "", "%C3%A9", "WyJ4Il0",
               "W10", "bnVsbA", "eyJ9", "x" * 5000)  # fmt: skip
    paths = {
        "tenant_id": ("not-a-uuid", "00000000-0000-0000-0000-000000000000", acme.upper(),
                      acme.replace("-", ""), "{" + acme + "}"),
        "user_id": ("not-a-uuid", "00000000-0000-0000-0000-000000000000"),
        "project_id": ("not-a-uuid", "00000000-0000-0000-0000-000000000000"),
        "key_id": ("x" * 5000, "%C3%A9", "%E2%80%AE", "%2E%2E", "%FF"),
        "alias": ("x" * 5000, "a%2Fb", "%E2%80%AE", "%FF", "%2E%2E"),
        "name": ("x" * 5000, "%C3%A9", "%E2%80%AE", "%FF"),
        "period": ("9999-12", "0000-01", "10000-01", "2026-1", "-1-01", "2026-13"),
    }  # fmt: skip
    app = world.client.app
    assert isinstance(app, Litestar)
    values, walk = path_values(world), Walk(world)
    for route in routes(world, values):
        for name in route.query:
            for value in queries:
                walk.check(Route(route.method, f"{route.url}?{name}={value}"))
    for template in (r for r in app.routes if isinstance(r, HTTPRoute)):
        for parameter in set(paths) & set(template.path_parameters):
            for value in paths[parameter]:
                url = _filled(template.path_format, values | {parameter: value})
                for method in set(template.methods) - {"HEAD", "OPTIONS"}:
                    walk.check(Route(method, url), json={})
    assert not walk.wrong, walk.wrong


def test_every_body_of_another_media_type_than_json_is_refused_as_415(world: World) -> None:
    """Each body route read any body as JSON whatever its ``Content-Type`` said: JSON sent as
    ``text/plain`` or XML was stored, a form (``curl -d`` without ``-H``) was "not valid JSON".
    JSON (``application/json``, any ``+json`` type, or no type given) is taken."""
    found, bodies = routes(world, path_values(world)), valid_bodies(world)
    walk = Walk(world)
    for route in (r for r in found if r.body is not None):
        body = json.dumps(bodies[route.body.__name__]).encode()
        for media_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml",
                           "multipart/form-data; boundary=x", "application/jsonx"):  # fmt: skip
            refused = world.client.request(
                route.method, route.url, content=body,
                headers=world.admin.headers | {"content-type": media_type},
            )  # fmt: skip
            if refused.status_code != 415:
                walk.wrong.append(f"{route.method} {route.url} {media_type}: {refused.status_code}")
                continue
            problem = problem_of(refused, 415)
            assert problem["code"] == "unsupported_media_type"
            assert media_type.split(";")[0] in problem["detail"], problem
            assert "application/json" in problem["detail"], problem
        for media_type in ("application/json; charset=utf-8", "APPLICATION/JSON",
                           "application/merge-patch+json"):  # fmt: skip
            if walk.check(route, content=b"[]", headers={"content-type": media_type}) != 400:
                walk.wrong.append(f"{route.method} {route.url} {media_type} not read as JSON")
    assert not walk.wrong, walk.wrong


def test_every_body_giving_a_field_twice_is_refused_naming_it(world: World) -> None:
    """``{"priority": 1, "priority": 1000}`` was read as its last value, silently: a proxy or
    log reading the first saw another request than the one served. Now a 400 naming the field,
    at any depth, and nothing changed."""
    found, bodies = routes(world, path_values(world)), valid_bodies(world)
    walk = Walk(world)
    for route in (r for r in found if r.body is not None):
        body = json.dumps(bodies[route.body.__name__])
        field, value = next(iter(bodies[route.body.__name__].items()))
        twice = body[:-1] + f", {json.dumps(field)}: {json.dumps(value)}}}"
        nested = json.dumps({"outer": [{"a": 1}]}).replace('{"a": 1}', '{"a": 1, "a": 2}')
        for given, named in ((twice, field), (body[:-1] + f', "extra": {nested}}}', "a")):
            status = walk.check(route, content=given.encode(), headers={"content-type": JSON})
            if status != 400:
                walk.wrong.append(f"{route.method} {route.url} {given[:60]}: {status}")
                continue
            refused = world.client.request(
                route.method, route.url, content=given.encode(),
                headers=world.admin.headers | {"content-type": JSON},
            )  # fmt: skip
            errors = problem_of(refused, 400)["errors"]
            expected = {"field": named, "message": "given 2 times; give it once", "source": "body"}
            if errors != [expected]:
                walk.wrong.append(f"{route.method} {route.url} {given[:60]}: {errors}")
    assert not walk.wrong, walk.wrong
